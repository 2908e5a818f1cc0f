"""The Python API: :class:`UadnetPredictor` scores arrays in memory or folders of files with a trained model.

``uadnet_predict`` is a thin layer over it. A model is a model folder (``.../<method>__<plans>__<configuration>``,
e.g. inside ``UADNET_RESULTS`` or installed from a zip) or a model zip (``uadnet_export_model_to_zip``); neither
needs the raw or preprocessed folders nor the UADNET_* variables. A zip is verified (every sha256) and extracted to a
new private temporary folder (``tempfile``, under ``$TMPDIR``), removed by :meth:`UadnetPredictor.close`, at the end
of a ``with`` block, or when the predictor is garbage collected. See ``documentation/python_api.md``.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from uadnet.imageio import BaseReaderWriter
from uadnet.inference.model_zip import extract_model_zip
from uadnet.inference.predictor import PredictionSettings, Predictor
from uadnet.utilities import checkpoints as ckpt

if TYPE_CHECKING:
    from typing import Self  # Python 3.11; only read by type checkers

# what predict_files may change per call; the rest (folds, checkpoint, device, ...) is fixed when the model loads
_PER_RUN = {"num_parts", "part_id", "continue_prediction", "progress_bar", "save_restorations", "save_uncertainty",
            "output_format"}


@dataclass
class CasePrediction:
    """One case scored by :meth:`UadnetPredictor.predict_array`, on the input grid."""

    map: np.ndarray  # (z, y, x) float32 anomaly map
    mask: np.ndarray  # (z, y, x) uint8: map >= voxel_threshold
    restoration: np.ndarray | None  # (c, z, y, x) float32 in the input's intensity units, or None
    score: float  # case score, as calibrated (default: mean of the top 1 % of the map / its median)
    flagged: bool  # score >= case_threshold
    voxel_threshold: float  # calibrated on healthy validation cases at the predictor's fpr
    case_threshold: float
    seconds: dict[str, float]  # preprocessing, scoring, export
    # with_uncertainty: (z, y, x) float32 std over the ensemble's members in map units (inference.uncertainty)
    uncertainty: np.ndarray | None = None
    uncertainty_summary: dict[str, Any] | None = None  # members, mean and p95 inside the foreground and the mask


def properties_from_spacing(spacing_zyx: Sequence[float]) -> dict[str, Any]:
    """The least ``properties`` :meth:`UadnetPredictor.predict_array` needs: ``{"spacing": [z, y, x]}`` in mm, in
    the array's axis order (for a 2D image (c, 1, y, x) the z spacing is any positive number, e.g. 1)."""
    spacing = [float(s) for s in spacing_zyx]
    if len(spacing) != 3 or not all(np.isfinite(s) and s > 0 for s in spacing):
        raise ValueError(f"spacing must be three positive numbers (z, y, x) in mm, got {list(spacing_zyx)}")
    return {"spacing": spacing}


