"""The dataset integrity check: clean datasets pass, a dataset broken in every way reports every problem."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk
import skimage.io

from tests.synthetic import make_dataset, write_sitk
from uadnet.dataset.dataset_json import generate_dataset_json
from uadnet.dataset.integrity import (
    DatasetIntegrityError,
    IntegrityProblem,
    check_dataset_integrity,
    verify_dataset_integrity,
)

SHAPE, SPACING, ORIGIN = (24, 32, 28), (1.0, 1.0, 1.0), (10.0, -5.0, 3.0)
DIRECTION = (0.0, 1.0, 0.0, -1.0, 0.0, 0.0, 0.0, 0.0, 1.0)  # of the synthetic "2ch" kind


@pytest.mark.parametrize("kind", ["3d_iso", "3d_aniso", "2ch", "2d_png", "rgb_png"])
def test_clean_dataset_passes(tmp_path: Path, kind: str) -> None:
    folder = make_dataset(tmp_path, 1, kind, n_cases=3, n_test=2)
    assert verify_dataset_integrity(folder, disable_progress_bar=True) == []
    check_dataset_integrity(folder, disable_progress_bar=True)


def test_nnunet_folder_passes(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, 2, "3d_iso", n_cases=3)
    (folder / "labelsTr").mkdir()
    for i in range(3):  # nnU-Net segmentation labels (multi-class): ignored by uadnet
        write_sitk(np.full(SHAPE, 2, np.uint8), folder / "labelsTr" / f"case_{i:03d}.nii.gz", SPACING, ORIGIN)
    (folder / "labelsTr" / "stray.txt").write_text("ignored")
    generate_dataset_json(folder, {0: "MRI"}, ".nii.gz", 3, labels={"background": 0, "tumor": 1, "edema": 2})
    assert verify_dataset_integrity(folder, disable_progress_bar=True) == []


def _write(folder: Path, rel: str, array: np.ndarray, spacing=SPACING, origin=ORIGIN, direction=DIRECTION) -> None:
    write_sitk(array, folder / rel, spacing, origin=origin, direction=direction)


def _break_dataset(folder: Path) -> list[tuple[str, str]]:
    """Break a "2ch" dataset (cases 000..011, tests 000..002) in every way; return (file, keyword) expected."""
    rng = np.random.default_rng(1)
    img = rng.uniform(1, 100, SHAPE).astype(np.float32)
    tr = "imagesTr"
    (folder / tr / "case_000_0001.nii.gz").unlink()  # missing channel
    # NaN: the NIfTI library turns NaN/Inf into 0 when reading, so it is tested with NRRD (test_nan_and_inf)
    _write(folder, f"{tr}/case_001_0002.nii.gz", img)  # channel index beyond channel_names
    _write(folder, f"{tr}/case_002_0000.nii.gz", np.full(SHAPE, 7, np.float32))  # constant
    _write(folder, f"{tr}/case_003_0000.nii.gz", np.zeros(SHAPE, np.float32))  # all zero
    for c in range(2):  # a 2D case in a 3D dataset (consistent within the case)
        sitk.WriteImage(sitk.GetImageFromArray(img[0]), str(folder / tr / f"case_004_{c:04d}.nii.gz"))
    _write(folder, f"{tr}/case_005_0001.nii.gz", img, spacing=(1.0, 1.0, 1.5))  # spacing differs from channel 0
    _write(folder, f"{tr}/case_006_0001.nii.gz", img, origin=(0.0, 0.0, 0.0))  # origin differs from channel 0
    (folder / "masksTr").mkdir()
    _write(folder, "masksTr/case_007.nii.gz", np.ones((24, 32, 20), np.uint8))  # mask on another grid
    mask = np.zeros(SHAPE, np.uint8)
    mask[5:10] = 2
    mask[10:15] = 1
    _write(folder, "masksTr/case_008.nii.gz", mask)  # non-binary mask
    _write(folder, "masksTr/case_010.nii.gz", np.zeros(SHAPE, np.uint8))  # empty mask
    _write(folder, "masksTr/case_011.nii.gz", (img > 50).astype(np.uint8))  # a good mask
    _write(folder, "masksTr/ghost.nii.gz", mask.clip(0, 1))  # mask without an image
    (folder / tr / "case_009_0000.nii.gz").write_bytes(b"this is not a NIfTI file")  # unreadable
    (folder / tr / "case012.nii.gz").write_bytes((folder / tr / "case_011_0000.nii.gz").read_bytes())  # misnamed
    (folder / tr / "notes.txt").write_text("stray")  # wrong ending
    _write(folder, "labelsTs/test_000.nii.gz", np.zeros((24, 16, 28), np.uint8))  # label on another grid
    (folder / "labelsTs" / "test_001.nii.gz").unlink()  # test case without a label
    _write(folder, "labelsTs/test_002.nii.gz", mask.astype(np.float32) * 0.5)  # non-binary label
    _write(folder, "labelsTs/test_099.nii.gz", mask.clip(0, 1))  # label without an image
    d = json.loads((folder / "dataset.json").read_text())
    d["numTraining"] = 99
    (folder / "dataset.json").write_text(json.dumps(d))
    return [
        ("imagesTr/case_000_0001.nii.gz", "missing"), ("imagesTr/case_000_0001.nii.gz", "T2"),
        ("imagesTr/case_001_0002.nii.gz", "channel index"),
        ("imagesTr/case_002_0000.nii.gz", "constant"), ("imagesTr/case_003_0000.nii.gz", "all zero"),
        ("imagesTr/case_004_0000.nii.gz", "2D"), ("imagesTr/case_005_0001.nii.gz", "spacing"),
        ("imagesTr/case_006_0001.nii.gz", "origin"), ("masksTr/case_007.nii.gz", "size"),
        ("masksTr/case_008.nii.gz", "binary"), ("masksTr/case_010.nii.gz", "empty"),
        ("masksTr/ghost.nii.gz", "no image"), ("imagesTr/case_009_0000.nii.gz", "cannot be read"),
        ("imagesTr/case012.nii.gz", "does not follow"), ("imagesTr/notes.txt", "file_ending"),
        ("labelsTs/test_000.nii.gz", "size"), ("labelsTs/test_001.nii.gz", "missing"),
        ("labelsTs/test_002.nii.gz", "binary"), ("labelsTs/test_099.nii.gz", "no image"),
        ("dataset.json", "numTraining"),
    ]


def test_broken_dataset_reports_every_problem(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, 3, "2ch", n_cases=12, n_test=3)
    expected = _break_dataset(folder)
    problems = verify_dataset_integrity(folder, num_processes=2, disable_progress_bar=True)
    assert all(isinstance(p, IntegrityProblem) and p.fix for p in problems)
    for file, keyword in expected:
        assert any(p.file == file and keyword in p.problem for p in problems), (file, keyword, problems)
    flagged = {p.file for p in problems}
    assert not flagged & {"imagesTr/case_011_0000.nii.gz", "imagesTr/case_011_0001.nii.gz", "masksTr/case_011.nii.gz",
                          "imagesTr/case_010_0000.nii.gz", "imagesTr/case_004_0001.nii.gz"}, problems
    with pytest.raises(DatasetIntegrityError) as info:
        check_dataset_integrity(folder, disable_progress_bar=True)
    assert info.value.problems == problems
    message = str(info.value)
    assert f"{len(problems)} integrity problem" in message
    for p in problems:
        assert str(p) in message
    assert str(problems[0]).startswith(f"{problems[0].file}: ") and ". Fix: " in str(problems[0])


def test_nan_and_inf(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset006_nrrd"
    (folder / "imagesTr").mkdir(parents=True)
    img = np.random.default_rng(0).uniform(1, 100, (4, 6, 5)).astype(np.float32)
    for i, bad in enumerate([None, np.nan, np.inf, -np.inf]):
        arr = img.copy()
        if bad is not None:
            arr[1, 2, :2] = bad
        write_sitk(arr, folder / "imagesTr" / f"case_{i:03d}_0000.nrrd", SPACING)
    generate_dataset_json(folder, {0: "CT"}, ".nrrd", 4)
    problems = verify_dataset_integrity(folder, disable_progress_bar=True)
    assert [(p.file, p.problem) for p in problems] == [
        ("imagesTr/case_001_0000.nrrd", "contains 2 NaN and 0 Inf values"),
        ("imagesTr/case_002_0000.nrrd", "contains 0 NaN and 2 Inf values"),
        ("imagesTr/case_003_0000.nrrd", "contains 0 NaN and 2 Inf values")]


def test_png_masks_and_channels(tmp_path: Path) -> None:
    folder = make_dataset(tmp_path, 4, "rgb_png", n_cases=3)
    (folder / "masksTr").mkdir()
    mask = np.zeros((48, 40), np.uint8)
    mask[10:30, 10:30] = 255
    skimage.io.imsave(str(folder / "masksTr" / "case_000.png"), mask, check_contrast=False)  # 0/255: fine
    mask[0, 0] = 128
    skimage.io.imsave(str(folder / "masksTr" / "case_001.png"), mask, check_contrast=False)  # 0/128/255: not binary
    grey = skimage.io.imread(str(folder / "imagesTr" / "case_002_0000.png"))[..., 0]
    skimage.io.imsave(str(folder / "imagesTr" / "case_002_0000.png"), grey, check_contrast=False)  # 1 of 3 channels
    problems = verify_dataset_integrity(folder, disable_progress_bar=True)
    assert {(p.file, p.problem.split(" ")[0]) for p in problems} == {
        ("masksTr/case_001.png", "is"), ("imagesTr/case_002_0001.png", "missing"),
        ("imagesTr/case_002_0002.png", "missing")}, problems
    assert "channel 'G'" in next(p.problem for p in problems if p.file.endswith("_0001.png"))


def test_dataset_json_and_folder_problems(tmp_path: Path) -> None:
    folder = tmp_path / "Dataset005_x"
    folder.mkdir()
    assert [p.file for p in verify_dataset_integrity(folder)] == ["dataset.json"]
    generate_dataset_json(folder, {0: "MRI"}, ".xyz", 0)
    problems = verify_dataset_integrity(folder, disable_progress_bar=True)
    assert [(p.file, p.problem.split(" ")[0]) for p in problems] == [("dataset.json", "no"), ("imagesTr", "folder")]
