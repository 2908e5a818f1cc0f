"""The plans schema: every choice the planner makes, as editable JSON (``uadnet_plans.json``).

Every later stage (preprocessor, trainer, predictor) reads its settings from here and nowhere else, so a
hand edit of the JSON changes the pipeline without touching code. Loading validates the file and names the
offending key. Units: spacings in mm, patch sizes in voxels, axis order ``(z, y, x)`` after
``transpose_forward`` (2D configurations use ``(y, x)`` for patches and ignore the slice-axis spacing).
See ``documentation/plans.md`` for every field.
"""

from __future__ import annotations

import copy
import dataclasses
import os
from dataclasses import dataclass, field
from typing import Any

from uadnet import __version__
from uadnet.scoring.calibration import CASE_SCORE_REDUCTIONS, TOP_FRACTIONS_VS_HEALTHY
from uadnet.scoring.mirroring import check_mirror_axes
from uadnet.utilities.file_io import load_json, save_json
from uadnet.utilities.typed_sections import PlansError, section_from_dict  # both also used from here by plugins

PLANS_FILE = "uadnet_plans.json"  # == paths.DEFAULT_PLANS_NAME + ".json"
FINGERPRINT_FILE = "dataset_fingerprint.json"
SPLITS_FILE = "splits_final.json"


@dataclass
class NormalizationPlan:
    """How one channel is mapped to [0, 1]: ``(x - low) / (high - low)``, then clipped if ``clip``.

    ``percentile``: low/high are the image's own foreground percentiles (MRI-like, any unknown modality).
    ``ct``: low/high are fixed intensities (dataset percentiles, e.g. HU). ``rgb``: low 0, high 255.
    ``none``: low 0, high 1 (data already in [0, 1]).
    ``high_maps_to`` < 1 maps ``high`` below 1 instead, leaving headroom: intensities up to
    ``low + (high − low) / high_maps_to`` (e.g. lesions brighter than the upper percentile) stay distinct after the clip.
    The planner scales the corruption codebook to ``high_maps_to``: to change it, re-plan
    (``uadnet_plan_and_preprocess --high_maps_to V --overwrite_plans``; the fingerprint is reused).
    """

    channel: str
    scheme: str
    lower_percentile: float = 0.0
    upper_percentile: float = 98.0
    low: float | None = None
    high: float | None = None
    clip: bool = True
    high_maps_to: float = 1.0


@dataclass
class ForegroundPlan:
    """Where the body/ROI is. ``method``: ``auto`` (``masksTr`` if given, else ``nonzero`` when at least
    ``min_zero_fraction`` of the voxels are exactly 0, else ``otsu``), or one of ``nonzero``/``otsu``."""

    method: str = "auto"
    use_masks: bool = True
    min_zero_fraction: float = 0.1


@dataclass
class NetworkPlan:
    """UNet topology. ``strides[s]`` is the downsampling entering stage ``s`` (``strides[0]`` all ones)."""

    dim: int
    features_per_stage: list[int]
    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    n_conv_per_stage: int = 2
    norm: str = "group"
    embedding_dim: int = 128


@dataclass
class SizeLaw:
    """"Many tasks" size law per axis, d = the foreground's extent (voxels) along it. ``distribution`` ``gamma``:
    ``clip((offset + Gamma(shape, scale)) * d, min * d, max * d)`` (the reference); ``log_uniform``:
    ``exp(U(log(min * d), log(max * d)))`` (offset and Gamma parameters unused)."""

    offset: float = 0.03
    gamma_shape: float = 2.0
    gamma_scale: float = 0.1
    minimum: float = 0.06
    maximum: float = 0.8
    distribution: str = "gamma"


