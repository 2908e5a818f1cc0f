"""The code stays ruff clean (ruff is part of the test extra)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("ruff") is None, reason="ruff not installed (pip install -e '.[test]')")
def test_ruff_clean():
    targets = [str(ROOT / d) for d in ("uadnet", "tests", "benchmarks") if (ROOT / d).is_dir()]
    res = subprocess.run(["ruff", "check", "--line-length", "120", *targets], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
