"""The method interface from outside: the plugin example of documentation/architecture.md, registered through an
entry point (a dist-info folder on sys.path, as an installed package would have), trains and predicts through the
ordinary commands; its plans section is typed and checked."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from tests.synthetic import make_dataset
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.cli.predict import main as predict_main
from uadnet.cli.train import main as train_main
from uadnet.methods import ENTRY_POINT_GROUP, available_methods, build_method
from uadnet.plans import PLANS_FILE, Plans, PlansError

DOC = Path(__file__).resolve().parents[1] / "documentation" / "architecture.md"
QUIET = ["--disable_progress_bar", "--precision", "fp32"]


@pytest.fixture
def plugin(tmp_path, monkeypatch):
    """The documented plugin module, installed as the distribution ``uadnet-single-severity``."""
    text = DOC.read_text(encoding="utf-8")
    code = re.search(r"```python\n# uadnet_single_severity.py\n(.*?)```", text, re.DOTALL).group(1)
    entry = re.search(r'\[project.entry-points."uadnet.methods"\]\n(.*?)\n```', text, re.DOTALL).group(1)
    site = tmp_path / "site"
    (site / "uadnet_single_severity-0.1.dist-info").mkdir(parents=True)
    (site / "uadnet_single_severity.py").write_text(code, encoding="utf-8")
    info = site / "uadnet_single_severity-0.1.dist-info"
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: uadnet-single-severity\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[{ENTRY_POINT_GROUP}]\n{entry.replace(chr(34), '')}\n")
    monkeypatch.syspath_prepend(str(site))
    return "single_severity"


def test_a_plugin_method_trains_and_predicts_through_the_ordinary_commands(uadnet_env, plugin, tmp_path):
    assert plugin in available_methods()
    raw_root, pre_root, _ = uadnet_env
    raw = make_dataset(raw_root, dataset_id=7, kind="3d_iso", n_cases=4, n_test=2, seed=7)
    assert plan_main(["-d", "7", "-c", "2d", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
    plans_file = pre_root / raw.name / PLANS_FILE
    data = json.loads(plans_file.read_text())
    data["methods"]["plugins"] = {plugin: {"severity": 0.3}}
    plans_file.write_text(json.dumps(data))
    method = build_method(plugin, Plans.load(plans_file))
    assert method.section.severity == 0.3 and method.section.corruption == "dag"  # the rest: the class defaults
    assert train_main(["7", "0", "-m", plugin, "--iterations", "4", "--validation_every", "2", "-np", "0",
                       *QUIET]) == 0
    out = tmp_path / "out"
    assert predict_main(["-i", str(raw / "imagesTs"), "-o", str(out), "-d", "7", "-m", plugin, *QUIET]) == 0
    for case in ("test_000", "test_001"):
        amap = sitk.GetArrayFromImage(sitk.ReadImage(str(out / f"{case}.nii.gz")))
        assert np.isfinite(amap).all() and amap.max() > 0
    prediction = json.loads((out / "prediction.json").read_text())
    assert prediction["method"] == plugin

    data["methods"]["plugins"] = {plugin: {"severty": 0.3}}  # a typo is named, as in the built-in sections
    with pytest.raises(PlansError, match=r"unknown key\(s\) \['severty'\] in 'methods.plugins.single_severity'"):
        build_method(plugin, Plans.from_dict(data))
