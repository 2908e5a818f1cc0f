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


@pytest.fixture(scope="session")
def tiny_trained_model(tmp_path_factory):
    """One tiny trained model shared by the tests that only read it (model zips, Python API): Dataset001_3d_iso
    (4 training and 2 test cases), planned for 2d and fold 0 trained for 3 iterations. Returns ``{"raw",
    "preprocessed", "results", "model_folder", "test_images"}``; the UADNET_* variables are set only while it is
    made (tests set their own)."""
    from tests.synthetic import make_dataset, uadnet_folders
    from uadnet.cli.plan_and_preprocess import main as plan_main
    from uadnet.cli.train import main as train_main

    with uadnet_folders(tmp_path_factory, "tiny_model") as folders:
        raw = make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=4, n_test=2, seed=1)
        assert plan_main(["-d", "1", "-c", "2d", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
        assert train_main(["1", "0", "--iterations", "3", "--validation_every", "3", "-np", "0",
                           "--disable_progress_bar", "--precision", "fp32"]) == 0
    results = folders["UADNET_RESULTS"]
    return {"raw": folders["UADNET_RAW"], "preprocessed": folders["UADNET_PREPROCESSED"], "results": results,
            "model_folder": results / raw.name / "cold_ensemble__uadnet_plans__2d", "test_images": raw / "imagesTs"}