@dataclass
class TrainingPlan:
    """Optimisation. Training stops at ``iterations`` or after ``time_budget_minutes`` (if set). Every
    ``validation_every`` iterations (one "epoch") the EMA model is validated as ``plans.validation`` says (pixel AP
    picks ``checkpoint_best.pth``)."""

    iterations: int
    time_budget_minutes: float | None
    estimated_seconds_per_iteration: float
    learning_rate: float = 1e-3
    weight_decay: float = 1e-4
    warmup_iterations: int = 500
    lr_schedule: str = "cosine"
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    loss: str = "mse"  # of the restorers (cold diffusion, autoencoder); measured against l1 in benchmarks.md
    validation_every: int = 250
    checkpoint_every: int = 250
    num_workers: int = 2


@dataclass
class ValidationPlan:
    """Validation, postprocessing choice and calibration: up to ``max_cases`` of a fold's held-out healthy cases,
    each also with synthetic anomalies of the corruption family ``corruption`` (default the "many tasks" fold of
    ``tasks``, which no method trains on), drawn once with ``seed``. ``size_law``: the sizes of "many tasks"
    anomalies (null: ``corruption.relative_size_law``, the training law). ``small_anomalies``: each case also gets
    this many small ones (fractal intensity changes when ``tasks`` has them) sized log-uniformly in ``small_size_mm``
    (per axis, mm) where the others are not; validation's choices then weigh the small ones as much as the others
    (the mean of the two classes' AP, :func:`uadnet.scoring.average_precision.class_balanced_ap`); 0: none (plans
    written before them), every anomaly one class."""

    corruption: str = "many_tasks_validation"
    tasks: list[str] = field(default_factory=lambda: ["fractal_intensity", "foreign_patch"])
    max_cases: int = 8
    size_law: SizeLaw | None = None
    seed: int = 0
    small_anomalies: int = 0
    small_size_mm: list[float] = field(default_factory=lambda: [2.0, 8.0])

    def __post_init__(self) -> None:
        if self.small_anomalies < 0 or len(self.small_size_mm) != 2 or \
                not 0 < self.small_size_mm[0] <= self.small_size_mm[1]:
            raise PlansError(f"'validation.small_anomalies' must be >= 0 and 'validation.small_size_mm' [lo, hi] mm "
                             f"with 0 < lo <= hi; got {self.small_anomalies} and {self.small_size_mm}")


@dataclass
class InferencePlan:
    """Sliding window: tiles overlap by ``1 - step_size`` of the patch; Gaussian weight σ = scale × patch.
    ``residual_normalisation_quantile``: after training, maps are divided by this quantile of the healthy validation
    scores of tissue alike in restored intensity and gradient (:mod:`uadnet.postprocessing.residual_normalisation`);
    null turns it off. ``intensity_novelty``: offer the validation choice a term for intensities (colours) rare among
    healthy voxels (:mod:`uadnet.postprocessing.intensity_novelty`); false never adds it. ``coarse_step_size``:
    if set (e.g. 1.0), after training validation also scores with this (faster) step where it places other tiles, and
    prediction uses it unless it loses validation AP (:func:`uadnet.training.validation.choose_step_and_calibrate`).
    ``case_score``: how a map becomes a case score (:class:`uadnet.scoring.calibration.CaseScore`), for the healthy
    validation cases that set the case threshold (and fit its healthy statistics) and for every predicted case.
    ``mirror_axes``: test-time mirroring (patch axes: 2D 0 = y, 1 = x; 3D 0 = z, 1 = y, 2 = x) for the
    postprocessing choice, calibration and prediction (not the periodic validation that picks the best checkpoint):
    the map is the mean over the 2^n mirrorings of n axes, 2^n × the scoring time (``uadnet_predict --disable_tta``
    turns it off, with a warning: the thresholds were calibrated with it); ``[]``: none (plans written before it)."""

    step_size: float = 0.5
    coarse_step_size: float | None = None  # 1.0 measured: case AUROC lower on 4 of 4 photograph models
    gaussian_sigma_scale: float = 0.125
    batch_size: int = 4
    residual_normalisation_quantile: float | None = 0.99
    intensity_novelty: bool = True
    case_score: str = TOP_FRACTIONS_VS_HEALTHY  # top 1 % / 0.01 % over the median vs healthy (benchmarks.md)
    mirror_axes: list[int] = field(default_factory=list)  # planner: every patch axis; checked by ConfigurationPlan

    def __post_init__(self) -> None:
        if not 0 < self.step_size <= 1 or self.coarse_step_size is not None and not \
                self.step_size <= self.coarse_step_size <= 1:
            raise PlansError(f"'inference.step_size' must be in (0, 1] and 'inference.coarse_step_size' in "
                             f"[step_size, 1] or null; got {self.step_size} and {self.coarse_step_size}")
        if self.case_score not in CASE_SCORE_REDUCTIONS:
            raise PlansError(f"'inference.case_score' must be one of {list(CASE_SCORE_REDUCTIONS)}, got "
                             f"'{self.case_score}'")


