"""The folder loop of ``uadnet_predict`` and ``uadnet_baseline``: every case of an input folder through a
:class:`CaseScorer`, pipelined.

Three stages overlap, as in nnU-Net's predictor: a loader thread reads (and, for scorers that have ``prepare``,
preprocesses) up to ``FolderRun.prefetch`` cases ahead; the calling thread scores one case at a time (the network
keeps the device); a writer thread exports finished cases (maps, masks, restoration, then the record, which marks
the case finished), with at most ``prefetch`` exports waiting. Memory is therefore bounded by ~2·prefetch + 1
cases whatever the folder size. ``prefetch=0`` runs the stages one after the other. A case that fails in any stage
is reported and skipped; ``KeyboardInterrupt`` and the scorer's fatal errors stop the run after the pending exports
are finished or abandoned (an abandoned case has no record, so ``--continue_prediction`` redoes it).
"""

from __future__ import annotations

import os
import traceback
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
from tqdm import tqdm

from uadnet.dataset.raw_dataset import Case, list_cases
from uadnet.imageio import BaseReaderWriter
from uadnet.inference.export import (
    OPTIONAL_OUTPUTS,
    PER_CASE,
    PREDICTION_FILE,
    SCORES_FILE,
    case_outputs,
    case_record,
    check_folders,
    output_name_collisions,
    start_case,
    write_map_and_mask,
    write_scores_csv,
)
from uadnet.inference.mood import OUTPUT_FORMATS, mapping_record, mood_outputs, write_mood_case
from uadnet.utilities.file_io import save_json


class CaseScorer(Protocol):
    """What :func:`run_folder` needs from a predictor or a baseline: how to read a case and score it, its
    thresholds and where its outputs go. A scorer may also split ``score_case`` into ``prepare(image, properties)``
    (CPU work that can run ahead in the loader thread, e.g. preprocessing) and ``score_prepared(prepared)``."""

    reader: BaseReaderWriter
    file_ending: str  # of the input images
    output_ending: str  # of the maps and masks
    voxel_threshold: float
    case_threshold: float
    writes_restoration: bool  # its results hold "restoration" (c, z, y, x), written as <case>_restoration_0000
    # optional: writes_uncertainty (bool), its results then hold "uncertainty" (z, y, x) and "uncertainty_summary"

    def read(self, case: Case) -> tuple[np.ndarray, dict[str, Any]]:
        """The case's image (c, z, y, x) and properties; a clear error naming the file if it cannot be used."""

    def score_case(self, image: np.ndarray, properties: dict[str, Any]) -> dict[str, Any]:
        """``map`` (z, y, x) on the input grid, case ``score``, ``seconds`` (dict), optionally ``restoration``."""

    def prediction_json(self) -> dict[str, Any]:
        """The folder's ``prediction.json`` (at least ``voxel_threshold`` and ``case_threshold``)."""


@dataclass
class FolderRun:
    """Which cases of which folder, and how: ``num_parts``/``part_id`` shard the sorted cases;
    ``continue_prediction`` skips finished ones; ``prefetch`` cases are loaded (and exports may wait) ahead of the
    one being scored (0: no overlap)."""

    input_folder: Path
    output_folder: Path
    num_parts: int = 1
    part_id: int = 0
    continue_prediction: bool = False
    progress_bar: bool = True
    desc: str = "predicting"
    prefetch: int = 2
    output_format: str = "uadnet"  # or "mood": the MOOD challenge's layout (uadnet.inference.mood)


def _outputs(scorer: CaseScorer, output_folder: Path, case: str, output_format: str) -> dict[str, Path]:
    """The files ``case`` gets in ``output_format`` (restoration and uncertainty, if written, keep their usual
    place)."""
    o = case_outputs(output_folder, case, scorer.output_ending)
    if output_format == "mood":
        return {**mood_outputs(output_folder, case, scorer.output_ending), **{k: o[k] for k in OPTIONAL_OUTPUTS}}
    return o


def is_finished(scorer: CaseScorer, output_folder: Path, case: str, output_format: str = "uadnet") -> bool:
    """All outputs of ``case`` in ``output_format`` exist (the record is written last), the optional ones when the
    scorer writes them."""
    o = _outputs(scorer, output_folder, case, output_format)
    asked = {"restoration": scorer.writes_restoration, "uncertainty": getattr(scorer, "writes_uncertainty", False)}
    needed = [k for k in o if k not in OPTIONAL_OUTPUTS or asked[k]]
    return all(o[k].exists() for k in needed)


