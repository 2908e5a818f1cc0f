"""``uadnet_find_best_configuration -d D``: rank every trained (method, configuration) of a dataset and their pairwise
ensembles on the folds' healthy validation cases with a held-out synthetic anomaly family, and write what to run.

Each candidate is scored fold by fold, each fold's network on that fold's validation cases (``splits_final.json``,
up to ``validation.max_cases``, made by :func:`uadnet.training.validation.make_validation_set`), through the
fold's residual normalisation and postprocessing: the maps ``uadnet_predict`` would make, on the preprocessed grid
(:mod:`uadnet.inference.validation_maps`).
Metrics, pooled over the folds: voxel AP on the cases with anomalies (foreground voxels; with small validation
anomalies the mean of the two classes' APs, as training validates) and the false-positive
rate on their healthy versions at the fold's voxel threshold calibrated at ``FPR``. A pair ensemble averages the
members' maps each divided by its own threshold (:func:`uadnet.inference.ensemble.rescaled_mean`, as
``uadnet_ensemble`` does) with threshold 1. Only candidates validated on the same grid (same plans and
configuration) are paired. The family is the same for every candidate: one ``validation`` section (the first
model's plans), without any "many tasks" task a candidate trains on (:func:`held_out_family`).
"""

from __future__ import annotations

import itertools
import math
import shlex
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

from uadnet import __version__, paths
from uadnet.corruption.many_tasks import TASKS
from uadnet.corruption.registry import build_corruption
from uadnet.inference.ensemble import rescaled_mean
from uadnet.inference.model_zip import train_command
from uadnet.inference.predictor import PredictionSettings, Predictor
from uadnet.inference.validation_maps import fold_maps, held_out_novelty, validation_ids
from uadnet.methods import build_method
from uadnet.plans import PLANS_FILE, Plans, ValidationPlan
from uadnet.scoring.average_precision import class_balanced_ap
from uadnet.scoring.calibration import CALIBRATION_FILE
from uadnet.training.validation import make_validation_set
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import atomic_path, save_json

FPR = 0.01  # false-positive rate of the calibrated thresholds compared (calibration.json voxel_thresholds)
JSON_FILE, TEXT_FILE = "inference_instructions.json", "inference_instructions.txt"
INPUT, OUTPUT = "INPUT_FOLDER", "OUTPUT_FOLDER"  # placeholders in the written commands
MANY_TASKS = ("many_tasks", "many_tasks_validation")
# training families that apply a "many tasks" task's very formula: FPI, and DAG's texture step, are the foreign-patch
# interpolation (1 − β·m)·x + β·m·patch of the foreign_patch task, which is therefore not held out from them
RESEMBLES = {"fpi": {"foreign_patch"}, "dag": {"foreign_patch"}}


class FindBestError(ValueError):
    """Nothing can be compared; the message names the missing files and the commands that make them."""


@dataclass
class Candidate:
    folder: Path  # <method>__<plans>__<configuration>
    plans: Plans
    predictor: Predictor | None = None

    @property
    def name(self) -> str:
        return self.folder.name

    @property
    def parts(self) -> tuple[str, str, str]:
        return paths.model_folder_parts(self.folder)


@dataclass
class Tally:
    """One candidate or pair: anomalous foreground scores and labels, healthy voxels above threshold / all."""

    scores: list[np.ndarray] = field(default_factory=list)
    labels: list[np.ndarray] = field(default_factory=list)
    above: int = 0
    total: int = 0


def find_candidates(dataset: str, plans_name: str | None = None, methods: list[str] | None = None,
                    configurations: list[str] | None = None) -> list[Candidate]:
    """The model folders of ``UADNET_RESULTS/<dataset>`` (with their plans), filtered, sorted by name."""
    root = paths.results_folder() / dataset
    found = []
    for folder in sorted(root.glob("*__*__*")) if root.is_dir() else []:
        try:
            method, plans, configuration = paths.model_folder_parts(folder)
        except ValueError:
            continue
        if (folder / PLANS_FILE).is_file() and (plans_name in (None, plans)) and \
                (not methods or method in methods) and (not configurations or configuration in configurations):
            found.append(Candidate(folder, Plans.load(folder / PLANS_FILE)))
    if not found:
        raise FindBestError(f"no trained model in {root} matches (-p {plans_name}, -m {methods}, -c "
                            f"{configurations}): train one with uadnet_train {dataset} FOLD -m METHOD -c CONFIGURATION")
    return found


def default_folds(candidates: list[Candidate]) -> list[str]:
    """Every numbered fold that some candidate has a final checkpoint for; else ``["all"]``."""
    folds = {p.name[len("fold_"):] for c in candidates for p in c.folder.glob("fold_*") if (p / ckpt.FINAL).is_file()}
    numbered = sorted((f for f in folds if f.isdigit()), key=int)
    return numbered or ["all"]


