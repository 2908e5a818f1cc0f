"""Orchestrate fingerprint → plans → preprocessing → splits for one dataset (resumable)."""

from __future__ import annotations

import hashlib
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from uadnet import paths
from uadnet.dataset.raw_dataset import RawDataset
from uadnet.imageio import ImageReadError, reader_writer_class, require_finite
from uadnet.planning.fingerprint import extract_fingerprint
from uadnet.planning.hardware import HardwareInfo, resolve_hardware, save_profile
from uadnet.planning.planner import plan_experiment
from uadnet.planning.splits import ensure_splits
from uadnet.plans import FINGERPRINT_FILE, PLANS_FILE, SPLITS_FILE, Plans
from uadnet.preprocessing.preprocessor import preprocess_case
from uadnet.utilities.file_io import load_json, save_json, save_npy
from uadnet.utilities.parallel import parallel_map
from uadnet.visualization.fingerprint_plot import plot_fingerprint


def preprocessing_key(plans: Plans, configuration: str) -> str:
    """A hash of every plans field that changes the preprocessed arrays (outputs with another key are redone)."""
    relevant = {
        "transpose": plans.transpose_forward, "foreground": asdict(plans.foreground),
        "normalization": [asdict(n) for n in plans.normalization], "reader": plans.image_reader_writer,
        "configuration": {k: v for k, v in asdict(plans.configuration(configuration)).items()
                          if k in ("spacing", "resampling_order_data", "resampling_order_mask", "resample_slice_axis",
                                   "dim")},
    }
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


def preprocess_training_case(task: dict[str, Any]) -> str:
    """Preprocess one training case into ``<out>/<case>.npy``, ``<case>_fg.npy``, ``<case>.json`` (JSON last)."""
    out = Path(task["output_folder"])
    json_path = out / f"{task['identifier']}.json"
    if json_path.is_file():
        try:
            if load_json(json_path).get("preprocessing_key") == task["key"]:
                return "skipped"
        except ValueError:
            pass  # a broken JSON means an unfinished case: redo it
    plans = Plans.from_dict(task["plans"])
    reader = reader_writer_class(plans.file_ending, plans.image_reader_writer)()
    image, props = reader.read_images(task["images"])
    require_finite(image, task["images"])
    if image.shape[0] != len(plans.normalization):
        raise ImageReadError(f"{', '.join(task['images'])}: {image.shape[0]} channel(s) read, the plans expect "
                             f"{len(plans.normalization)} ({', '.join(n.channel for n in plans.normalization)}); run "
                             "uadnet_plan_and_preprocess --verify_dataset_integrity to list every such case")
    mask = reader.read_seg(task["mask"])[0] if task["mask"] else None
    case = preprocess_case(image, props, plans, task["configuration"], mask)
    save_npy(case.data, out / f"{task['identifier']}.npy")
    save_npy(case.foreground.astype(np.uint8), out / f"{task['identifier']}_fg.npy")
    save_json({**case.properties, "preprocessing_key": task["key"]}, json_path)
    return "done"


