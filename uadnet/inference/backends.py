"""Inference backends for a fold's restorer: PyTorch, or an ONNX export run by ONNX Runtime on the CPU.

``uadnet_predict --backend torch|onnxruntime|auto``. The restorer is the only part that changes: the method's
scorer, the sliding window, postprocessing and export are the same for every backend, because an
:class:`OnnxRestorer` is called exactly like the network (``restorer(x, condition)``: x (b, c, *patch) float32,
condition (b,) float32 — severity or normalised timestep; the autoencoder takes x only). The export is made once
per checkpoint and cached beside it (``restorer_<sha256 of the checkpoint, 16 hex>.onnx``, written atomically),
and checked against PyTorch on the same inputs before it is used (fp32, max |difference| ≤ ``CHECK_TOLERANCE``).
``auto`` times both on this machine (a batch of the plans' size, median of 3) and uses the faster one, saying
which. ONNX Runtime is optional: ``pip install -e ".[deploy]"``. Precision: the export is fp32 (``--precision``
applies to the torch backend only).
"""

from __future__ import annotations

import hashlib
import inspect
import statistics
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from uadnet.utilities.file_io import atomic_path

BACKENDS = ("torch", "onnxruntime", "auto")
CHECK_TOLERANCE = 1e-4  # max |onnx − torch| of the restorer's output on the check batch (fp32, [0, 1] images)
DEPLOY_HINT = 'install the deployment extra (pip install -e ".[deploy]": onnxruntime, onnx) or use --backend torch'


class BackendError(RuntimeError):
    """A backend cannot be used here; the message says why and what to do."""


def onnxruntime_available() -> bool:
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def _require_onnxruntime() -> Any:
    try:
        import onnxruntime
    except ImportError:
        raise BackendError(f"--backend onnxruntime needs the onnxruntime package, which is not installed: "
                           f"{DEPLOY_HINT}") from None
    return onnxruntime


def _takes_condition(model: nn.Module) -> bool:
    """Whether the network is called as ``model(x, condition)`` (cold diffusion, DDPM) or ``model(x)`` (the
    autoencoder: a UNet built without a condition embedding)."""
    return getattr(model, "embedding", None) is not None


def _example_inputs(model: nn.Module, patch_size: list[int], batch: int, seed: int = 0) -> tuple[Tensor, ...]:
    channels = getattr(model, "in_channels", None) or next(
        m for m in model.modules() if isinstance(m, (nn.Conv2d, nn.Conv3d))).in_channels
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, channels, *patch_size, generator=g)
    if not _takes_condition(model):
        return (x,)
    return x, torch.rand(batch, generator=g) * 0.9 + 0.05


