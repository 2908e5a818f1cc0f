from __future__ import annotations

import pytest


@pytest.fixture
def uadnet_env(tmp_path, monkeypatch):
    """Point the three uadnet folders into ``tmp_path``; return (raw, preprocessed, results)."""
    folders = [tmp_path / n for n in ("raw", "preprocessed", "results")]
    for var, f in zip(("UADNET_RAW", "UADNET_PREPROCESSED", "UADNET_RESULTS"), folders):
        f.mkdir()
        monkeypatch.setenv(var, str(f))
    return folders
