"""The trainer: one loop for every method; settings from the plans, overridden from the command line.

Results go to ``UADNET_RESULTS/<dataset>/<method>__<plans>__<configuration>/fold_<f>/``: ``checkpoint_latest.pth``
(every ``checkpoint_every`` iterations and after the iteration during which Ctrl-C was pressed), ``checkpoint_previous.pth`` (the one before),
``checkpoint_best.pth`` (best validation AP, EMA weights), ``checkpoint_final.pth``, ``training_log.txt``,
``progress.png``, ``postprocessing.json``, ``calibration.json`` and ``uadnet_plans.json`` (the plans this fold was
trained with); the plans, dataset.json and fingerprint used are copied one level up (see
:mod:`uadnet.training.model_folder`: plans that differ from a trained fold's are refused).

Exact resume: iteration i trains on batch i of the seeded stream (see :mod:`uadnet.training.dataloading`), the
learning rate is a function of i, and the checkpoint holds the weights, the EMA, the optimiser and torch's RNG,
so a run interrupted and continued with ``--c`` ends with the weights of an uninterrupted one. ``--c`` with more
``--iterations`` than the run was planned for extends it (the schedule is stretched over the new total).
"""

from __future__ import annotations

import os
import signal
import statistics
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from uadnet import __version__, paths
from uadnet.methods import build_method
from uadnet.plans import FINGERPRINT_FILE, SPLITS_FILE, Plans
from uadnet.postprocessing.postprocessing import POSTPROCESSING_FILE
from uadnet.run_settings import resolve_run_settings
from uadnet.scoring.calibration import CALIBRATION_FILE
from uadnet.training.dataloading import PreprocessedDataset, make_training_pipeline
from uadnet.training.distributed import init_distributed, shutdown_distributed
from uadnet.training.ema import EMA
from uadnet.training.model_folder import copy_plans, refuse_mixed_plans
from uadnet.training.progress import TrainingLog, empty_history, plot_progress
from uadnet.training.schedule import learning_rate
from uadnet.training.validation import choose_step_and_calibrate, make_validation_set, validation_ap
from uadnet.utilities import checkpoints as ckpt
from uadnet.utilities.file_io import load_json, save_json
from uadnet.utilities.torch_utils import autocast

TIMING_ITERATIONS = 20  # a time budget is turned into an iteration count after this many timed iterations
MAX_BUDGET_EXTENSION = 1.25  # a budget may lengthen the plans' iterations by at most this factor


@dataclass
class TrainerSettings:
    """Command-line level settings; ``None`` means "as in the plans"."""

    dataset: str | int
    fold: int | str
    configuration: str | None = None
    method: str = "cold_ensemble"
    plans_name: str = paths.DEFAULT_PLANS_NAME
    device: str | None = None  # None: the plans' compute.device (auto: the best available)
    iterations: int | None = None
    epochs: int | None = None
    time_budget_minutes: float | None = None
    precision: str | None = None
    compile: bool | None = None
    num_workers: int | None = None
    validation_every: int | None = None
    checkpoint_every: int | None = None
    seed: int = 0
    continue_training: bool = False
    validate: bool = True
    calibrate: bool = True
    progress_bar: bool = True


def output_folder(dataset_name: str, method: str, plans_name: str, configuration: str, fold: int | str) -> Path:
    """``UADNET_RESULTS/<dataset>/<method>__<plans>__<configuration>/fold_<fold>``."""
    return paths.results_folder() / dataset_name / paths.model_folder_name(method, plans_name, configuration) / \
        f"fold_{fold}"


