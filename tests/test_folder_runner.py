"""The pipelined folder loop: same outputs as one case at a time, bounded memory, failures per case, interrupts."""

from __future__ import annotations

import threading
import weakref
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import write_sitk
from uadnet.imageio.simpleitk_reader_writer import SimpleITKIO
from uadnet.inference.folder_runner import FolderRun, run_folder


class CountingScorer:
    """A CaseScorer whose map is the image itself; counts the loaded images alive at once (memory bound) and can
    fail one case in a chosen stage."""

    reader = SimpleITKIO()
    file_ending = output_ending = ".nii.gz"
    voxel_threshold, case_threshold = 0.5, 0.5
    writes_restoration = False

    def __init__(self, fail: tuple[str, str] | None = None, interrupt_at: str | None = None) -> None:
        self.fail, self.interrupt_at = fail, interrupt_at
        self.alive = self.peak = 0
        self.lock = threading.Lock()

    def _gone(self) -> None:
        with self.lock:
            self.alive -= 1

    def read(self, case):
        if self.fail == (case.identifier, "read"):
            raise ValueError(f"{case.identifier}: unreadable")
        image, props = self.reader.read_images(case.images)
        with self.lock:
            self.alive += 1
            self.peak = max(self.peak, self.alive)
        weakref.finalize(image, self._gone)
        return image, props

    def score_case(self, image, properties):
        case = f"c{int(image.max())}"  # the case's maximum is its number
        if case == self.interrupt_at:
            raise KeyboardInterrupt
        if self.fail == (case, "score"):
            raise RuntimeError(f"scoring {case} failed")
        return {"map": image[0].astype(np.float32), "score": float(image.max()), "seconds": {}}

    def prediction_json(self):
        return {"voxel_threshold": self.voxel_threshold, "case_threshold": self.case_threshold}


def _folder(tmp_path: Path, n: int = 9) -> Path:
    inp = tmp_path / "in"
    inp.mkdir()
    for i in range(n):
        arr = np.zeros((3, 6, 7), np.float32)
        arr[1, 2:4, 2:5] = i  # the case's maximum is its number
        write_sitk(arr, inp / f"c{i}_0000.nii.gz", (2.0, 1.0, 1.0))
    return inp


@pytest.mark.parametrize("prefetch", [0, 1, 3])
def test_pipelined_outputs_equal_sequential_and_memory_is_bounded(tmp_path, prefetch):
    inp = _folder(tmp_path)
    scorer = CountingScorer()
    out = tmp_path / f"out{prefetch}"
    assert run_folder(scorer, FolderRun(inp, out, progress_bar=False, prefetch=prefetch)) == 0
    for i in range(9):
        m = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"c{i}.nii.gz")))
        assert m.max() == i and (out / "per_case" / f"c{i}.json").is_file()
    assert (out / "scores.csv").read_text().count("\n") == 10
    # loaded images alive at once: the one scored, `prefetch` loaded ahead, `prefetch` waiting to be written
    assert 1 <= scorer.peak <= 2 * prefetch + 1


@pytest.mark.parametrize("stage", ["read", "score"])
def test_a_failing_case_is_reported_and_the_others_are_written(tmp_path, capsys, stage):
    inp = _folder(tmp_path, 6)
    out = tmp_path / "out"
    assert run_folder(CountingScorer(fail=("c4", stage)), FolderRun(inp, out, progress_bar=False)) == 1
    assert "FAILED c4" in capsys.readouterr().out
    assert not (out / "per_case" / "c4.json").exists()
    assert all((out / "per_case" / f"c{i}.json").is_file() for i in (0, 1, 2, 3, 5))


def test_interrupt_stops_and_continue_finishes_the_rest(tmp_path):
    inp = _folder(tmp_path, 7)
    out = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        run_folder(CountingScorer(interrupt_at="c4"), FolderRun(inp, out, progress_bar=False))
    done = {p.stem for p in (out / "per_case").glob("*.json")}
    assert {"c0", "c1", "c2", "c3"} <= done and "c4" not in done  # finished before the interrupt: kept
    first = (out / "c0.nii.gz").stat().st_mtime_ns
    assert run_folder(CountingScorer(), FolderRun(inp, out, progress_bar=False, continue_prediction=True)) == 0
    assert {p.stem for p in (out / "per_case").glob("*.json")} == {f"c{i}" for i in range(7)}
    assert (out / "c0.nii.gz").stat().st_mtime_ns == first
