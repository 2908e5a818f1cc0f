"""Shared by the console scripts."""

from __future__ import annotations

import errno
import os
import sys
import traceback


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
