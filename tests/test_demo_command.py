"""uadnet_demo, the README's main job, at a tiny size: every stage runs, and a re-run resumes instead of redoing."""

from __future__ import annotations

import json

import pytest

pytest.importorskip("nilearn")

from uadnet.cli.demo import main as demo_main


def test_demo_runs_every_stage_and_resumes(uadnet_env, capsys):
    _, _, results = uadnet_env
    args = ["--n_train", "5", "--n_test", "2", "--resolution", "4", "--iterations", "6", "-np", "1",
            "--disable_progress_bar"]
    assert demo_main(args) == 0
    out = results / "Dataset990_DemoBrain" / "demo" / "cold_ensemble"
    summary = json.loads((out / "predictions" / "summary.json").read_text(encoding="utf-8"))
    assert summary["pooled"]["num_positive"] > 0 and 0 <= summary["pooled"]["ap"] <= 1
    assert (out / "overlays" / "report.html").is_file()
    assert len(list((out / "overlays").glob("*.png"))) == 2
    fold = results / "Dataset990_DemoBrain" / "cold_ensemble__uadnet_plans__2d" / "fold_0"
    final = (fold / "checkpoint_final.pth").stat().st_mtime_ns
    maps = (out / "predictions" / "test_000.nii.gz").stat().st_mtime_ns
    capsys.readouterr()
    assert demo_main(args) == 0  # everything is reused
    assert (fold / "checkpoint_final.pth").stat().st_mtime_ns == final
    assert (out / "predictions" / "test_000.nii.gz").stat().st_mtime_ns == maps
    assert "already predicted" in capsys.readouterr().out