class UadnetPredictor:
    """A loaded model (every fold, its calibration and postprocessing): :meth:`predict_array` for one case in
    memory, :meth:`predict_files` for a folder of raw files (what ``uadnet_predict`` runs)."""

    def __init__(self, settings: PredictionSettings) -> None:
        """Load the model ``settings`` name: ``settings.model_folder`` (a folder or a model zip), else
        ``dataset``/``method``/``plans_name``/``configuration`` inside ``UADNET_RESULTS``."""
        self._tmp: tempfile.TemporaryDirectory | None = None
        self.model_zip: Path | None = None
        if settings.model_folder is not None and Path(settings.model_folder).is_file():
            self.model_zip = Path(settings.model_folder).resolve()
            self._tmp = tempfile.TemporaryDirectory(prefix="uadnet_model_")
            try:
                folder = extract_model_zip(self.model_zip, self._tmp.name)
            except BaseException:
                self.close()
                raise
            settings = replace(settings, model_folder=folder, extra={**settings.extra, "model_zip": str(self.model_zip)})
        try:
            self.predictor = Predictor(settings)
        except BaseException:
            self.close()
            raise

    @classmethod
    def from_model_folder(cls, path: str | os.PathLike, folds: Sequence[str | int] | None = None,
                          device: str | None = None, checkpoint: str = ckpt.FINAL, fpr: float = 0.01,
                          save_restorations: bool = False, save_uncertainty: bool = False,
                          step_size: float | None = None,
                          precision: str | None = None, backend: str = "torch", progress_bar: bool = False,
                          mirror_axes: Sequence[int] | None = None) -> UadnetPredictor:
        """Load a model folder (``<method>__<plans>__<configuration>``) or model zip. ``folds``: default every
        numbered fold with ``checkpoint``; ``device``: ``cpu``, ``cuda``, ``mps`` or ``auto`` (default: the plans');
        ``fpr``: false-positive rate on healthy data of the mask threshold (0.001, 0.01 or 0.05, as calibrated);
        ``save_restorations`` / ``save_uncertainty``: :meth:`predict_files` also writes restorations / uncertainty
        maps (fewer than two ensemble members is refused when predicting); ``mirror_axes``: test-time mirroring
        (default: as calibrated; ``[]`` none, faster, with a warning that the thresholds were calibrated with it)."""
        settings = PredictionSettings(
            input_folder=Path("."), output_folder=Path("."), dataset=None, model_folder=Path(path),
            folds=[str(f) for f in folds] if folds is not None else None, checkpoint=checkpoint, device=device,
            fpr=fpr, save_restorations=save_restorations, save_uncertainty=save_uncertainty, step_size=step_size,
            precision=precision, backend=backend, progress_bar=progress_bar,
            mirror_axes=None if mirror_axes is None else [int(a) for a in mirror_axes])
        return cls(settings)

    # ------------------------------------------------------------------------------------------- facts
    @property
    def method(self) -> str:
        return self.predictor.s.method

    @property
    def plans_name(self) -> str:
        return self.predictor.s.plans_name

    @property
    def configuration(self) -> str:
        return self.predictor.config_name

    @property
    def reader(self) -> BaseReaderWriter:
        """The reader/writer of the model's file type: ``reader.read_images([files])`` gives ``(image,
        properties)`` for :meth:`predict_array`; ``reader.write(result.map, path, properties)`` writes on that grid."""
        return self.predictor.reader

    @property
    def folds(self) -> list[str]:
        return [f.fold for f in self.predictor.folds]

    @property
    def model_folder(self) -> Path:
        return self.predictor.model_folder

    @property
    def channel_names(self) -> dict[str, str]:
        """``{"0": "T1", ...}``: the channels ``image`` must hold, in this order."""
        return dict(self.predictor.plans.channel_names)

    @property
    def voxel_threshold(self) -> float:
        return self.predictor.voxel_threshold

    @property
    def case_threshold(self) -> float:
        return self.predictor.case_threshold

    def describe(self) -> str:
        """One line: every run setting with where it came from (plans, calibration or the caller)."""
        return self.predictor.run_settings.describe()

    # -------------------------------------------------------------------------------------- prediction
    def predict_array(self, image: np.ndarray, properties: dict[str, Any] | None = None, *,
                      spacing: Sequence[float] | None = None, with_restoration: bool = True,
                      with_uncertainty: bool = False) -> CasePrediction:
        """Score one case in memory. ``image``: (c, z, y, x) in the input's intensity units (as the dataset's reader
        returns it; a 2D image is (c, 1, y, x)). ``properties``: the reader's (at least ``spacing`` (z, y, x) in
        mm); or give ``spacing`` instead. Returns map, mask, restoration (``with_restoration``), score, flag and, with
        ``with_uncertainty``, the uncertainty map and its summary (``PredictionError`` with fewer than two members)."""
        if (properties is None) == (spacing is None):
            raise ValueError("give either properties (from the dataset's reader) or spacing (z, y, x in mm)")
        props = properties_from_spacing(spacing) if spacing is not None else properties
        if "spacing" not in props:
            raise ValueError("properties must hold 'spacing' (z, y, x in mm): use properties_from_spacing()")
        image = np.asarray(image, dtype=np.float32)
        channels = len(self.channel_names)
        if image.ndim != 4 or image.shape[0] != channels:
            raise ValueError(f"image must be (c, z, y, x) with c = {channels} channel(s) {self.channel_names}, got "
                             f"shape {image.shape} (a 2D image is (c, 1, y, x))")
        if not np.isfinite(image).all():
            raise ValueError("image holds NaN or Inf values: they cannot be scored")
        result = self.predictor.score_case(image, props, with_restoration, with_uncertainty)
        amap = result["map"].astype(np.float32, copy=False)
        score = float(result["score"])
        return CasePrediction(map=amap, mask=(amap >= self.voxel_threshold).astype(np.uint8),
                              restoration=result.get("restoration"), score=score,
                              flagged=score >= self.case_threshold, voxel_threshold=self.voxel_threshold,
                              case_threshold=self.case_threshold, seconds=result["seconds"],
                              uncertainty=result.get("uncertainty"),
                              uncertainty_summary=result.get("uncertainty_summary"))

    def predict_files(self, input_folder: str | os.PathLike, output_folder: str | os.PathLike,
                      **run: Any) -> int:
        """Predict every case of ``input_folder`` (raw files named like the training images) into
        ``output_folder``, exactly as ``uadnet_predict`` (maps, masks, ``scores.csv``, ``prediction.json``).
        ``run`` may set ``num_parts``, ``part_id``, ``continue_prediction``, ``progress_bar``,
        ``save_restorations``, ``save_uncertainty`` (and ``output_format`` where available). Returns 0, or 1 if a
        case failed."""
        known = {f.name for f in fields(PredictionSettings)}
        if unknown := sorted(set(run) - (_PER_RUN & known)):
            raise TypeError(f"predict_files cannot set {unknown}: choose folds, device and the like when loading "
                            f"the model; per run: {sorted(_PER_RUN & known)}")
        p = self.predictor
        p.s = replace(p.s, input_folder=Path(input_folder), output_folder=Path(output_folder), **run)
        return p.predict_folder()

    # ---------------------------------------------------------------------------------------- clean-up
    def close(self) -> None:
        """Remove the folder a model zip was extracted to (nothing to do for a model folder)."""
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
