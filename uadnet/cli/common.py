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


def hidden_alias(parser: argparse.ArgumentParser, action: argparse.Action, *option_strings: str) -> None:
    """Accept ``option_strings`` as another spelling of ``action`` (same destination, type, nargs and choices),
    left out of ``--help``: old uadnet spellings and nnU-Net's single-dash ones (documentation/how_to_use.md,
    "Command-line conventions")."""
    kwargs: dict = {"dest": action.dest, "help": argparse.SUPPRESS, "default": argparse.SUPPRESS}
    if action.nargs == 0:  # store_true / store_false
        kwargs["action"] = "store_false" if action.const is False else "store_true"
    else:
        kwargs.update(type=action.type, nargs=action.nargs, choices=action.choices, metavar=action.metavar)
    parser.add_argument(*option_strings, **kwargs)


def require(parser: argparse.ArgumentParser, args: argparse.Namespace, dest: str, spelling: str) -> None:
    """argparse's "required" for an option that also has a hidden alias (argparse would ask for the visible
    spelling even when the alias was given)."""
    if getattr(args, dest, None) is None:
        parser.error(f"the following arguments are required: {spelling}")


def add_nnunet_hint(parser: argparse.ArgumentParser, option: str, hint: str, takes_value: bool = True) -> None:
    """Accept nnU-Net's ``option`` (hidden) where uadnet has no counterpart; :func:`nnunet_hints` names it."""
    if takes_value:
        parser.add_argument(option, dest=f"nnunet_{option.lstrip('-')}", default=None, help=argparse.SUPPRESS)
    else:
        parser.add_argument(option, dest=f"nnunet_{option.lstrip('-')}", action="store_const", const=True,
                            default=None, help=argparse.SUPPRESS)
    parser.set_defaults(**{f"_hint_{option.lstrip('-')}": hint})


def nnunet_hints(prog: str, args: argparse.Namespace) -> None:
    """One line on stderr per nnU-Net option given that uadnet accepts but ignores, saying why."""
    for name, value in vars(args).items():
        if name.startswith("nnunet_") and value is not None:
            option = "-" + name[len("nnunet_"):]
            print(f"{prog}: note: {option} (nnU-Net) is ignored: {getattr(args, '_hint_' + option[1:])}",
                  file=sys.stderr)