class Trainer:
    """Builds everything from the plans and runs (or resumes) one fold. Use :meth:`run`."""

    def __init__(self, settings: TrainerSettings) -> None:
        self.s = settings
        self.dataset_name = paths.resolve_dataset_name(settings.dataset)
        self.pre_folder = paths.preprocessed_folder() / self.dataset_name
        plans_file = self.pre_folder / f"{settings.plans_name}.json"
        if not plans_file.is_file():
            raise FileNotFoundError(f"{plans_file} does not exist: run uadnet_plan_and_preprocess -d "
                                    f"{settings.dataset} first")
        self.plans = Plans.load(plans_file)
        self.config_name = settings.configuration or self.plans.default_configuration
        self.cfg = self.plans.configuration(self.config_name)
        self.method = build_method(settings.method, self.plans, self.config_name)
        self.train_ids, self.val_ids = self._split(settings.fold)
        self.folder = output_folder(self.dataset_name, settings.method, settings.plans_name, self.config_name,
                                    settings.fold)
        self.run_settings = resolve_run_settings(self.plans, self.config_name, {
            "device": settings.device, "precision": settings.precision, "compile": settings.compile,
            "iterations": settings.iterations, "epochs": settings.epochs,
            "time_budget_minutes": settings.time_budget_minutes, "validation_every": settings.validation_every,
            "checkpoint_every": settings.checkpoint_every, "num_workers": settings.num_workers})
        run = self.run_settings
        self.total = int(run["iterations"])
        self.budget_minutes = run["time_budget_minutes"]
        self.warmup = min(self.cfg.training.warmup_iterations, self.total // 5)
        self.validation_every, self.checkpoint_every = run["validation_every"], run["checkpoint_every"]
        self.precision, self.compile, self.num_workers = run["precision"], run["compile"], run["num_workers"]
        self.device = run.device

    # ----------------------------------------------------------------------------------------------- setup
    def _split(self, fold: int | str) -> tuple[list[str], list[str]]:
        splits_file = self.pre_folder / SPLITS_FILE
        if not splits_file.is_file():
            raise FileNotFoundError(f"{splits_file} is missing: run uadnet_plan_and_preprocess for this dataset")
        splits = load_json(splits_file)
        if fold == "all":
            every = sorted({c for s in splits for c in s["train"] + s["val"]})
            return every, every
        if not isinstance(fold, int) or not 0 <= fold < len(splits):
            raise ValueError(f"fold must be 0..{len(splits) - 1} or 'all' ({splits_file} has {len(splits)} folds)")
        return list(splits[fold]["train"]), list(splits[fold]["val"])

    def _meta(self) -> dict[str, Any]:
        return {"dataset": self.dataset_name, "method": self.s.method, "configuration": self.config_name,
                "plans_name": self.s.plans_name, "fold": str(self.s.fold), "seed": self.s.seed,
                "precision": self.precision, "world_size": self.ctx.world_size, "uadnet_version": __version__,
                "plans_uadnet_version": self.plans.uadnet_version, "run_settings": self.run_settings.to_dict()}

    # ------------------------------------------------------------------------------------------- state I/O
    def _state(self, iteration: int) -> dict[str, Any]:
        return {"network": self.raw_model.state_dict(), "ema": self.ema.state_dict(),
                "optimizer": self.optimizer.state_dict(), "iteration": iteration, "total_iterations": self.total,
                "warmup_iterations": self.warmup, "torch_rng": torch.get_rng_state(), "history": self.history,
                "best_ap": self.best_ap, "meta": self._meta()}

    def _save(self, iteration: int, name: str = ckpt.LATEST) -> None:
        if self.ctx.is_main:
            ckpt.save_checkpoint(self._state(iteration), self.folder / name, keep_previous=name == ckpt.LATEST)

    def _save_weights(self, name: str, iteration: int, extra: dict[str, Any] | None = None) -> None:
        """A deployable checkpoint: the EMA weights only (best/final)."""
        if self.ctx.is_main:
            state = {"network": self.ema.model.state_dict(), "iteration": iteration, "meta": self._meta(),
                     "plans": self.plans.to_dict(), **(extra or {})}
            ckpt.save_checkpoint(state, self.folder / name)

    def _resume(self) -> int:
        """Restore the newest readable training checkpoint; returns the iteration to continue from."""
        state, problems = ckpt.newest_valid_checkpoint(self.folder, (ckpt.LATEST, ckpt.PREVIOUS))
        fallback = "using an older checkpoint" if state is not None else "no readable checkpoint is left"
        for p in problems:
            self.log(f"WARNING {p}; {fallback}")
            if self.ctx.is_main:
                print(f"WARNING: {p}; {fallback}")
        if state is None:
            self.log("no checkpoint to continue from; starting from scratch")
            if self.ctx.is_main:
                print(f"no checkpoint to continue from in {self.folder}; starting from scratch")
            return 0
        self.raw_model.load_state_dict(state["network"])
        self.ema.load_state_dict(state["ema"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        self.total, self.warmup = int(state["total_iterations"]), int(state["warmup_iterations"])
        done = int(state["iteration"])
        asked = int(self.run_settings["iterations"]) if self.run_settings.overridden("iterations") else self.total
        if asked < done:
            raise ValueError(f"--iterations {asked} with --c: {self.folder} has already trained {done} iterations; "
                             "ask for more to extend the run, or delete the folder to start again")
        if asked != self.total:
            self.log(message := f"extending the run from {self.total} to {asked} iterations (the learning-rate "
                                f"schedule is stretched over the new total from iteration {done} on)")
            if self.ctx.is_main:
                print(message)
            self.total = asked
        self.history, self.best_ap = state["history"], state["best_ap"]
        self.log(f"resumed from {state['meta']['loaded_from']} at iteration {state['iteration']}")
        return int(state["iteration"])

    def _refuse_to_overwrite(self) -> None:
        existing = [n for n in (ckpt.LATEST, ckpt.PREVIOUS, ckpt.FINAL) if (self.folder / n).exists()]
        if existing and not self.s.continue_training:
            raise FileExistsError(f"{self.folder} already holds {', '.join(existing)}. Pass --c to continue that "
                                  "run, or delete the folder to start again.")

    # ------------------------------------------------------------------------------------------- training
    def _build(self) -> None:
        torch.manual_seed(self.s.seed + 1000 * self.ctx.rank)
        self.raw_model = self.method.network().to(self.device)
        self.ema = EMA(self.raw_model, self.cfg.training.ema_decay)
        tp = self.cfg.training
        self.optimizer = torch.optim.AdamW(self.raw_model.parameters(), lr=tp.learning_rate,
                                           weight_decay=tp.weight_decay)
        model: nn.Module = self.raw_model
        if self.ctx.enabled:
            model = DistributedDataParallel(model, device_ids=[self.ctx.local_rank] if self.device.type == "cuda"
                                            else None)
        self.model = torch.compile(model) if self.compile else model
        self.history, self.best_ap = empty_history(), None

    def _to_device(self, batch: dict[str, Any]) -> dict[str, Any]:
        return {k: torch.from_numpy(np.asarray(v)).to(self.device, non_blocking=True)
                if k in ("data", "target", "anomaly_mask", "severity", "noise") else v for k, v in batch.items()}

    def _step(self, batch: dict[str, Any], iteration: int) -> tuple[float, float]:
        lr = learning_rate(iteration, self.total, self.cfg.training.learning_rate, self.warmup,
                           self.cfg.training.lr_schedule)
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        self.model.train()
        with autocast(self.device, self.precision):
            loss = self.method.loss(self.model, self._to_device(batch))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"the loss became {loss.item()} at iteration {iteration}. The last good "
                                     f"checkpoint is in {self.folder}: continue with --c --precision fp32, or save "
                                     "plans with a lower training.learning_rate under a new name and train again "
                                     "with -p")
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if self.cfg.training.grad_clip:
            nn.utils.clip_grad_norm_(self.raw_model.parameters(), self.cfg.training.grad_clip)
        self.optimizer.step()
        self.ema.update(self.raw_model)
        return float(loss.item()), lr

    def _validate(self, iteration: int) -> None:
        if self.ctx.is_main and self.s.validate:
            scorer = self.method.scorer(self.ema.model, self.precision)
            ap = validation_ap(scorer, self.validation_cases, self.cfg, self.device)
            self.history["val_iteration"].append(iteration)
            self.history["val_ap"].append(ap)
            self.log(f"iteration {iteration}: validation AP {ap if ap is None else round(ap, 4)}")
            if ap is not None and (self.best_ap is None or ap > self.best_ap):
                self.best_ap = ap
                self._save_weights(ckpt.BEST, iteration, {"validation_ap": ap})
            plot_progress(self.history, self.folder / "progress.png", self._title())
        self.ctx.barrier()

    def _title(self) -> str:
        return f"{self.dataset_name} · {self.s.method} · {self.config_name} · fold {self.s.fold}"

    def _apply_time_budget(self, start: int, iteration: int) -> None:
        """After ``TIMING_ITERATIONS`` timed iterations, fit ``total`` to the budget: shorter, or — in a fresh run
        whose length comes from the plans — up to ``MAX_BUDGET_EXTENSION`` × longer (the planner's estimate was
        high)."""
        if self.budget_minutes is None or iteration - start != TIMING_ITERATIONS:
            return
        seconds = statistics.median(self.history["seconds"][-(TIMING_ITERATIONS - 5):])
        remaining = self.budget_minutes * 60 - (time.monotonic() - self.started)
        most = self.total if start or self.run_settings.overridden("iterations") else \
            int(MAX_BUDGET_EXTENSION * self.total)
        fit = self.ctx_min(min(most, iteration + max(1, int(remaining / max(seconds, 1e-6)))))
        if fit != self.total:
            self.log(f"time budget {self.budget_minutes} min at {seconds:.3f} s/iteration: stopping at "
                     f"iteration {fit} instead of {self.total}")
            self.total = fit
            # the warm-up was sized for the planned run: keep it within the first fifth of a shortened one
            self.warmup = max(min(self.warmup, fit // 5), iteration)

    def ctx_min(self, value: int) -> int:
        """The smallest ``value`` over ranks, so all ranks stop together."""
        if not self.ctx.enabled:
            return value
        t = torch.tensor([float(value)], device=self.device)  # nccl reduces CUDA tensors only
        torch.distributed.all_reduce(t, op=torch.distributed.ReduceOp.MIN)
        return int(t.item())

    def run(self) -> Path:
        """Train (or continue), validate, save the final checkpoint and calibrate. Returns the fold folder."""
        self.ctx = init_distributed(self.device)
        try:
            return self._run()
        finally:
            shutdown_distributed(self.ctx)

    def _run(self) -> Path:
        if self.ctx.is_main:
            self._refuse_to_overwrite()
            plans_file = self.pre_folder / f"{self.s.plans_name}.json"
            refuse_mixed_plans(self.folder, self.plans, plans_file)
            self.folder.mkdir(parents=True, exist_ok=True)
            copy_plans(self.folder, self.plans, paths.raw_folder() / self.dataset_name / "dataset.json",
                       self.pre_folder / FINGERPRINT_FILE)
        self.ctx.barrier()
        self.log = TrainingLog(self.folder / "training_log.txt", enabled=self.ctx.is_main)
        PreprocessedDataset(self.pre_folder / self.cfg.data_identifier, self.train_ids)  # clear error if missing
        self._build()
        start = self._resume() if self.s.continue_training else 0
        self.iteration = start
        self.log(self.run_settings.describe())
        if self.ctx.is_main:
            print(self.run_settings.describe())
        if start == 0:
            self.log(f"training {self._title()} for {self.total} iterations on {self.device} ({self.precision}, "
                     f"{self.ctx.world_size} process(es)); {len(self.train_ids)} training, {len(self.val_ids)} "
                     f"validation cases; settings {asdict(self.s)}")
        if self.ctx.is_main and (self.s.validate or self.s.calibrate):
            self.validation_cases = make_validation_set(self.pre_folder, self.plans, self.config_name, self.val_ids)
        if self.ctx.is_main and set(self.train_ids) & set(self.val_ids) and (self.s.validate or self.s.calibrate):
            which = "fold 'all'" if self.s.fold == "all" else f"fold {self.s.fold} (too few cases for a split)"
            message = (f"{which} validates and calibrates on its own training cases: validation AP is optimistic "
                       "and the thresholds too low (more false positives on new data than stated)")
            print(f"WARNING: {message}")
            self.log(f"WARNING {message}")
        if start < self.total:
            self._train(start)
        if self.ctx.is_main:
            self._finish()
        self.ctx.barrier()
        return self.folder

    def _train(self, start: int) -> None:
        rank_seed = self.s.seed if self.ctx.rank == 0 else self.s.seed + 7919 * self.ctx.rank
        pipeline = make_training_pipeline(self.pre_folder, self.plans, self.config_name, self.train_ids,
                                          self.method.corruption(), self.num_workers, rank_seed,
                                          start_batch=start)
        self.started = time.monotonic()
        self.stop_requested = False
        previous_handler = self._catch_ctrl_c()
        bar = tqdm(total=self.total, initial=start, disable=not (self.s.progress_bar and self.ctx.is_main),
                   desc=f"training fold {self.s.fold}", unit="it", dynamic_ncols=True)
        iteration = start
        try:
            while iteration < self.total:
                t0 = time.perf_counter()
                loss, lr = self._step(next(pipeline), iteration)
                iteration = self.iteration = iteration + 1
                for key, value in zip(("iteration", "loss", "lr", "seconds"),
                                      (iteration, loss, lr, time.perf_counter() - t0)):
                    self.history[key].append(value)
                bar.update(1)
                bar.set_postfix(loss=f"{loss:.4f}", best_ap="-" if self.best_ap is None else f"{self.best_ap:.3f}")
                self._apply_time_budget(start, iteration)
                bar.total = self.total
                if iteration % self.validation_every == 0 or iteration == self.total:
                    self._validate(iteration)
                if iteration % self.checkpoint_every == 0 and iteration < self.total:
                    self._save(iteration)
                    self.log(f"iteration {iteration}: loss {loss:.5f}, lr {lr:.2e}; checkpoint written")
                if self.stop_requested:  # Ctrl-C: stop between iterations, where the state is consistent
                    self._save(iteration)
                    self.log(f"interrupted at iteration {iteration}; checkpoint written, continue with --c")
                    raise KeyboardInterrupt
        finally:
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
            bar.close()
            if hasattr(pipeline, "_finish"):
                pipeline._finish()
        self._save(iteration)

    def _catch_ctrl_c(self) -> Any:
        """First Ctrl-C: finish the current iteration, write a checkpoint, stop. Second: stop at once (the last
        periodic checkpoint is then the one to continue from). Returns the previous handler (None if not set)."""
        trainer_pid = os.getpid()

        def handler(signum: int, frame: Any) -> None:
            if os.getpid() != trainer_pid:  # a forked data-loading worker inherited this handler: the trainer stops it
                return
            if self.stop_requested:
                raise KeyboardInterrupt
            self.stop_requested = True
            print("\nstopping after this iteration (Ctrl-C again to stop at once) ...", flush=True)

        try:
            return signal.signal(signal.SIGINT, handler)
        except ValueError:  # not the main thread: leave Ctrl-C alone
            return None

    def _finish(self) -> None:
        iteration = self.iteration
        self._save_weights(ckpt.FINAL, iteration, {"best_validation_ap": self.best_ap})
        plot_progress(self.history, self.folder / "progress.png", self._title())
        if self.s.calibrate:  # checkpoint_final.pth, and checkpoint_best.pth when validated (-chk at prediction)
            from uadnet.training.validation import networks_to_calibrate

            fitted = None
            for checkpoint, network in networks_to_calibrate(self.folder, self.ema.model, iteration):
                if network is not None:
                    fitted = choose_step_and_calibrate(self.method.scorer(network, self.precision),
                                                       self.validation_cases, self.cfg, self.device)
                record, result, step = fitted
                about = {"checkpoint": checkpoint, "fold": str(self.s.fold), "method": self.s.method,
                         "configuration": self.config_name, "precision": self.precision,
                         "step_size": step, "uadnet_version": __version__}
                save_json({**record, **about}, self.folder / ckpt.per_checkpoint_file(POSTPROCESSING_FILE, checkpoint))
                save_json({**result, **about}, self.folder / ckpt.per_checkpoint_file(CALIBRATION_FILE, checkpoint))
                kept = [k for k, v in record["postprocessing"].items() if v]
                self.log(f"{checkpoint}: step size {step} (validation AP by step {record['step_size_trials']}); "
                         f"postprocessing kept {kept or 'none'} (validation AP "
                         f"{record['validation_ap_all_voxels']}); calibration: voxel thresholds "
                         f"{result['voxel_thresholds']}, case threshold {result['case_threshold']:.4f}")
        self.log(f"finished at iteration {iteration}; best validation AP {self.best_ap}")