def _load(scorer: CaseScorer, case: Case) -> tuple[Any, dict[str, Any]]:
    """Loader stage: read (and prepare, when the scorer can) one case."""
    image, props = scorer.read(case)
    if hasattr(scorer, "prepare"):
        return scorer.prepare(image, props), props
    return image, props


def _score(scorer: CaseScorer, loaded: Any, props: dict[str, Any]) -> dict[str, Any]:
    if hasattr(scorer, "score_prepared"):
        return scorer.score_prepared(loaded)
    return scorer.score_case(loaded, props)


def _write(scorer: CaseScorer, output_folder: Path, case: Case, result: dict[str, Any], props: dict[str, Any],
           output_format: str = "uadnet") -> dict[str, Any]:
    """Writer stage: maps and masks (or the MOOD pixel map and sample score), restoration and uncertainty, then the
    record (the case is finished when it exists)."""
    o = _outputs(scorer, output_folder, case.identifier, output_format)
    record = case_record(case, result["map"], result["score"], scorer.voxel_threshold, scorer.case_threshold,
                         result["seconds"])
    if output_format == "mood":
        record["mood_sample_score"] = write_mood_case(scorer.reader, result["map"], result["score"], props, o,
                                                      scorer.voxel_threshold, scorer.case_threshold)
    else:
        write_map_and_mask(scorer.reader, result["map"], props, o, scorer.voxel_threshold)
    if "restoration" in result:
        scorer.reader.write(result["restoration"][:1].astype(np.float32), o["restoration"], props)
    if "uncertainty" in result:
        scorer.reader.write(result["uncertainty"].astype(np.float32), o["uncertainty"], props)
        record["uncertainty"] = result["uncertainty_summary"]
    save_json(record, o["record"])
    return record


def run_case(scorer: CaseScorer, output_folder: Path, case: Case, output_format: str = "uadnet") -> dict[str, Any]:
    """Score one case and write its outputs (record last), in this thread; returns the record."""
    start_case(_outputs(scorer, output_folder, case.identifier, output_format))
    loaded, props = _load(scorer, case)
    return _write(scorer, output_folder, case, _score(scorer, loaded, props), props, output_format)


def _pending_cases(scorer: CaseScorer, run: FolderRun, error: type[Exception]
                   ) -> tuple[Path, dict[str, Case], list[str], list[tuple[str, str]]]:
    """Check the folders and list the cases: ``(output folder, all cases, this shard's to-do, failures so far)``."""
    inp, out = check_folders(run.input_folder, run.output_folder, error)
    if run.num_parts < 1:
        raise error(f"--num_parts must be at least 1, got {run.num_parts}")
    if not 0 <= run.part_id < run.num_parts:
        raise error(f"--part_id must be in 0..{run.num_parts - 1}, got {run.part_id}")
    if run.prefetch < 0:
        raise error(f"prefetch must be 0 or more, got {run.prefetch}")
    if run.output_format not in OUTPUT_FORMATS:
        raise error(f"--output_format must be one of {', '.join(OUTPUT_FORMATS)}, got '{run.output_format}'")
    file_ending = scorer.file_ending
    listing = list_cases(inp, file_ending)
    failures = [(p.name, f"file name does not follow <case>_<channel 0000>{file_ending}") for p in listing.unmatched]
    if not listing.cases and not failures:
        raise error(f"no {file_ending} images named <case>_0000{file_ending} in {inp}")
    if collisions := output_name_collisions(list(listing.cases)):
        raise error("case names whose outputs would overwrite each other: " + "; ".join(collisions)
                    + ". Rename one case of each pair (nothing was written).")
    cases = sorted(listing.cases)[run.part_id::run.num_parts]
    if not cases and not failures:
        raise error(f"part {run.part_id} of {run.num_parts} holds no case: {inp} has only {len(listing.cases)} "
                    f"case(s); use at most --num_parts {len(listing.cases)}")
    todo = [c for c in cases if not (run.continue_prediction and is_finished(scorer, out, c, run.output_format))]
    if len(todo) < len(cases):
        print(f"{len(cases) - len(todo)} case(s) already predicted, {len(todo)} to go")
    return out, listing.cases, todo, failures