@dataclass
class ConfigurationPlan:
    """One configuration (``2d`` or ``3d``): geometry, network, training and inference settings."""

    data_identifier: str
    dim: int
    spacing: list[float]
    patch_size: list[int]
    batch_size: int
    median_image_size_in_voxels: list[int]
    network: NetworkPlan
    training: TrainingPlan
    inference: InferencePlan = field(default_factory=InferencePlan)
    resampling_order_data: int = 3
    resampling_order_mask: int = 1
    resample_slice_axis: bool = True

    def __post_init__(self) -> None:
        try:
            check_mirror_axes(self.inference.mirror_axes, self.dim)
        except ValueError as e:
            raise PlansError(f"'inference.mirror_axes' of configuration {self.data_identifier} ({self.dim}D): {e}"
                             ) from None


@dataclass
class CorruptionPlan:
    """Synthetic-anomaly parameters shared by all families, in physical units. ``shape_size_mm``: (min, max) full
    extent of a shape per axis, drawn ``size_distribution`` ``uniform`` or ``log_uniform`` between them.
    ``bias_classes``: DAG's choice of biased tissue classes, ``subset`` or ``reference`` (see ``corruption.dag``);
    ``dag_max_shapes``: DAG places 1 to this many shapes per sample (1: the reference's one); ``dag_small_shapes``:
    DAG adds 0 to this many shapes of ``small_shape_size_mm`` (full extent; 0: none, the reference).
    ``max_anomalies``, ``clean_fraction``: "many tasks" only; DAG and FPI corrupt every sample."""

    shape_size_mm: list[float]
    shape_types: list[str] = field(default_factory=lambda: ["box", "ellipsoid", "blob"])
    edge_sigma_voxels: list[float] = field(default_factory=lambda: [0.0, 5.0])
    edge_smoothing_probability: float = 0.7
    relative_size_law: SizeLaw = field(default_factory=SizeLaw)
    intensity_codebook: list[list[float]] = field(default_factory=list)
    severity_distribution: str = "uniform"
    severity_range: list[float] = field(default_factory=lambda: [0.0, 1.0])
    max_anomalies: int = 4
    clean_fraction: float = 0.2
    bias_blur_sigma_voxels: float = 1.0
    size_distribution: str = "uniform"
    bias_classes: str = "subset"
    dag_max_shapes: int = 1
    dag_small_shapes: int = 0
    small_shape_size_mm: list[float] = field(default_factory=lambda: [2.0, 8.0])


@dataclass
class ColdEnsemblePlan:
    """``cold_ensemble``: DAG corruption; score = mean over ``severities`` of |x - f(x, α_k)|. ``residual``: the
    restorer predicts x̂₀ = x_α + UNet(x_α, α) (starts near the identity: faster learning on a CPU budget).
    ``anomaly_loss_weight`` w: the per-voxel loss is weighted by 1 + w·m (m the corruption mask), normalised by the
    mean weight, so the few corrupted voxels are not drowned by the many clean ones (w = 0: the plain loss)."""

    corruption: str = "dag"
    severities: list[float] = field(default_factory=lambda: [0.2, 0.4, 0.6, 0.8])
    residual: bool = True
    anomaly_loss_weight: float = 10.0