def plan_and_preprocess_dataset(dataset: str | int, configurations: list[str] | None = None,
                                num_processes: int = 2, hardware: HardwareInfo | None = None,
                                memory_target_gb: float | None = None, time_budget_minutes: float | None = -1.0,
                                overwrite_plans: bool = False, refingerprint: bool = False,
                                codebook_size: int | str | None = None, device: str | None = None,
                                disable_progress_bar: bool = False, verbose: bool = True,
                                hardware_profile: str | Path | None = None, remeasure_hardware: bool = False,
                                high_maps_to: float | None = None) -> Plans:
    """Run fingerprint, planning and preprocessing for one dataset; each stage reuses what exists.

    Existing plans are kept (they may hold hand edits) unless ``overwrite_plans``; preprocessed cases whose
    preprocessing key matches the plans are skipped, so an interrupted run continues where it stopped. The
    fingerprint is recomputed when ``refingerprint`` or when the training cases changed. ``hardware`` is
    resolved only when planning is needed and it is not given: from ``hardware_profile`` (a JSON file) if given,
    else this machine's cached profile in ``UADNET_PREPROCESSED`` (measured once for ``device``, default CUDA if
    available; ``remeasure_hardware`` measures again), see :mod:`uadnet.planning.hardware`. ``codebook_size`` and
    ``high_maps_to`` are planning choices (:func:`plan_experiment`): they need a re-plan, never a new fingerprint.
    """
    name = paths.resolve_dataset_name(dataset)
    raw = RawDataset(paths.raw_folder() / name)
    out = paths.preprocessed_folder(create=True) / name
    out.mkdir(parents=True, exist_ok=True)
    say = print if verbose else (lambda *a, **k: None)

    cases = raw.training_cases()
    fp_path = out / FINGERPRINT_FILE
    fingerprint = load_json(fp_path) if fp_path.is_file() and not refingerprint else None
    if fingerprint is not None and sorted(c["identifier"] for c in fingerprint["cases"]) != sorted(cases):
        say(f"[{name}] the training cases changed since {fp_path} was written: fingerprinting again "
            "(existing plans are kept; add --overwrite_plans to re-plan from the new fingerprint)")
        fingerprint = None
    if fingerprint is not None and "normalized_histograms" not in fingerprint:
        say(f"[{name}] {fp_path} was written by an older uadnet (no intensity histograms): fingerprinting again")
        fingerprint = None
    if fingerprint is None:
        fingerprint = extract_fingerprint(raw, num_processes, disable_progress_bar=disable_progress_bar)
        save_json(fingerprint, fp_path)
    else:
        say(f"[{name}] using existing {fp_path}")

    plans_path = out / PLANS_FILE
    if plans_path.is_file() and not overwrite_plans:
        plans = Plans.load(plans_path)
        say(f"[{name}] using existing {plans_path} (hand edits kept; --overwrite_plans to re-plan)")
        ignored = [flag for flag, given in (
            ("--memory_target_gb", memory_target_gb is not None), ("--time_budget", time_budget_minutes != -1.0),
            ("--device", device is not None), ("--hardware_profile", hardware_profile is not None),
            ("--remeasure_hardware", remeasure_hardware), ("--codebook_size", codebook_size is not None),
            ("--high_maps_to", high_maps_to is not None)) if given]
        if ignored:
            print(f"[{name}] warning: {', '.join(ignored)} ignored: {plans_path} exists and these options only "
                  "matter when planning; add --overwrite_plans to re-plan with them (the fingerprint is reused; "
                  "hand edits to the plans are replaced)", file=sys.stderr)
    else:
        if hardware is None:
            hardware = resolve_hardware(device, hardware_profile, paths.preprocessed_folder(create=True),
                                        remeasure_hardware, say)
        plans = plan_experiment(fingerprint, hardware, memory_target_gb, time_budget_minutes,
                                reader_override=raw.dataset_json.get("overwrite_image_reader_writer"),
                                codebook_size=5 if codebook_size is None else codebook_size,
                                **({} if high_maps_to is None else {"high_maps_to": high_maps_to}))
        plans.save(plans_path)
        save_profile(hardware, out / "planning_hardware.json")
        plot_fingerprint(fingerprint, plans, out / "dataset_fingerprint.png")
    say(summarize_plans(plans))

    ensure_splits(out / SPLITS_FILE, list(cases))
    wanted = configurations if configurations is not None else list(plans.configurations)
    for cfg in wanted:
        if cfg not in plans.configurations:
            say(f"[{name}] configuration '{cfg}' is not planned for this dataset "
                f"(planned: {sorted(plans.configurations)}); skipping it")
            continue
        folder = out / plans.configurations[cfg].data_identifier
        folder.mkdir(exist_ok=True)
        key = preprocessing_key(plans, cfg)
        tasks = [{"identifier": i, "images": [str(p) for p in c.images], "mask": str(c.mask) if c.mask else None,
                  "output_folder": str(folder), "plans": plans.to_dict(), "configuration": cfg, "key": key}
                 for i, c in cases.items()]
        results = parallel_map(preprocess_training_case, tasks, num_processes, f"preprocess {cfg}", names=list(cases),
                               disable_progress_bar=disable_progress_bar)
        say(f"[{name}] {cfg}: {results.count('done')} case(s) preprocessed, {results.count('skipped')} up to date "
            f"→ {folder}")
    return plans


def summarize_plans(plans: Plans) -> str:
    """A few lines a user can read: configurations, patch, batch, network, normalisation, corruption sizes."""
    lines = [(f"Plans for {plans.dataset_name} (default configuration: {plans.default_configuration}, "
             f"precision {plans.compute.precision} on {plans.compute.device})")]
    for name, c in plans.configurations.items():
        spacing = c.spacing[1:] if c.dim == 2 else c.spacing
        budget = f", budget {c.training.time_budget_minutes:g} min" if c.training.time_budget_minutes else ""
        lines.append(f"  {name}: spacing {[round(s, 3) for s in spacing]} mm, patch {c.patch_size}, batch "
                     f"{c.batch_size}, {len(c.network.features_per_stage)} stages "
                     f"{c.network.features_per_stage}, {c.training.iterations} iterations "
                     f"(~{c.training.estimated_seconds_per_iteration:.2f} s each{budget})")
    lines.append("  normalisation: " + ", ".join(f"{n.channel}→{n.scheme}" for n in plans.normalization))
    cp = plans.corruption
    spots = f" + up to {cp.dag_small_shapes} spots of {cp.small_shape_size_mm} mm" if cp.dag_small_shapes else ""
    lines.append(f"  corruption shapes {cp.shape_size_mm} mm{spots}, codebook sizes "
                 f"{[len(c) for c in cp.intensity_codebook]}, ensemble severities "
                 f"{plans.methods.cold_ensemble.severities}")
    vp = plans.validation
    if vp.small_anomalies:
        lines.append(f"  validation: {vp.corruption} + {vp.small_anomalies} small anomalies of {vp.small_size_mm} mm "
                     f"per case, weighed as much as the others")
    return "\n".join(lines)