def checkpoint_digest(path: Path) -> str:
    """The first 16 hex digits of the checkpoint file's sha256 (names its cached export)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


class OnnxRestorer:
    """An ONNX Runtime session called like the network: ``restorer(x, condition) -> Tensor`` (on x's device)."""

    def __init__(self, path: Path, threads: int | None = None) -> None:
        ort = _require_onnxruntime()
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.path = path
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def __call__(self, *args: Any) -> Tensor:
        x = args[0]
        feeds = {self.inputs[0]: x.detach().float().cpu().numpy()}
        if len(self.inputs) > 1:
            cond = args[1]
            cond = torch.full((x.shape[0],), float(cond)) if not isinstance(cond, Tensor) else cond
            feeds[self.inputs[1]] = cond.detach().float().cpu().numpy().reshape(x.shape[0])
        return torch.from_numpy(self.session.run(None, feeds)[0]).to(x.device)

    def eval(self) -> OnnxRestorer:  # the scorers treat it like a network in eval mode
        return self


def export_onnx(model: nn.Module, path: Path, patch_size: list[int], batch: int = 2) -> Path:
    """Export ``model`` (fp32, eval) to ``path`` with a dynamic batch axis, atomically; returns ``path``."""
    model = model.float().eval()
    example = _example_inputs(model, patch_size, batch)
    names = ["x", "condition"][: len(example)]
    dynamic = {n: {0: "batch"} for n in [*names, "restored"]}
    with atomic_path(path, ".onnx") as tmp, warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter("ignore")
        legacy = {"dynamo": False} if "dynamo" in inspect.signature(torch.onnx.export).parameters else {}
        torch.onnx.export(model, example, str(tmp), input_names=names, output_names=["restored"],
                          dynamic_axes=dynamic, **legacy)
    return path


def check_against_torch(model: nn.Module, restorer: OnnxRestorer, patch_size: list[int], batch: int = 3) -> float:
    """Max |difference| of the outputs on a seeded batch (other than the export's); raises above the tolerance."""
    example = _example_inputs(model, patch_size, batch, seed=1)
    with torch.no_grad():
        expected = model.float()(*example).float()
    got = restorer(*example)
    diff = float((got - expected).abs().max())
    if not np.isfinite(diff) or diff > CHECK_TOLERANCE:
        raise BackendError(f"the ONNX export {restorer.path} differs from the PyTorch network by {diff:.3g} "
                           f"(> {CHECK_TOLERANCE}): delete it to export again, or use --backend torch")
    return diff


def onnx_restorer(model: nn.Module, fold_folder: Path, checkpoint: str, patch_size: list[int]) -> OnnxRestorer:
    """The fold's cached export for ``checkpoint`` (exported now if missing), checked against PyTorch."""
    _require_onnxruntime()
    path = fold_folder / f"restorer_{checkpoint_digest(fold_folder / checkpoint)}.onnx"
    if not path.is_file():
        try:
            export_onnx(model, path, patch_size)
        except (RuntimeError, ValueError, ImportError, OSError) as e:
            raise BackendError(f"exporting {fold_folder / checkpoint} to ONNX failed ({type(e).__name__}: {e}); "
                               "use --backend torch") from e
    try:
        restorer = OnnxRestorer(path)
    except Exception as e:  # onnxruntime raises its own exception types for unreadable models
        raise BackendError(f"ONNX Runtime cannot load {path} ({type(e).__name__}: {e}): delete it to export again, "
                           "or use --backend torch") from e
    check_against_torch(model, restorer, patch_size)
    return restorer


def _seconds(fn: Any, example: tuple[Tensor, ...]) -> float:
    with torch.no_grad():
        fn(*example)  # warm-up
        times = []
        for _ in range(3):
            t0 = time.perf_counter()
            fn(*example)
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def choose_backend(name: str, device: torch.device, precision: str) -> str:
    """``name`` checked against this run (ONNX Runtime runs on the CPU, in fp32); ``auto`` is resolved per fold."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    if name == "onnxruntime":
        _require_onnxruntime()
        if device.type != "cpu":
            raise BackendError(f"--backend onnxruntime runs on the CPU, but the device is {device}: add --device cpu "
                               "or use --backend torch")
    if name == "auto" and (device.type != "cpu" or not onnxruntime_available()):
        return "torch"
    return name


def restorer_for(name: str, model: nn.Module, fold_folder: Path, checkpoint: str, patch_size: list[int],
                 batch: int, precision: str) -> tuple[Any, str]:
    """``(callable restorer, backend used)`` for one fold; ``auto`` measures both on a batch of ``batch`` patches
    (the torch side in ``precision``) and keeps the faster."""
    if name == "torch":
        return model, "torch"
    restorer = onnx_restorer(model, fold_folder, checkpoint, patch_size)
    if name == "onnxruntime":
        return restorer, "onnxruntime"
    from uadnet.utilities.torch_utils import autocast

    example = _example_inputs(model, patch_size, batch, seed=2)

    def torch_run(*inputs: Tensor) -> Tensor:
        with autocast(torch.device("cpu"), precision):
            return model(*inputs)

    t_torch, t_onnx = _seconds(torch_run, example), _seconds(restorer, example)
    chosen = "onnxruntime" if t_onnx < t_torch else "torch"
    print(f"--backend auto: {fold_folder.name} restorer {t_torch:.3f} s with torch ({precision}), {t_onnx:.3f} s "
          f"with onnxruntime (fp32) per batch of {batch}: using {chosen}")
    return (restorer if chosen == "onnxruntime" else model), chosen
