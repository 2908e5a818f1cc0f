"""Shared by the console scripts: ``--version``, one-line errors and one-line interrupts."""

from __future__ import annotations

import argparse
import errno
import os
import sys
import traceback

from uadnet import __version__

INTERRUPTED_EXIT_CODE = 130  # what a shell reports for a command ended by Ctrl-C (128 + SIGINT)


def add_version_argument(parser: argparse.ArgumentParser) -> None:
    """``--version``: print ``<prog> <installed uadnet version>`` and exit (every console script has it)."""
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}",
                        help="print the installed uadnet version and exit")


def report_error(prog: str, error: BaseException) -> int:
    """Print ``prog: error: …`` (with the traceback when ``UADNET_DEBUG`` is set); return the exit code 1."""
    debug = bool(os.environ.get("UADNET_DEBUG"))
    if debug:
        traceback.print_exception(error)
    hint = ""
    if isinstance(error, PermissionError):
        hint = (" — uadnet cannot write or read there: choose a folder you may write to (-o, or the UADNET_RAW / "
                "UADNET_PREPROCESSED / UADNET_RESULTS variables) or fix its permissions")
    elif isinstance(error, OSError) and error.errno == errno.ENOSPC:
        hint = " — the disk is full: free space, then rerun with --c / --continue_prediction (finished work is kept)"
    print(f"{prog}: error: {error}{hint}" + ("" if debug else " (set UADNET_DEBUG=1 to see the traceback)"),
          file=sys.stderr)
    return 1


def report_interrupt(prog: str, hint: str = "") -> int:
    """Print ``prog: interrupted (Ctrl-C)[; hint]`` (with the traceback when ``UADNET_DEBUG`` is set); return 130."""
    if os.environ.get("UADNET_DEBUG"):
        traceback.print_exc()
    print(f"\n{prog}: interrupted (Ctrl-C)" + (f"; {hint}" if hint else ""), file=sys.stderr)
    return INTERRUPTED_EXIT_CODE
