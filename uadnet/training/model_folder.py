"""The plans a model folder's folds were trained with: one copy per fold, one beside the folds, never mixed.

``<results>/<dataset>/<method>__<plans>__<configuration>/uadnet_plans.json`` is what prediction reads;
``fold_<f>/uadnet_plans.json`` is what fold ``f`` was trained with. Training a fold with other plans than the
trained folds' would overwrite the shared copy and break (or silently change) those folds, so it is refused before
anything is written.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from uadnet.plans import FINGERPRINT_FILE, PLANS_FILE, Plans
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import atomic_path


def refuse_mixed_plans(fold_folder: Path, plans: Plans, plans_file: Path) -> None:
    """``ValueError`` when ``plans`` (read from ``plans_file``) differ from those any trained fold of the model
    folder (``fold_folder``'s parent) was trained with, this fold included (a ``--c`` with edited plans)."""
    current = plans.to_dict()
    parent = fold_folder.parent
    for fold in sorted(parent.glob("fold_*")):
        if not any((fold / n).exists() for n in (ckpt.LATEST, ckpt.PREVIOUS, ckpt.FINAL, ckpt.BEST)):
            continue
        used = fold / PLANS_FILE if (fold / PLANS_FILE).is_file() else parent / PLANS_FILE
        if not used.is_file() or Plans.load(used).to_dict() == current:
            continue
        if fold == fold_folder:
            advice = ("Continuing it with other plans would mix them: restore those plans to continue, or delete the "
                      "fold to start it again.")
        else:
            name = plans_file.stem
            advice = ("Training another fold with them would break or silently change the folds already trained: save "
                      f"the edited plans under a new name (e.g. {name}_v2.json) and train with -p {name}_v2, or "
                      "delete the trained folds. Nothing was written.")
        raise ValueError(f"{plans_file} differs from the plans {fold.name} was trained with ({used}). {advice}")


def copy_plans(fold_folder: Path, plans: Plans, dataset_json: Path, fingerprint: Path) -> None:
    """The plans into the fold folder (what this fold is trained with) and beside the folds, with dataset.json
    and the fingerprint (prediction reads these copies)."""
    parent = fold_folder.parent
    plans.save(fold_folder / PLANS_FILE)
    plans.save(parent / PLANS_FILE)
    for src, name in ((dataset_json, "dataset.json"), (fingerprint, FINGERPRINT_FILE)):
        if src.is_file():
            with atomic_path(parent / name, ".json") as tmp:  # folds trained in parallel share these files
                shutil.copyfile(src, tmp)
