from __future__ import annotations

import json

import pytest

from uadnet.planning.splits import ensure_splits, make_splits


def test_splits_are_seeded_disjoint_and_cover_every_case():
    ids = [f"c{i}" for i in range(12)]
    a, b = make_splits(ids), make_splits(list(reversed(ids)))
    assert a == b and len(a) == 5
    assert sorted(c for s in a for c in s["val"]) == sorted(ids)
    for s in a:
        assert not set(s["train"]) & set(s["val"]) and len(s["train"]) + len(s["val"]) == 12
    assert make_splits(ids, seed=1) != a
    assert len(make_splits(ids[:3])) == 3
    assert make_splits(ids[:1]) == [{"train": ["c0"], "val": ["c0"]}]


def test_user_splits_are_kept_and_checked(tmp_path):
    path = tmp_path / "splits_final.json"
    custom = [{"train": ["a", "b"], "val": ["c"]}]
    path.write_text(json.dumps(custom))
    assert ensure_splits(path, ["a", "b", "c"]) == custom
    with pytest.raises(ValueError, match="in no fold"):
        ensure_splits(path, ["a", "b", "c", "d"])  # a case added later would never be used
    with pytest.raises(ValueError, match="not in imagesTr"):
        ensure_splits(path, ["a", "b"])
    path.unlink()
    assert ensure_splits(path, ["a", "b", "c"]) == make_splits(["a", "b", "c"]) and path.is_file()


@pytest.mark.parametrize("fold,message", [({"train": ["a", "a"], "val": ["b"]}, "more than once"),
                                          ({"train": ["a", "b"], "val": ["b"]}, "in both 'train' and 'val'")])
def test_user_splits_with_duplicates_or_overlap_are_refused(tmp_path, fold, message):
    path = tmp_path / "splits_final.json"
    path.write_text(json.dumps([fold]))
    with pytest.raises(ValueError, match=message):
        ensure_splits(path, ["a", "b"])
