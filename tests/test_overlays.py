"""``uadnet_plot_overlays``: slice picking, per-case PNGs, report.html, and clear errors for mismatched folders."""

from __future__ import annotations

import json
import re
from pathlib import Path
from urllib.parse import unquote

import matplotlib.colors as mcolors
import numpy as np
import pytest
import skimage.io

from tests.synthetic import write_sitk
from uadnet.cli.plot_overlays import main
from uadnet.visualization.figures import plt
from uadnet.visualization.overlays import find_cases, load_case, pick_slices, render_case
from uadnet.visualization.report_page import report_html

SHAPE, SPACING = (8, 20, 24), (4.0, 1.0, 0.5)  # (z, y, x), mm
HOT = (2, 5, 6)  # slices of the 3D case holding the anomaly (largest map sums)
CASE_2D = "img&1"  # '&' checks HTML escaping and URL quoting


def _volume_case(folder: dict[str, Path], case: str, level: float, rng: np.random.Generator) -> None:
    image = rng.normal(100, 10, SHAPE).astype(np.float32)
    amap = rng.uniform(0, 0.05, SHAPE).astype(np.float32)
    label = np.zeros(SHAPE, np.uint8)
    for k, z in enumerate(HOT):
        amap[z, 5:12, 6:16] += level * (k + 1)
        label[z, 6:12, 7:15] = 1
    write_sitk(image, folder["in"] / f"{case}_0000.nii.gz", SPACING)
    write_sitk(2 * image, folder["in"] / f"{case}_0001.nii.gz", SPACING)
    write_sitk(amap, folder["pred"] / f"{case}.nii.gz", SPACING)
    write_sitk((amap >= 0.5).astype(np.uint8), folder["pred"] / f"{case}_mask.nii.gz", SPACING)
    write_sitk(np.full(SHAPE, 100, np.float32), folder["pred"] / f"{case}_restoration_0000.nii.gz", SPACING)
    write_sitk(label, folder["labels"] / f"{case}.nii.gz", SPACING)


def make_folders(tmp_path: Path) -> dict[str, Path]:
    """Two 3D cases (anisotropic, two channels) and one RGB PNG case with a TIF map, as uadnet_predict writes."""
    f = {k: tmp_path / k for k in ("in", "pred", "labels", "png")}
    for k in ("in", "pred", "labels"):
        f[k].mkdir()
    rng = np.random.default_rng(0)
    _volume_case(f, "brain", 1.0, rng)
    _volume_case(f, "healthy", 0.0, rng)
    rgb = rng.integers(0, 255, (20, 24, 3), dtype=np.uint8)
    skimage.io.imsave(str(f["in"] / f"{CASE_2D}_0000.png"), rgb, check_contrast=False)
    amap2d = np.zeros((20, 24), np.float32)
    amap2d[4:9, 10:20] = 0.8
    skimage.io.imsave(str(f["pred"] / f"{CASE_2D}.tif"), amap2d, check_contrast=False)
    skimage.io.imsave(str(f["pred"] / f"{CASE_2D}_mask.png"), (amap2d > 0.5).astype(np.uint8) * 255,
                      check_contrast=False)
    skimage.io.imsave(str(f["labels"] / f"{CASE_2D}.png"), (amap2d > 0.5).astype(np.uint8), check_contrast=False)
    (f["pred"] / "scores.csv").write_text(f"case,score,flagged\nhealthy,0.1,0\nbrain,0.9,1\n{CASE_2D},0.5,1\n")
    (f["pred"] / "prediction.json").write_text(json.dumps({"voxel_threshold": 0.5}))
    (f["pred"] / "per_case.csv").write_text("case,anomalous,score,ap,dice_at_threshold,best_dice\n"
                                            "brain,1,0.9,0.75,0.6,0.8\nhealthy,0,0.1,,,\n")
    (f["pred"] / "summary.json").write_text(json.dumps({
        "num_cases": 3, "pooled": {"ap": 0.4321, "auroc": 0.9, "best_dice": None},
        "per_case_mean": {"ap": {"mean": 0.75, "ci_low": 0.7, "ci_high": 0.8, "n": 1}},
        "notes": ["<script>"], "cases": [{"case": "brain"}]}))
    return f


@pytest.fixture
def folders(tmp_path: Path) -> dict[str, Path]:
    return make_folders(tmp_path)


def test_pick_slices_takes_the_largest_map_sums():
    amap = np.zeros((10, 4, 4), np.float32)
    amap[[7, 1, 4, 8], 0, 0] = [5.0, 4.0, 3.0, 1.0]
    assert pick_slices(amap, 3) == [1, 4, 7]  # distinct, ascending
    assert pick_slices(amap, 1) == [7]
    assert pick_slices(amap, 20) == list(range(10))
    assert pick_slices(np.zeros((6, 2, 2)), 2) == [0, 1]  # ties: lowest index
    assert pick_slices(np.ones((1, 3, 3)), 3) == [0]  # 2D: the one slice
    with pytest.raises(ValueError):
        pick_slices(amap, 0)


