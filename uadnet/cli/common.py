"""Shared by the console scripts."""

from __future__ import annotations

import os
import sys
import traceback


def report_error(prog: str, error: BaseException) -> int:
    """Print ``prog: error: …`` (with the traceback when ``UADNET_DEBUG`` is set); return the exit code 1."""
    debug = bool(os.environ.get("UADNET_DEBUG"))
    if debug:
        traceback.print_exception(error)
    print(f"{prog}: error: {error}" + ("" if debug else " (set UADNET_DEBUG=1 to see the traceback)"),
          file=sys.stderr)
    return 1