@dataclass
class ColdMultistepPlan:
    """``cold_multistep``: FPI corruption; restore from ``start_severity`` (1, as the reference) to 0 in
    ``num_steps`` steps, clamping to [0, 1] between steps; score = mean residual over the steps; ``residual`` as
    for ``cold_ensemble``."""

    corruption: str = "fpi"
    num_steps: int = 10
    start_severity: float = 1.0
    residual: bool = True
    anomaly_loss_weight: float = 10.0


@dataclass
class ImageConditionedPlan:
    """``image_conditioned`` (Baugh et al.): ε-UNet on ``[x_t, x_c]`` (2·C channels), trained on the "many tasks"
    corruption (``train_tasks``; ``plans.validation.tasks`` are held out) with min-SNR-γ weighting and offset noise. At test
    time ``sampling_steps`` DDIM steps (``eta`` 0 deterministic, 1 ancestral) from pure noise conditioned on the
    test image; ``score`` ``mae`` (|x − x̂|) or ``ssim`` (1 − local SSIM, Gaussian window σ 1.5 voxels). Images
    are mapped from [0, 1] to the DDPM's [−1, 1] inside the method. ``loss``: ``mse`` on ε (or ``l1``)."""

    corruption: str = "many_tasks"
    num_train_timesteps: int = 1000
    beta_schedule: str = "linear"
    beta_start: float = 1e-4
    beta_end: float = 0.02
    sampling_steps: int = 50
    eta: float = 0.0
    min_snr_gamma: float = 1.0
    offset_noise: float = 0.1
    loss: str = "mse"
    score: str = "mae"
    train_tasks: list[str] = field(default_factory=lambda: ["poisson_blend", "sink", "source"])


@dataclass
class SynomalyPlan:
    """``synomaly`` (Bi et al.): unconditional ε-UNet trained to predict Synomaly noise ε + d·(u + o)·M
    (``blur_sigma_voxels``, ``threshold`` in [0, 1] after rescaling, ``offset`` o, ``sign`` d) added by the forward
    process. Test time, per stage k: noise the current image to ``stage_timesteps[min(k, len − 1)]``, one-step x̂₀,
    D = the difference |blur(x) − blur(x̂₀)| (Gaussian σ ``difference_sigma_voxels``, DDPM units [−1, 1]) where it is
    ≥ ``fusion_threshold``, else 0, clipped to [0, 1]; next image = D·x̂₀ + (1 − D)·x. Stop when the count of D > 0
    voxels changes by ≤ ``stop_relative_change`` (relative to max(previous count, ``stop_min_voxel_fraction`` of
    the patch)) or after ``max_stages``. Score = |blur(x) − blur(x̂₀)| of the last stage (σ ``score_sigma_voxels``,
    [0, 1] units). Unlike the reference code, small components of D are not removed before fusion (the shared
    postprocessing removes them from the final map)."""

    corruption: str = "synomaly_noise"
    num_train_timesteps: int = 1000
    beta_schedule: str = "cosine"
    blur_sigma_voxels: float = 3.0
    threshold: float = 175.0 / 255.0
    offset: float = 0.5
    sign: int = 1
    loss: str = "mse"
    stage_timesteps: list[int] = field(default_factory=lambda: [200])
    max_stages: int = 5
    fusion_threshold: float = 0.1
    difference_sigma_voxels: float = 0.8
    score_sigma_voxels: float = 1.1
    stop_relative_change: float = 0.01
    stop_min_voxel_fraction: float = 0.03


@dataclass
class AutoencoderPlan:
    """``autoencoder`` (a baseline, not a uadnet method): a UNet without skip connections trained to reconstruct
    clean patches (no synthetic anomalies); score = |x − AE(x)|, channel mean. ``skip_connections`` true turns it
    into a plain UNet, which learns the identity (documented as a negative control)."""

    corruption: str = "none"
    skip_connections: bool = False


