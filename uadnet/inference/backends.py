"""Inference backends for a fold's restorer: PyTorch, or an ONNX export run by ONNX Runtime or OpenVINO on the CPU.

``uadnet_predict --backend torch|onnxruntime|openvino|auto``. The restorer is the only part that changes: the
method's scorer, the sliding window, postprocessing and export are the same for every backend, because an exported
restorer (:class:`OnnxRestorer`, :class:`OpenVinoRestorer`) is called exactly like the network
(``restorer(x, condition)``: x (b, c, *patch) float32, condition (b,) float32 — severity or normalised timestep;
the autoencoder takes x only). The ONNX export is made once per checkpoint and cached beside it
(``restorer_<sha256 of the checkpoint, 16 hex>.onnx``, written atomically); both runtimes read that file, and each
is checked against PyTorch on the same inputs before it is used (fp32: max |difference| ≤ ``CHECK_TOLERANCE``).
``auto`` times every available backend on this machine (a batch of the plans' size, median of 3) and uses the
fastest, saying which. Precision: ONNX Runtime runs fp32; OpenVINO runs ``--precision`` (fp32, or bf16 where the
CPU has it: then checked against PyTorch within ``BF16_CHECK_TOLERANCE``); torch runs ``--precision``. Both
runtimes are optional: ``pip install -e ".[deploy]"``.
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

BACKENDS = ("torch", "onnxruntime", "openvino", "auto")
EXPORTED = ("onnxruntime", "openvino")  # the backends that run the ONNX export
CHECK_TOLERANCE = 1e-4  # max |export − torch| of the restorer's output on the check batch (fp32, [0, 1] images)
BF16_CHECK_TOLERANCE = 0.05  # the same for OpenVINO in bf16 (8 mantissa bits): catches a wrong graph, not rounding
DEPLOY_HINT = ('install the deployment extra (pip install -e ".[deploy]": onnxruntime, openvino, onnx) or use '
               '--backend torch')


class BackendError(RuntimeError):
    """A backend cannot be used here; the message says why and what to do."""


def backend_available(name: str) -> bool:
    """Whether the runtime package of ``name`` (``onnxruntime``, ``openvino``; torch always) can be imported."""
    if name == "torch":
        return True
    try:
        _require(name)
    except BackendError:
        return False
    return True


def onnxruntime_available() -> bool:
    return backend_available("onnxruntime")


def _require(name: str) -> Any:
    """The runtime module of backend ``name``, or a :class:`BackendError` naming the extra that installs it."""
    try:
        if name == "openvino":
            import openvino
            return openvino
        import onnxruntime
        return onnxruntime
    except ImportError:
        raise BackendError(f"--backend {name} needs the {name} package, which is not installed: {DEPLOY_HINT}") from None


def _require_onnxruntime() -> Any:
    return _require("onnxruntime")


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


class _ExportedRestorer:
    """Called like the network: ``restorer(x, condition) -> Tensor`` (on x's device); subclasses run the ONNX
    file with their runtime (:meth:`_run`: float32 arrays in input order → the output array)."""

    backend = ""
    precision = "fp32"

    def __init__(self, path: Path) -> None:
        self.path = path
        self.inputs: list[str] = []

    def _run(self, feeds: list[np.ndarray]) -> np.ndarray:
        raise NotImplementedError

    def __call__(self, *args: Any) -> Tensor:
        x = args[0]
        feeds = [x.detach().float().cpu().numpy()]
        if len(self.inputs) > 1:
            cond = args[1]
            cond = torch.full((x.shape[0],), float(cond)) if not isinstance(cond, Tensor) else cond
            feeds.append(cond.detach().float().cpu().numpy().reshape(x.shape[0]))
        return torch.from_numpy(np.array(self._run(feeds), dtype=np.float32, copy=True)).to(x.device)

    def eval(self) -> _ExportedRestorer:  # the scorers treat it like a network in eval mode
        return self


class OnnxRestorer(_ExportedRestorer):
    """The export run by an ONNX Runtime session (CPU, fp32)."""

    backend = "onnxruntime"

    def __init__(self, path: Path, threads: int | None = None) -> None:
        super().__init__(path)
        ort = _require("onnxruntime")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        self.inputs = [i.name for i in self.session.get_inputs()]

    def _run(self, feeds: list[np.ndarray]) -> np.ndarray:
        return self.session.run(None, dict(zip(self.inputs, feeds)))[0]


class OpenVinoRestorer(_ExportedRestorer):
    """The export compiled by OpenVINO for the CPU, in ``precision`` (fp32 or bf16: OpenVINO's
    ``INFERENCE_PRECISION_HINT``; without the hint it would pick bf16 by itself on CPUs that have it)."""

    backend = "openvino"

    def __init__(self, path: Path, precision: str = "fp32", threads: int | None = None) -> None:
        super().__init__(path)
        ov = _require("openvino")
        self.precision = precision
        config = {"INFERENCE_PRECISION_HINT": "bf16" if precision == "bf16" else "f32",
                  "INFERENCE_NUM_THREADS": int(threads or torch.get_num_threads())}
        self.compiled = ov.Core().compile_model(str(path), "CPU", config)
        self.inputs = [i.get_any_name() for i in self.compiled.inputs]
        self.request = self.compiled.create_infer_request()

    def _run(self, feeds: list[np.ndarray]) -> np.ndarray:
        self.request.infer(feeds)
        return self.request.get_output_tensor(0).data


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


def check_against_torch(model: nn.Module, restorer: _ExportedRestorer, patch_size: list[int], batch: int = 3) -> float:
    """Max |difference| of the outputs on a seeded batch (other than the export's); raises above the tolerance
    of the restorer's precision."""
    example = _example_inputs(model, patch_size, batch, seed=1)
    with torch.no_grad():
        expected = model.float()(*example).float()
    got = restorer(*example)
    diff = float((got - expected).abs().max())
    tolerance = BF16_CHECK_TOLERANCE if restorer.precision == "bf16" else CHECK_TOLERANCE
    if not np.isfinite(diff) or diff > tolerance:
        raise BackendError(f"the ONNX export {restorer.path} run by {restorer.backend} ({restorer.precision}) differs "
                           f"from the PyTorch network by {diff:.3g} (> {tolerance}): delete it to export again, or use "
                           "--backend torch")
    return diff


def exported_restorer(name: str, model: nn.Module, fold_folder: Path, checkpoint: str, patch_size: list[int],
                      precision: str = "fp32") -> _ExportedRestorer:
    """The fold's cached export for ``checkpoint`` (exported now if missing), run by backend ``name``
    (``onnxruntime``: fp32; ``openvino``: ``precision``), checked against PyTorch."""
    _require(name)
    path = fold_folder / f"restorer_{checkpoint_digest(fold_folder / checkpoint)}.onnx"
    if not path.is_file():
        try:
            export_onnx(model, path, patch_size)
        except (RuntimeError, ValueError, ImportError, OSError) as e:
            raise BackendError(f"exporting {fold_folder / checkpoint} to ONNX failed ({type(e).__name__}: {e}); "
                               "use --backend torch") from e
    try:
        restorer = OpenVinoRestorer(path, precision) if name == "openvino" else OnnxRestorer(path)
    except Exception as e:  # the runtimes raise their own exception types for unreadable models
        raise BackendError(f"{name} cannot load {path} ({type(e).__name__}: {e}): delete it to export again, or use "
                           "--backend torch") from e
    check_against_torch(model, restorer, patch_size)
    return restorer


def onnx_restorer(model: nn.Module, fold_folder: Path, checkpoint: str, patch_size: list[int]) -> OnnxRestorer:
    """The fold's export run by ONNX Runtime (see :func:`exported_restorer`)."""
    return exported_restorer("onnxruntime", model, fold_folder, checkpoint, patch_size)  # type: ignore[return-value]


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
    """``name`` checked against this run (the exported backends run on the CPU); ``auto`` is resolved per fold."""
    if name not in BACKENDS:
        raise BackendError(f"unknown backend '{name}'; choose one of {', '.join(BACKENDS)}")
    if name in EXPORTED:
        _require(name)
        if device.type != "cpu":
            raise BackendError(f"--backend {name} runs on the CPU, but the device is {device}: add --device cpu "
                               "or use --backend torch")
    if name == "auto" and (device.type != "cpu" or not any(backend_available(b) for b in EXPORTED)):
        return "torch"
    return name


def restorer_for(name: str, model: nn.Module, fold_folder: Path, checkpoint: str, patch_size: list[int],
                 batch: int, precision: str) -> tuple[Any, str]:
    """``(callable restorer, backend used)`` for one fold; ``auto`` measures every available backend on a batch
    of ``batch`` patches (torch and OpenVINO in ``precision``, ONNX Runtime in fp32) and keeps the fastest."""
    if name == "torch":
        return model, "torch"
    if name in EXPORTED:
        return exported_restorer(name, model, fold_folder, checkpoint, patch_size, precision), name
    from uadnet.utilities.torch_utils import autocast

    example = _example_inputs(model, patch_size, batch, seed=2)

    def torch_run(*inputs: Tensor) -> Tensor:
        with autocast(torch.device("cpu"), precision):
            return model(*inputs)

    candidates: dict[str, Any] = {"torch": model}
    for b in EXPORTED:
        if backend_available(b):
            candidates[b] = exported_restorer(b, model, fold_folder, checkpoint, patch_size, precision)
    times = {b: _seconds(torch_run if b == "torch" else r, example) for b, r in candidates.items()}
    chosen = min(times, key=times.get)
    listing = ", ".join(f"{t:.3f} s with {b} ({getattr(candidates[b], 'precision', precision)})"
                        for b, t in times.items())
    print(f"--backend auto: {fold_folder.name} restorer {listing} per batch of {batch}: using {chosen}")
    return candidates[chosen], chosen