def test_pngs_and_report(folders, capsys):
    f = folders
    rc = main(["-i", str(f["in"]), "-p", str(f["pred"]), "-g", str(f["labels"]), "-o", str(f["png"]),
               "--num_slices", "2", "--summary", str(f["pred"] / "summary.json"),
               "--per_case", str(f["pred"] / "per_case.csv"), "--disable_progress_bar"])
    assert rc == 0, capsys.readouterr().err
    assert sorted(p.name for p in f["png"].iterdir()) == sorted(["brain.png", "healthy.png", f"{CASE_2D}.png",
                                                                "report.html"])
    assert all((f["png"] / f"{c}.png").stat().st_size > 5000 for c in ("brain", "healthy", CASE_2D))
    page = (f["png"] / "report.html").read_text(encoding="utf-8")
    # one row per case, by score descending; each links an existing PNG by a relative, URL-quoted path
    rows = re.findall(r"<td class='case'>([^<]*)</td>", page)
    assert rows == ["brain", "img&amp;1", "healthy"]
    links = re.findall(r"(?:href|src)='([^']*)'", page)
    assert set(links) == {"brain.png", "healthy.png", "img%261.png"}
    assert all((f["png"] / unquote(lnk)).is_file() for lnk in links)
    # summary header: pooled numbers, nested per-case means, escaped notes; per-case metrics where given
    assert "0.4321" in page and "ci_low" in page and "&lt;script&gt;" in page and "<script>" not in page
    assert "Dice@thr" in page and "0.75" in page and "AUROC</th><th>" not in page
    assert "wrote" in capsys.readouterr().out


def test_panels_aspect_and_contours(folders):
    f = folders
    (files,) = [c for c in find_cases(f["in"], f["pred"], f["labels"]) if c.case == "brain"]
    data = load_case(files, voxel_threshold=0.5)
    assert data.image.shape == SHAPE and data.spacing == SPACING
    fig = render_case(data, num_slices=3, voxel_threshold=0.5)
    try:
        panels = [ax for ax in fig.axes if ax.get_title()]
        assert [ax.get_ylabel() for ax in panels[::4]] == [f"z = {z}" for z in HOT]
        assert len(panels) == 3 * 4  # image, restoration, map, contours per row (+ 3 colorbars)
        assert all(ax.get_aspect() == pytest.approx(SPACING[1] / SPACING[2]) for ax in panels)
        contours = panels[3]
        colours = {mcolors.to_hex(line.get_color()) for line in contours.get_lines()}
        assert colours == {mcolors.to_hex("cyan"), mcolors.to_hex("lime")}
        assert "brain" in fig._suptitle.get_text()
    finally:
        plt.close(fig)


def test_report_sorts_unscored_cases_last():
    page = report_html([{"case": "b", "png": "b.png"}, {"case": "a", "png": "a.png", "score": -1.0},
                        {"case": "c", "png": "c.png", "score": 2.0}], "t")
    assert re.findall(r"<td class='case'>([^<]*)</td>", page) == ["c", "a", "b"]


def test_evaluate_outputs_in_the_prediction_folder_are_found(folders, capsys):
    """README step 6 (uadnet_evaluate -p OUT, then uadnet_plot_overlays -p OUT without --summary/--per_case) draws
    the report with the metrics: summary.json and per_case.csv are taken from OUT, saying so."""
    f = folders
    assert main(["-i", str(f["in"]), "-p", str(f["pred"]), "-o", str(f["png"]), "--disable_progress_bar"]) == 0
    out = capsys.readouterr().out
    assert str(f["pred"] / "summary.json") in out and str(f["pred"] / "per_case.csv") in out
    page = (f["png"] / "report.html").read_text(encoding="utf-8")
    assert "0.4321" in page and "Dice@thr" in page


@pytest.mark.parametrize("problem, expected", [
    ("no_input", "have no input image in"),
    ("no_maps", "holds no anomaly maps"),
    ("shape", "differs from the input image"),
    ("output_is_pred", "is the prediction folder"),
])
def test_clear_errors(folders, capsys, problem, expected):
    f = folders
    if problem == "no_input":
        (f["in"] / "brain_0000.nii.gz").unlink()
    elif problem == "no_maps":
        for p in f["pred"].glob("*"):
            if p.name.startswith(("brain", "healthy", "img")) and "_mask" not in p.name:
                p.unlink()
    elif problem == "shape":
        write_sitk(np.zeros((8, 20, 20), np.float32), f["pred"] / "brain_restoration_0000.nii.gz", SPACING)
    out = f["pred"] if problem == "output_is_pred" else f["png"]
    assert main(["-i", str(f["in"]), "-p", str(f["pred"]), "-o", str(out), "--disable_progress_bar"]) == 1
    err = capsys.readouterr().err
    assert expected in err
    assert str(f["in"] if problem == "no_input" else f["pred"]) in err
