"""Atomic writes: nothing half-written on failure, normal permissions, only valid JSON."""

from __future__ import annotations

import math
import os
import stat

import numpy as np
import pytest

from uadnet.utilities.file_io import atomic_path, load_json, save_json, save_npy


def test_failed_write_leaves_the_old_file_and_no_temporaries(tmp_path):
    target = tmp_path / "plans.json"
    save_json({"a": 1}, target)
    with pytest.raises(RuntimeError), atomic_path(target, ".json") as tmp:
        tmp.write_text("{half")
        raise RuntimeError("crash while writing")
    assert load_json(target) == {"a": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["plans.json"]


def test_files_get_umask_permissions_and_numpy_values(tmp_path):
    mask = os.umask(0)
    os.umask(mask)
    save_json({"x": np.float32(1.5), "v": np.arange(3)}, tmp_path / "a.json")
    save_npy(np.ones(3), tmp_path / "a.npy")
    for name in ("a.json", "a.npy"):
        assert stat.S_IMODE(os.stat(tmp_path / name).st_mode) == 0o666 & ~mask
    assert load_json(tmp_path / "a.json") == {"x": 1.5, "v": [0, 1, 2]}


def test_nan_and_broken_json_are_clear_errors(tmp_path):
    with pytest.raises(ValueError):
        save_json({"x": math.nan}, tmp_path / "n.json")
    assert not (tmp_path / "n.json").exists()
    (tmp_path / "b.json").write_text("{not json")
    with pytest.raises(ValueError, match="b.json is not valid JSON"):
        load_json(tmp_path / "b.json")