def run_folder(scorer: CaseScorer, run: FolderRun, *, fatal: tuple[type[BaseException], ...] = (),
               error: type[Exception] = ValueError, summary: Callable[[Path], str] | None = None) -> int:
    """Score every case of the input folder (this shard) with ``scorer``, loading ahead and exporting behind (see
    the module docstring).

    Checks the folders, writes ``prediction.json``, skips finished cases with ``continue_prediction``, reports a
    failing case as ``FAILED case: why`` and goes on (exceptions in ``fatal`` and ``KeyboardInterrupt`` stop the
    run), then writes ``scores.csv`` over all cases of the input folder and prints ``summary(output_folder)``.
    Returns 0, or 1 if any case failed.
    """
    out, all_cases, todo, failures = _pending_cases(scorer, run, error)
    out.mkdir(parents=True, exist_ok=True)
    (out / PER_CASE).mkdir(exist_ok=True)
    info = scorer.prediction_json()
    if run.output_format != "uadnet":
        info = {**info, "output_format": run.output_format,
                "mood": mapping_record(scorer.voxel_threshold, scorer.case_threshold)}
    save_json(info, out / PREDICTION_FILE)

    def failed(name: str, e: BaseException) -> None:
        if isinstance(e, (KeyboardInterrupt, *fatal)):
            raise e
        failures.append((name, f"{type(e).__name__}: {e}"))
        if os.environ.get("UADNET_DEBUG"):
            traceback.print_exception(e)

    bar = tqdm(total=len(todo), desc=run.desc, unit="case", disable=not run.progress_bar)
    if run.prefetch == 0:
        for name in todo:
            try:
                run_case(scorer, out, all_cases[name], run.output_format)
            except BaseException as e:  # noqa: BLE001 - failed() re-raises what must stop the run
                failed(name, e)
            bar.update()
    else:
        _run_pipelined(scorer, out, [all_cases[n] for n in todo], run.prefetch, failed, bar, run.output_format)
    bar.close()
    n = write_scores_csv(out, list(all_cases))
    tail = summary(out) if summary is not None else None
    if run.output_format == "mood":
        tail = (f"MOOD layout: {out / 'pixel'} (voxel scores in [0, 1], 0.5 = the threshold "
                f"{scorer.voxel_threshold:.4g}) and {out / 'sample'} (0.5 = the case threshold "
                f"{scorer.case_threshold:.4g})")
    print(f"{n} case(s) in {out / SCORES_FILE}" + (f"; {tail}" if tail else ""))
    for name, why in failures:
        print(f"FAILED {name}: {why}")
    return 1 if failures else 0


def _run_pipelined(scorer: CaseScorer, out: Path, cases: list[Case], prefetch: int,
                   failed: Callable[[str, BaseException], None], bar: tqdm, output_format: str = "uadnet") -> None:
    """Load up to ``prefetch`` cases ahead in one thread, score here, export in another thread (at most
    ``prefetch`` exports pending)."""
    loads: deque[tuple[Case, Future]] = deque()
    writes: deque[tuple[Case, Future]] = deque()
    upcoming = iter(cases)

    def collect_write() -> None:
        case, future = writes.popleft()
        try:
            future.result()
        except BaseException as e:  # noqa: BLE001 - failed() re-raises what must stop the run
            failed(case.identifier, e)
        bar.update()

    def submit_load(loader: ThreadPoolExecutor) -> None:
        case = next(upcoming, None)
        if case is not None:
            start_case(_outputs(scorer, out, case.identifier, output_format))  # not finished until rewritten
            loads.append((case, loader.submit(_load, scorer, case)))

    loader, writer = ThreadPoolExecutor(1, "uadnet-load"), ThreadPoolExecutor(1, "uadnet-write")
    try:
        for _ in range(prefetch):
            submit_load(loader)
        while loads:
            case, future = loads.popleft()
            submit_load(loader)
            try:
                loaded, props = future.result()
                result = _score(scorer, loaded, props)
                del loaded
            except BaseException as e:  # noqa: BLE001 - failed() re-raises what must stop the run
                failed(case.identifier, e)
                bar.update()
                continue
            while len(writes) >= prefetch:
                collect_write()
            writes.append((case, writer.submit(_write, scorer, out, case, result, props, output_format)))
        while writes:
            collect_write()
    except BaseException:
        for _, future in loads:
            future.cancel()
        raise
    finally:
        loader.shutdown(wait=True, cancel_futures=True)
        writer.shutdown(wait=True)  # an export already started is finished (its record marks it done)
