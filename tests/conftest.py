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


@pytest.fixture
def results(env, tmp_path, monkeypatch):
    """A fresh results folder per test, with the raw and preprocessed folders of the test module's ``env``
    fixture (a module-scoped ``{variable: folder}`` dict): trained data is shared, results are not."""
    for var in ("UADNET_RAW", "UADNET_PREPROCESSED"):
        monkeypatch.setenv(var, str(env[var]))
    monkeypatch.setenv("UADNET_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


@pytest.fixture
def paths_env(env, monkeypatch):
    """All three uadnet folders of the test module's ``env`` fixture (a module-scoped ``{variable: folder}`` dict),
    shared by the module's tests; returns ``env``."""
    for var, f in env.items():
        monkeypatch.setenv(var, str(f))
    return env
