from __future__ import annotations

import pytest

from uadnet import paths


def test_default_folders_when_unset(tmp_path, monkeypatch):
    for var in paths.ENV_VARIABLES.values():
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert paths.raw_folder(create=True) == tmp_path / "uadnet_data" / "raw"
    assert paths.results_folder() == tmp_path / "uadnet_data" / "results"
    assert (tmp_path / "uadnet_data" / "raw").is_dir()


def test_unusable_path_names_the_variable(tmp_path, monkeypatch):
    f = tmp_path / "a_file"
    f.write_text("x")
    monkeypatch.setenv("UADNET_PREPROCESSED", str(f))
    with pytest.raises(paths.PathError, match="UADNET_PREPROCESSED"):
        paths.preprocessed_folder()
    monkeypatch.setenv("UADNET_RESULTS", str(f / "sub"))
    with pytest.raises(paths.PathError, match="UADNET_RESULTS"):
        paths.results_folder(create=True)


def test_dataset_resolution(uadnet_env):
    raw, pre, _ = uadnet_env
    (raw / "Dataset001_Brain").mkdir()
    (pre / "Dataset001_Brain").mkdir()
    (pre / "Dataset002_Knee").mkdir()
    assert paths.resolve_dataset_name(1) == "Dataset001_Brain"
    assert paths.resolve_dataset_name("001") == "Dataset001_Brain"
    assert paths.resolve_dataset_name("2") == "Dataset002_Knee"
    assert paths.resolve_dataset_name("Dataset005_Other") == "Dataset005_Other"
    with pytest.raises(paths.PathError, match="no folder Dataset003"):
        paths.resolve_dataset_name(3)
    (raw / "Dataset002_Other").mkdir()
    with pytest.raises(paths.PathError, match="ambiguous"):
        paths.resolve_dataset_name(2)
    with pytest.raises(paths.PathError, match="neither"):
        paths.resolve_dataset_name("Brain")
    assert paths.make_dataset_name(7, "X") == "Dataset007_X"