def missing_commands(c: Candidate, dataset: str, folds: list[str]) -> list[str]:
    """For each of ``folds`` the candidate lacks (final checkpoint or calibration): the file and its command."""
    out = []
    for fold in folds:
        folder = c.folder / f"fold_{fold}"
        train = train_command(dataset, fold, *c.parts)
        if not (folder / ckpt.FINAL).is_file():
            out.append(f"{folder / ckpt.FINAL} is missing: {train}")
        elif not (folder / CALIBRATION_FILE).is_file():
            out.append(f"{folder / CALIBRATION_FILE} is missing: {train} --c")
    return out


def _trained_tasks(c: Candidate) -> tuple[str | None, set[str]]:
    """The candidate's training corruption family and the "many tasks" tasks it trains on (or on their equal)."""
    family = getattr(build_method(c.parts[0], c.plans, c.parts[2]).section, "corruption", None)
    tasks = set(build_corruption(family, c.plans).tasks) if family in MANY_TASKS else set()
    return family, tasks | RESEMBLES.get(family, set())


def held_out_family(candidates: list[Candidate]) -> tuple[ValidationPlan, str]:
    """One validation plan for every candidate: the first candidate's, less the "many tasks" tasks any candidate
    trains on (when none is left: every task none trains on); the default family instead when the plans' family is
    a candidate's training family. Returns ``(plan, one-line description)``; ``FindBestError`` when no task is left."""
    vp, source = candidates[0].plans.validation, f"the validation section of {candidates[0].name}/{PLANS_FILE}"
    trained = {c.parts[0]: _trained_tasks(c) for c in candidates}
    users = [m for m, (family, _) in trained.items() if family == vp.corruption]
    if users:  # e.g. validation.corruption "dag" while cold_ensemble trains on DAG: that would favour it
        vp = replace(ValidationPlan(), seed=vp.seed, max_cases=vp.max_cases, size_law=vp.size_law)
        source = f"the default (the plans' family {candidates[0].plans.validation.corruption} trains {users[0]})"
    seen = {t: [m for m, (_, tasks) in trained.items() if t in tasks] for t in TASKS}
    seen = {t: ms for t, ms in seen.items() if ms}
    if vp.corruption == "many_tasks_validation":
        tasks = [t for t in vp.tasks if t not in seen] or [t for t in TASKS if t not in seen]
        if not tasks:
            raise FindBestError(f"every \"many tasks\" task is a training task of a candidate ({seen}): leave some of "
                                "those methods out (-m)")
        vp = replace(vp, tasks=tasks)
    tasks = f" tasks {', '.join(vp.tasks)}" if vp.corruption == "many_tasks_validation" else ""
    trains = "; not held out: " + ", ".join(f"{t} ({', '.join(ms)})" for t, ms in seen.items()) if seen else ""
    return vp, f"{vp.corruption}{tasks} (seed {vp.seed}, up to {vp.max_cases} cases per fold; from {source}{trains})"


def _predict_command(dataset: str, c: Candidate, folds: list[str]) -> list[str]:
    method, plans_name, configuration = c.parts
    plans = ["-p", plans_name] if plans_name != paths.DEFAULT_PLANS_NAME else []
    return ["uadnet_predict", "-d", dataset, "-m", method, *plans, "-c", configuration, "-f", *folds,
            "--fpr", str(FPR)]


def commands(dataset: str, members: list[Candidate], folds: list[str]) -> dict[str, Any]:
    """``predict`` (per member, without ``-i``/``-o``) and the full ``commands`` with the placeholders."""
    predict = [_predict_command(dataset, c, folds) for c in members]
    if len(members) == 1:
        return {"predict": [shlex.join(predict[0])], "commands": [shlex.join([*predict[0], "-i", INPUT, "-o", OUTPUT])]}
    outs = [f"{OUTPUT}_members/{c.name}" for c in members]
    lines = [shlex.join([*p, "-i", INPUT, "-o", o]) for p, o in zip(predict, outs)]
    return {"predict": [shlex.join(p) for p in predict],
            "commands": [*lines, shlex.join(["uadnet_ensemble", "-i", *outs, "-o", OUTPUT, "--recalibrate"])]}


