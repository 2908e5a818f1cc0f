"""The Python API: the examples of documentation/python_api.md run as written (paths replaced by a tiny trained
model and its test cases) and give exactly what uadnet_predict writes."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from uadnet.cli.export_model_to_zip import main as export_main
from uadnet.cli.predict import main as predict_main
from uadnet.inference import UadnetPredictor, properties_from_spacing

DOC = Path(__file__).resolve().parents[1] / "documentation" / "python_api.md"
MODEL, INPUT, OUTPUT = "/models/brain_t1.zip", "/data/new_scans", "/data/new_scans_uad"


def _read(path: Path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_the_documented_examples_run_and_match_uadnet_predict(tiny_trained_model, tmp_path, monkeypatch):
    for var in ("UADNET_RAW", "UADNET_PREPROCESSED", "UADNET_RESULTS"):
        monkeypatch.delenv(var, raising=False)
    model = tmp_path / "brain_t1.zip"
    assert export_main(["--model_folder", str(tiny_trained_model["model_folder"]), "-o", str(model)]) == 0
    inp, out, cli = tiny_trained_model["test_images"], tmp_path / "api_out", tmp_path / "cli_out"
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, flags=re.MULTILINE | re.DOTALL)
    assert len(blocks) == 2 and all(p in text for p in (MODEL, INPUT, OUTPUT))
    namespace: dict = {}
    for block in blocks:  # run in order, in one namespace, like a reader pasting them into one session
        code = block.replace(MODEL, str(model)).replace(OUTPUT, str(out)).replace(INPUT, str(inp))
        exec(compile(code, str(DOC), "exec"), namespace)  # noqa: S102 - the documentation's own example
    assert predict_main(["-i", str(inp), "-o", str(cli), "--model_folder", str(model), "--device", "cpu",
                         "--disable_progress_bar"]) == 0
    for name in ("test_000", "test_001"):  # predict_files writes what uadnet_predict writes
        for suffix in ("", "_mask"):
            np.testing.assert_array_equal(_read(out / f"{name}{suffix}.nii.gz"), _read(cli / f"{name}{suffix}.nii.gz"))
    assert (out / "scores.csv").read_bytes() == (cli / "scores.csv").read_bytes()
    result = namespace["result"]  # predict_array on the case read from its file equals the command's output
    np.testing.assert_array_equal(result.map, _read(cli / "test_000.nii.gz"))
    np.testing.assert_array_equal(result.mask, _read(cli / "test_000_mask.nii.gz"))
    np.testing.assert_array_equal(_read(out / "test_000_map_again.nii.gz"), result.map)
    score = float((cli / "scores.csv").read_text(encoding="utf-8").splitlines()[1].split(",")[1])
    assert result.score == pytest.approx(score, rel=1e-5)
    assert result.restoration is not None and result.restoration.shape == (1, *result.map.shape)
    assert result.flagged == (result.score >= result.case_threshold)


def test_predict_array_checks_its_inputs(tiny_trained_model):
    with UadnetPredictor.from_model_folder(tiny_trained_model["model_folder"], device="cpu") as predictor:
        assert (predictor.method, predictor.plans_name, predictor.configuration, predictor.folds) == (
            "cold_ensemble", "uadnet_plans", "2d", ["0"])
        image = np.ones((1, 6, 8, 8), np.float32)
        with pytest.raises(ValueError, match="either properties"):
            predictor.predict_array(image)
        with pytest.raises(ValueError, match=r"\(c, z, y, x\) with c = 1"):
            predictor.predict_array(image[0], spacing=(1, 1, 1))
        image[0, 0, 0, 0] = np.nan
        with pytest.raises(ValueError, match="NaN"):
            predictor.predict_array(image, spacing=(1, 1, 1))
        with pytest.raises(TypeError, match="cannot set"):
            predictor.predict_files(".", "out", folds=["0"])
    with pytest.raises(ValueError, match="three positive"):
        properties_from_spacing((1.0, 0.0, 1.0))


def test_a_postprocessing_file_of_an_older_form_names_the_file_and_the_refit(tiny_trained_model, tmp_path):
    """A fold whose postprocessing.json holds the residual normalisation in the bin-edge form of a development
    version is refused naming the file and the command that refits it (not a KeyError)."""
    import json
    import shutil

    folder = tmp_path / tiny_trained_model["model_folder"].name
    shutil.copytree(tiny_trained_model["model_folder"], folder)
    pp_file = folder / "fold_0" / "postprocessing.json"
    record = json.loads(pp_file.read_text(encoding="utf-8"))
    record["postprocessing"]["residual_normalisation"] = {"intensity_edges": [0.5], "gradient_edges": [0.1],
                                                          "table": [[1.0, 1.0], [1.0, 1.0]], "floor": 0.01,
                                                          "quantile": 0.95}
    pp_file.write_text(json.dumps(record), encoding="utf-8")
    with pytest.raises(ValueError, match=r"postprocessing\.json cannot be used .*intensity_edges.*--c --iterations 3"):
        UadnetPredictor.from_model_folder(folder, device="cpu")