@dataclass
class MethodsPlan:
    cold_ensemble: ColdEnsemblePlan = field(default_factory=ColdEnsemblePlan)
    cold_multistep: ColdMultistepPlan = field(default_factory=ColdMultistepPlan)
    image_conditioned: ImageConditionedPlan = field(default_factory=ImageConditionedPlan)
    synomaly: SynomalyPlan = field(default_factory=SynomalyPlan)
    autoencoder: AutoencoderPlan = field(default_factory=AutoencoderPlan)
    # sections of methods from other packages (entry points ``uadnet.methods``), by method name; each method turns
    # its own into its typed section class (``Method.plugin_section``), with that class's defaults for absent keys
    plugins: dict[str, dict[str, Any]] = field(default_factory=dict)


@dataclass
class ComputePlan:
    """Hardware-dependent choices: ``precision`` ``fp32`` or ``bf16`` (autocast), ``torch.compile``."""

    device: str = "cpu"
    precision: str = "fp32"
    compile: bool = False


@dataclass
class Plans:
    dataset_name: str
    plans_name: str
    file_ending: str
    image_reader_writer: str
    channel_names: dict[str, str]
    transpose_forward: list[int]
    transpose_backward: list[int]
    original_median_spacing: list[float]
    original_median_shape: list[int]
    foreground: ForegroundPlan
    normalization: list[NormalizationPlan]
    configurations: dict[str, ConfigurationPlan]
    default_configuration: str
    corruption: CorruptionPlan
    methods: MethodsPlan = field(default_factory=MethodsPlan)
    validation: ValidationPlan = field(default_factory=ValidationPlan)
    compute: ComputePlan = field(default_factory=ComputePlan)
    uadnet_version: str = __version__  # the uadnet that wrote the plans (outputs record the one that ran)

    def configuration(self, name: str | None = None) -> ConfigurationPlan:
        """The named configuration (default: ``default_configuration``), with a helpful error."""
        name = name or self.default_configuration
        if name not in self.configurations:
            raise PlansError(f"configuration '{name}' is not in the plans of {self.dataset_name}; available: "
                             f"{sorted(self.configurations)}. 3d is only planned for 3D data that is not too "
                             "anisotropic.")
        return self.configurations[name]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Plans:
        return section_from_dict(cls, _migrate(d), "plans")

    def save(self, path: str | os.PathLike) -> None:
        save_json(self.to_dict(), path)

    @classmethod
    def load(cls, path: str | os.PathLike) -> Plans:
        try:
            return cls.from_dict(load_json(path))
        except PlansError as e:
            raise PlansError(f"{path}: {e}. Fix the file by hand or delete it to let the planner rewrite it.") from e


_MOVED_TO_VALIDATION = {"validation_corruption": "corruption", "validation_max_cases": "max_cases",
                        "validation_size_law": "size_law"}


def _migrate(d: dict[str, Any]) -> dict[str, Any]:
    """Plans written before the ``validation`` section: its settings move there from ``configurations.*.training``
    and ``methods.image_conditioned.validation_tasks`` (the first configuration's value wins)."""
    if not isinstance(d, dict) or "validation" in d:
        return d
    d = copy.deepcopy(d)
    validation: dict[str, Any] = {}
    for cfg in (d.get("configurations") or {}).values():
        training = cfg.get("training") if isinstance(cfg, dict) else None
        for old, new in _MOVED_TO_VALIDATION.items():
            if isinstance(training, dict) and old in training:
                validation.setdefault(new, training.pop(old))
    ic = (d.get("methods") or {}).get("image_conditioned")
    if isinstance(ic, dict) and "validation_tasks" in ic:
        validation["tasks"] = ic.pop("validation_tasks")
    if validation:
        d["validation"] = validation
    return d