def find_best_configuration(dataset: str | int, plans_name: str | None = None, methods: list[str] | None = None,
                            configurations: list[str] | None = None, folds: list[str] | None = None,
                            device: str | None = None, progress_bar: bool = True) -> dict[str, Any]:
    """Rank the candidates and pairs; write ``inference_instructions.json``/``.txt`` next to the model folders and
    return the JSON's content."""
    name = paths.resolve_dataset_name(dataset)
    candidates = find_candidates(name, plans_name, methods, configurations)
    folds = [str(f) for f in folds] if folds else default_folds(candidates)
    skipped = {c.name: cmds for c in candidates if (cmds := missing_commands(c, name, folds))}
    usable = []
    for c in (c for c in candidates if c.name not in skipped):
        try:
            c.predictor = Predictor(PredictionSettings(Path("."), Path("."), None, model_folder=c.folder, folds=folds,
                                                       device=device, fpr=FPR, progress_bar=False))
            usable.append(c)
        except (OSError, ValueError, RuntimeError, KeyError) as e:
            skipped[c.name] = [str(e)]
    if not usable:
        listed = "; ".join(f"{n}: {' | '.join(v)}" for n, v in skipped.items())
        raise FindBestError(f"no candidate has every fold {folds} trained and calibrated: {listed}")
    vp, family = held_out_family(usable)
    groups: dict[str, list[Candidate]] = {}
    for c in usable:
        groups.setdefault(c.plans.configuration(c.parts[2]).data_identifier + "/" + c.parts[1], []).append(c)
    keys = [(c.name,) for c in usable] + [(a.name, b.name) for g in groups.values()
                                           for a, b in itertools.combinations(g, 2)]
    tallies = {k: Tally() for k in keys}
    bar = tqdm(total=len(folds) * len(usable), desc="scoring validation cases", unit="model-fold",
               disable=not progress_bar)
    for fold in folds:
        ids = validation_ids(name, fold)
        for group in groups.values():
            first = group[0]
            cases = make_validation_set(paths.preprocessed_folder() / name, replace(first.plans, validation=vp),
                                        first.parts[2], ids)
            maps, thresholds = {}, {}
            for c in group:
                trained = next(f for f in c.predictor.folds if f.fold == fold)
                thresholds[c.name] = float(trained.calibration["voxel_thresholds"][str(FPR)])
                maps[c.name] = [fold_maps(c.predictor, trained, case, n)
                                for case, n in zip(cases, held_out_novelty(trained, cases))]
                bar.update(1)
            for key in (k for k in keys if k[0] in maps):
                for i, case in enumerate(cases):
                    t = [thresholds[n] for n in key]
                    anomalous = rescaled_mean((maps[n][i][0] for n in key), t, 1.0).astype(np.float32)
                    healthy = rescaled_mean((maps[n][i][1] for n in key), t, 1.0)
                    tally = tallies[key]
                    tally.scores.append(anomalous)
                    tally.labels.append(case.anomaly[case.foreground])
                    tally.above += int((healthy >= 1.0).sum())
                    tally.total += healthy.size
    bar.close()
    by_name = {c.name: c for c in usable}
    ranking = []
    for key, tally in tallies.items():
        ap = class_balanced_ap(tally.scores, tally.labels)
        ranking.append({"name": " + ".join(key), "members": list(key), "ap": ap,
                        "fpr": tally.above / max(tally.total, 1), "num_cases": len(tally.labels),
                        **commands(name, [by_name[n] for n in key], folds)})
    ranking.sort(key=lambda r: (-(r["ap"] if r["ap"] is not None else -math.inf), r["fpr"], len(r["members"])))
    notes = [("a single model's FPR is measured on the healthy cases its threshold was calibrated on (so it is near "
              f"{FPR} by construction); a pair's shows what averaging does to it")]
    if len(groups) > 1:
        notes.append("candidates of different plans or configurations are not paired (their validation cases lie on "
                     "different grids); their AP compares the same family and cases, each on its own grid")
    if "all" in folds:
        notes.append("fold 'all' is validated on its own training cases: its figures are optimistic")
    result = {"dataset": name, "folds": folds, "fpr": FPR, "held_out_family": family, "validation": asdict(vp),
              "chosen": ranking[0], "ranking": ranking, "skipped": skipped, "notes": notes,
              "placeholders": {INPUT: "the folder of raw images to predict", OUTPUT: "the output folder"},
              "uadnet_version": __version__}
    root = paths.results_folder() / name
    save_json(result, root / JSON_FILE)
    with atomic_path(root / TEXT_FILE, ".txt") as tmp:
        tmp.write_text(instructions_text(result), encoding="utf-8")
    return result


def instructions_text(r: dict[str, Any]) -> str:
    """The human-readable ``inference_instructions.txt``: ranking table, choice, commands, skipped candidates."""
    width = max(len(x["name"]) for x in r["ranking"])
    lines = [f"uadnet_find_best_configuration {r['dataset']} (uadnet {r['uadnet_version']})",
             f"folds {' '.join(r['folds'])}; held-out anomaly family: {r['held_out_family']}",
             (f"AP: pooled voxel AP on the validation cases with anomalies; FPR: healthy voxels at or above the "
              f"fold's threshold calibrated at {r['fpr']} (pairs: mean of map/threshold >= 1)"), "",
             f"{'rank':<5} {'candidate':<{width}} {'AP':>7} {'FPR':>7} {'cases':>5}"]
    for i, x in enumerate(r["ranking"], 1):
        ap = "n/a" if x["ap"] is None else f"{x['ap']:.4f}"
        lines.append(f"{i:<5} {x['name']:<{width}} {ap:>7} {x['fpr']:>7.4f} {x['num_cases']:>5}")
    c = r["chosen"]
    lines += ["", (f"chosen: {c['name']} (folds {' '.join(r['folds'])}; each fold's postprocessing and thresholds "
                   "are in its model folder)"), "run:", *[f"  {cmd}" for cmd in c["commands"]]]
    lines += ["", *[f"note: {n}" for n in r["notes"]]]
    if r["skipped"]:
        lines += ["", "skipped (missing or unusable; the command that makes it):"]
        lines += [f"  {n}: {why}" for n, whys in r["skipped"].items() for why in whys]
    return "\n".join(lines) + "\n"
