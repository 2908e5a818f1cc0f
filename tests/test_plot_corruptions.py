"""``uadnet_plot_corruptions`` draws one gallery per family from preprocessed data, 2D and 3D."""

from __future__ import annotations

from tests.synthetic import make_dataset
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.cli.plot_corruptions import main as plot_main
from uadnet.corruption.registry import CORRUPTIONS, NOT_DRAWN


def test_galleries_for_every_family(uadnet_env, capsys):
    raw, pre, _ = uadnet_env
    make_dataset(raw, dataset_id=7, kind="2ch", n_cases=3)
    assert plan_main(["-d", "7", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
    assert plot_main(["-d", "7", "-n", "2"]) == 0
    assert plot_main(["-d", "7", "-c", "3d", "-n", "2", "-f", "dag", "--channel", "1"]) == 0
    gallery = pre / "Dataset007_2ch" / "corruption_gallery"
    expected = {f"{f}_2d.png" for f in CORRUPTIONS if f not in NOT_DRAWN} | {"dag_3d.png"}
    assert {p.name for p in gallery.iterdir()} == expected
    assert all(p.stat().st_size > 5000 for p in gallery.iterdir())
    assert plot_main(["-d", "7", "-f", "nonsense"]) == 1
    assert "unknown corruption 'nonsense'" in capsys.readouterr().err
    assert plot_main(["-d", "8"]) == 1
