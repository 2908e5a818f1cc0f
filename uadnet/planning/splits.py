"""Five-fold cross-validation splits of the healthy training cases (``splits_final.json``)."""

from __future__ import annotations

import os
from pathlib import Path

from sklearn.model_selection import KFold

from uadnet.utilities.file_io import load_json, save_json


def make_splits(identifiers: list[str], num_folds: int = 5, seed: int = 12345) -> list[dict[str, list[str]]]:
    """Seeded K-fold over the sorted identifiers; fewer folds when there are fewer cases (1 case: train = val)."""
    ids = sorted(identifiers)
    if len(ids) < 2:
        return [{"train": ids, "val": ids}]
    folds = KFold(n_splits=min(num_folds, len(ids)), shuffle=True, random_state=seed)
    return [{"train": [ids[i] for i in tr], "val": [ids[i] for i in va]} for tr, va in folds.split(ids)]


def ensure_splits(path: str | os.PathLike, identifiers: list[str], num_folds: int = 5,
                  seed: int = 12345) -> list[dict[str, list[str]]]:
    """Return the splits in ``path``, creating them if absent. A user-provided file is kept but checked."""
    path = Path(path)
    if not path.is_file():
        splits = make_splits(identifiers, num_folds, seed)
        save_json(splits, path)
        return splits
    splits = load_json(path)
    known = set(identifiers)
    if not isinstance(splits, list) or not all(isinstance(s, dict) and {"train", "val"} <= set(s) for s in splits):
        raise ValueError(f"{path} must be a list of {{'train': [...], 'val': [...]}} objects. Fix or delete it.")
    used: set[str] = set()
    for k, s in enumerate(splits):
        unknown = sorted((set(s["train"]) | set(s["val"])) - known)
        if unknown:
            raise ValueError(f"{path}: fold {k} names cases that are not in imagesTr: {unknown[:5]}. "
                             "Fix the file or delete it to regenerate the splits.")
        for part in ("train", "val"):
            if len(set(s[part])) != len(s[part]):
                twice = sorted({c for c in s[part] if s[part].count(c) > 1})
                raise ValueError(f"{path}: fold {k} lists {twice[:5]} more than once in '{part}'. Fix the file or "
                                 "delete it to regenerate the splits.")
        if (overlap := sorted(set(s["train"]) & set(s["val"]))) and len(known) > 1:
            raise ValueError(f"{path}: fold {k} has {overlap[:5]} in both 'train' and 'val': validation and "
                             "calibration on training cases are optimistic. Fix the file or delete it to regenerate "
                             "the splits.")
        used |= set(s["train"]) | set(s["val"])
    unused = sorted(known - used)
    if unused:
        raise ValueError(f"{path}: {len(unused)} case(s) of imagesTr are in no fold (e.g. {unused[:3]}), so they "
                         "would never be used. Add them to the folds or delete the file to regenerate the splits.")
    return splits
