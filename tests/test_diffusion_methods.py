"""The noise-based methods (image_conditioned, synomaly) and the autoencoder baseline: filters, scorers with
oracle networks, losses wired to the scheduler, Synomaly noise in training batches, and tiny end-to-end runs
(train → calibrate → predict) including an exact resume."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import SimpleITK as sitk
import torch
from scipy import ndimage

from tests.synthetic import make_dataset, uadnet_folders
from uadnet.cli.plan_and_preprocess import main as plan_main
from uadnet.cli.predict import main as predict_main
from uadnet.cli.train import main as train_main
from uadnet.corruption.registry import build_corruption
from uadnet.corruption.synomaly_noise import synomaly_noise
from uadnet.corruption.transforms import CorruptionTransform
from uadnet.methods import build_method
from uadnet.methods.ddpm import to_model_range
from uadnet.methods.image_conditioned import ImageConditionedScorer
from uadnet.methods.synomaly import SynomalyScorer
from uadnet.networks.ddpm_scheduler import DDPMScheduler
from uadnet.networks.unet import ConditionalUNet
from uadnet.plans import NetworkPlan, SynomalyPlan
from uadnet.scoring.filters import gaussian_blur, ssim_map
from uadnet.training.trainer import Trainer

FAST = ["--precision", "fp32", "-np", "0", "--disable_progress_bar"]


# ----------------------------------------------------------------------------------------------------- filters
@pytest.mark.parametrize("shape,sigma", [((2, 3, 17, 20), 1.1), ((1, 2, 9, 12, 10), 0.8), ((1, 1, 5, 40), 2.0)])
def test_gaussian_blur_matches_scipy(shape, sigma):
    """Mirror padding like scipy's ``mirror``; an axis shorter than the radius is padded like ``nearest``."""
    x = torch.rand(shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    got = gaussian_blur(x, sigma).numpy()
    radius = max(1, int(3 * sigma + 0.5))
    modes = ["mirror" if n > radius else "nearest" for n in shape[2:]]
    for b in range(shape[0]):
        for c in range(shape[1]):
            ref = ndimage.gaussian_filter(x[b, c].numpy(), sigma, mode=modes, truncate=3.0)
            np.testing.assert_allclose(got[b, c], ref, atol=1e-10)
    assert gaussian_blur(x, 0.0) is x


def test_ssim_map_is_one_for_equal_images_and_drops_where_they_differ():
    x = torch.rand(1, 2, 24, 24, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(ssim_map(x, x), torch.ones_like(x), atol=1e-5, rtol=0)
    y = x.clone()
    y[..., 8:14, 8:14] = 1 - y[..., 8:14, 8:14]
    s = ssim_map(x, y)
    assert s[..., 10, 10].max() < 0.5 and s[..., 0, 0].min() > 0.99


# ----------------------------------------------------------------------------------------------------- scorers
def _timestep(s: DDPMScheduler, condition: torch.Tensor) -> torch.Tensor:
    return torch.round(condition * s.num_train_timesteps).long()


def test_image_conditioned_scorer_with_an_oracle_reproduces_a_healthy_target():
    """An ε-model that always denoises towards ``healthy`` makes 50 DDIM steps end exactly there: the
    restoration is ``healthy`` and the score is |x − healthy| — wired to the condition channels and t/T."""
    s = DDPMScheduler(1000, "linear")
    x = torch.rand(2, 2, 16, 12, generator=torch.Generator().manual_seed(0)) * 0.5
    healthy = x.clone()
    healthy[:, :, 4:8, 4:8] = 0.9  # what the oracle "restores"

    def oracle(inp: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        assert inp.shape[1] == 4  # [x_t, x_c]
        torch.testing.assert_close(inp[:, 2:], to_model_range(x))
        return s.predict_eps(inp[:, :2].double(), to_model_range(healthy).double(), _timestep(s, condition)).float()

    out = ImageConditionedScorer(oracle, s, 50)(x)
    assert out.shape == (2, 3, 16, 12)
    torch.testing.assert_close(out[:, 1:], healthy, atol=1e-4, rtol=0)
    torch.testing.assert_close(out[:, :1], (x - healthy).abs().mean(1, keepdim=True), atol=1e-4, rtol=0)
    ssim_out = ImageConditionedScorer(oracle, s, 10, score="ssim")(x)
    assert ssim_out[:, 0, 5, 5].min() > 0.1 and ssim_out[:, 0, 14, 1].max() < ssim_out[:, 0, 5, 5].min()
    with pytest.raises(ValueError, match="score"):
        ImageConditionedScorer(oracle, s, 10, score="psnr")


def _synomaly_scorer(model, s, max_stages=5, **kw) -> SynomalyScorer:
    p = SynomalyPlan(**kw)
    return SynomalyScorer(model, s, p.stage_timesteps, max_stages, p.fusion_threshold, p.difference_sigma_voxels,
                          p.score_sigma_voxels, p.stop_relative_change, p.stop_min_voxel_fraction)


def test_synomaly_scorer_multistage_with_an_oracle():
    """One-step x̂₀ of an oracle is exactly ``healthy``: the fused image's mask is the same at stage 2, so every
    sample stops after 2 stages; the score is the smoothed difference, largest on the lesion."""
    s = DDPMScheduler(1000, "cosine")
    x = torch.full((2, 1, 20, 20), 0.3)
    x[:, :, 6:12, 6:12] = 0.9
    healthy = torch.full_like(x, 0.3)

    def oracle(x_t: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        return s.predict_eps(x_t.double(), to_model_range(healthy).double(), _timestep(s, condition)).float()

    scorer = _synomaly_scorer(oracle, s)
    out = scorer(x)
    torch.testing.assert_close(out[:, 1:], healthy, atol=1e-4, rtol=0)
    expected = (gaussian_blur(x, 1.1) - gaussian_blur(healthy, 1.1)).abs()
    torch.testing.assert_close(out[:, :1], expected, atol=1e-4, rtol=0)
    assert scorer.last_stage_counts == [2, 2]
    assert out[:, 0, 9, 9].min() > 10 * out[:, 0, 0, 0].max()
    one = _synomaly_scorer(oracle, s, max_stages=1)
    one(x)
    assert one.last_stage_counts == [1, 1]
    with pytest.raises(ValueError, match="stage_timesteps"):
        _synomaly_scorer(oracle, s, stage_timesteps=[1000])


def test_synomaly_fusion_and_per_sample_stopping(monkeypatch):
    """Without sampling noise the model sees √ᾱ·(current image): stage 2 must start from D·x̂₀ + (1 − D)·x with
    D the thresholded smoothed difference; a sample whose mask keeps changing runs longer than one that does not."""
    import uadnet.methods.synomaly as ds

    monkeypatch.setattr(ds, "seeded_randn", lambda shape, g, device, dtype: torch.zeros(shape, dtype=dtype))
    s = DDPMScheduler(1000, "cosine")
    x = torch.full((2, 1, 20, 20), 0.3)
    x[0, :, 4:16, 4:16] = 0.9  # sample 0: a lesion the model removes in two steps; sample 1: healthy
    half = x.clone()
    half[0, :, 4:16, 4:10] = 0.3
    healthy = torch.full_like(x, 0.3)
    targets = [half, healthy, healthy, healthy, healthy]
    seen = []

    def model(x_t, condition):
        t = _timestep(s, condition)
        seen.append(x_t / s.alphas_cumprod[t].sqrt().float().reshape(-1, 1, 1, 1))
        target = targets[len(seen) - 1].clone()
        target[1] = x[1]  # the healthy sample is always restored to itself
        return s.predict_eps(x_t.double(), to_model_range(target).double(), t).float()

    scorer = _synomaly_scorer(model, s, max_stages=5)
    out = scorer(x)
    torch.testing.assert_close(seen[0], to_model_range(x), atol=1e-5, rtol=0)
    x0 = to_model_range(half)
    diff = (gaussian_blur(to_model_range(x), 0.8) - gaussian_blur(x0, 0.8)).abs().mean(1, keepdim=True)
    fusion = torch.where(diff >= 0.1, diff, torch.zeros_like(diff)).clamp(max=1)
    assert 0 < fusion[0].mean() and fusion[1].max() == 0
    torch.testing.assert_close(seen[1], fusion * x0 + (1 - fusion) * to_model_range(x), atol=1e-5, rtol=0)
    assert scorer.last_stage_counts == [3, 2]  # the mask grows at stage 2 for sample 0 only
    torch.testing.assert_close(out[:, 1:], torch.stack([healthy[0], x[1]]), atol=1e-4, rtol=0)


# ----------------------------------------------------------------------------------------------------- losses
def _plans(**synomaly) -> SimpleNamespace:
    """Just what the DDPM methods read: their sections and one configuration (duck-typed plans)."""
    from uadnet.plans import ImageConditionedPlan
    configuration = SimpleNamespace(training=SimpleNamespace(loss="l1"))
    return SimpleNamespace(methods=SimpleNamespace(image_conditioned=ImageConditionedPlan(),
                                                   synomaly=SynomalyPlan(**synomaly)),
                           default_configuration="2d", channel_names={"0": "a", "1": "b"},
                           configuration=lambda name=None: configuration)


@pytest.mark.parametrize("loss,expected", [("l1", 6.1 / 14), ("mse", 3.01 / 14), ("l1_mse", 9.11 / 14)])
def test_cold_diffusion_loss_weights_the_corrupted_voxels_exactly(loss, expected):
    """Errors (0.5, −0.5, 0.1, 0) with the first voxel corrupted, w = 10: weights (11, 1, 1, 1), mean 3.5, so the
    loss is Σ w·ℓ(e) / 4 / 3.5 — l1 (5.5 + 0.5 + 0.1) / 14, mse (2.75 + 0.25 + 0.01) / 14, l1_mse their sum."""
    from uadnet.methods.cold_diffusion import ColdDiffusion
    method = SimpleNamespace(cfg=SimpleNamespace(training=SimpleNamespace(loss=loss)),
                             section=SimpleNamespace(anomaly_loss_weight=10.0))
    target = torch.tensor([0.2, 0.6, 0.3, 0.4]).reshape(1, 1, 2, 2)
    error = torch.tensor([0.5, -0.5, 0.1, 0.0]).reshape(1, 1, 2, 2)
    batch = {"data": torch.zeros(1, 1, 2, 2), "severity": torch.zeros(1), "target": target,
             "anomaly_mask": torch.tensor([1.0, 0, 0, 0]).reshape(1, 1, 2, 2)}
    value = ColdDiffusion.loss(method, lambda x, a: target + error, batch)
    torch.testing.assert_close(value, torch.tensor(expected), atol=1e-6, rtol=1e-6)
    with pytest.raises(ValueError, match="l1_mse"):  # an unknown name lists the supported ones
        ColdDiffusion.loss(SimpleNamespace(cfg=SimpleNamespace(training=SimpleNamespace(loss="huber")),
                                           section=method.section), lambda x, a: target, batch)


def test_image_conditioned_loss_is_zero_for_the_true_noise_and_positive_otherwise():
    plans = _plans()
    method = build_method("image_conditioned", plans)
    s = method.scheduler
    g = torch.Generator().manual_seed(0)
    batch = {"target": torch.rand(4, 2, 8, 8, generator=g), "data": torch.rand(4, 2, 8, 8, generator=g)}

    def oracle(inp, condition):
        torch.testing.assert_close(inp[:, 2:], to_model_range(batch["data"]))
        return s.predict_eps(inp[:, :2].double(), to_model_range(batch["target"]).double(),
                             _timestep(s, condition)).float()

    torch.manual_seed(0)
    assert method.loss(oracle, batch).item() < 1e-6
    torch.manual_seed(0)  # a zero model: the loss is the min-SNR-weighted mean square of the (offset) noise drawn
    t = torch.randint(0, 1000, (4,))
    noise = s.offset_noise((4, 2, 8, 8), 0.1)
    expected = (s.min_snr_weights(t, 1.0) * (noise**2).flatten(1).mean(1)).mean()
    torch.manual_seed(0)
    zero = method.loss(lambda inp, c: torch.zeros_like(inp[:, :2]), batch)
    torch.testing.assert_close(zero, expected, atol=1e-6, rtol=1e-5)
    assert bool((s.min_snr_weights(t, 1.0) < 1).any())  # the weighting is active for these timesteps


def test_synomaly_loss_targets_the_batch_noise():
    plans = _plans()
    method = build_method("synomaly", plans)
    s = method.scheduler
    g = torch.Generator().manual_seed(0)
    batch = {"target": torch.rand(3, 1, 8, 8, generator=g), "noise": torch.randn(3, 1, 8, 8, generator=g) + 2.0}

    def oracle(x_t, condition):
        return s.predict_eps(x_t.double(), to_model_range(batch["target"]).double(), _timestep(s, condition)).float()

    assert method.loss(oracle, batch).item() < 1e-6
    zero = method.loss(lambda x_t, c: torch.zeros_like(x_t), batch).item()
    assert zero == pytest.approx(float((batch["noise"] ** 2).mean()), rel=1e-5)
    with pytest.raises(ValueError, match="synomaly_noise"):
        method.loss(oracle, {"target": batch["target"]})


def test_synomaly_training_noise_in_a_2d_batch():
    plans = _plans(sign=-1, offset=0.75)
    transform = CorruptionTransform(build_corruption("synomaly_noise", plans), spacing=(1.0, 1.0), seed=5)
    data = np.random.default_rng(0).random((3, 2, 32, 28), dtype=np.float32)
    fg = np.zeros((3, 1, 32, 28), np.uint8)
    fg[:, :, 4:28, 4:24] = 1
    out = transform(data=data.copy(), foreground=fg, batch_index=7)
    np.testing.assert_array_equal(out["data"], data)  # the image stays clean; the noise carries the anomaly
    assert out["noise"].shape == data.shape and out["noise"].dtype == np.float32
    rng = np.random.default_rng([5, 7])
    for i in range(3):  # sample i is exactly the reference Synomaly noise drawn with the batch's generator
        eps_syn, m = synomaly_noise((2, 1, 32, 28), fg[i, 0][None] > 0, rng, 3.0, 175 / 255, 0.75, -1)
        np.testing.assert_array_equal(out["noise"][i], eps_syn[:, 0])
        np.testing.assert_array_equal(out["anomaly_mask"][i, 0], m[0])
        assert (out["anomaly_mask"][i, 0][fg[i, 0] == 0] == 0).all()


def test_structured_noise_for_only_some_samples_is_refused():
    from uadnet.corruption.base import Corrupted

    calls = []

    def sometimes(image, foreground, rng, spacing):
        calls.append(1)
        noise = np.zeros_like(image) if len(calls) == 2 else None  # only the second sample carries noise
        return Corrupted(image.copy(), np.zeros(image.shape[1:], np.float32), 0.0, noise=noise)

    with pytest.raises(ValueError, match="1 of 3 samples"):
        CorruptionTransform(sometimes, spacing=(1.0, 1.0), seed=0)(data=np.zeros((3, 1, 8, 8), np.float32))


def test_autoencoder_has_no_skip_connections():
    plan = NetworkPlan(dim=2, features_per_stage=[8, 16, 32], kernel_sizes=[[3, 3]] * 3,
                       strides=[[1, 1], [2, 2], [2, 2]])
    ae = ConditionalUNet(2, 2, plan, condition=False, skip_connections=False)
    unet = ConditionalUNet(2, 2, plan, condition=False)
    x = torch.rand(2, 2, 16, 20)
    assert ae(x).shape == x.shape
    assert sum(p.numel() for p in ae.parameters()) < sum(p.numel() for p in unet.parameters())
    # the decoder sees only the upsampled features, not the encoder's (half the input channels of the UNet's)
    def first_conv(stage):
        return next(m for m in stage.modules() if isinstance(m, torch.nn.Conv2d))
    assert [first_conv(d).in_channels for d in ae.decoder] == [16, 8]
    assert [first_conv(d).in_channels for d in unet.decoder] == [32, 16]


# ----------------------------------------------------------------------------------------------------- end to end
@pytest.fixture(scope="module")
def env(tmp_path_factory):
    with uadnet_folders(tmp_path_factory, "diffusion") as folders:
        make_dataset(folders["UADNET_RAW"], dataset_id=1, kind="3d_iso", n_cases=6, n_test=2, seed=3)
        assert plan_main(["-d", "1", "-np", "1", "--disable_progress_bar", "--device", "cpu"]) == 0
        # these tests are about the methods' pipelines: no test-time mirroring (it multiplies their sampling cost
        # by 4 in 2D, 8 in 3D; tests/test_mirroring.py tests it)
        plans_file = folders["UADNET_PREPROCESSED"] / "Dataset001_3d_iso" / "uadnet_plans.json"
        plans = json.loads(plans_file.read_text(encoding="utf-8"))
        for cfg in plans["configurations"].values():
            cfg["inference"]["mirror_axes"] = []
        plans_file.write_text(json.dumps(plans, indent=2), encoding="utf-8")
        yield folders


def _fold(results: Path, method: str, cfg: str = "2d") -> Path:
    return results / "Dataset001_3d_iso" / f"{method}__uadnet_plans__{cfg}" / "fold_0"


def _load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


@pytest.mark.parametrize("method,cfg", [("image_conditioned", "2d"), ("synomaly", "2d"), ("synomaly", "3d"),
                                        ("autoencoder", "2d")])
def test_train_calibrate_and_predict_valid_maps(results, env, tmp_path, method, cfg):
    assert train_main(["1", "0", "-m", method, "-c", cfg, "--iterations", "4", "--validation_every", "4",
                       *FAST]) == 0
    fold = _fold(results, method, cfg)
    calibration = json.loads((fold / "calibration.json").read_text(encoding="utf-8"))
    assert calibration["voxel_thresholds"] and (fold / "postprocessing.json").is_file()
    inp = next(env["UADNET_RAW"].glob("Dataset001_*")) / "imagesTs"
    outs = []
    for k in range(2):  # seeded sampling noise: predicting twice gives identical maps
        out = tmp_path / f"out{k}"
        assert predict_main(["-i", str(inp), "-o", str(out), "-d", "1", "-m", method, "-c", cfg,
                             "--save_restorations", "--disable_progress_bar", "--precision", "fp32"]) == 0
        outs.append(out)
    threshold = json.loads((outs[0] / "prediction.json").read_text(encoding="utf-8"))["voxel_threshold"]
    for case in ("test_000", "test_001"):
        ref = sitk.ReadImage(str(inp / f"{case}_0000.nii.gz"))
        amap = sitk.ReadImage(str(outs[0] / f"{case}.nii.gz"))
        assert amap.GetSize() == ref.GetSize()
        a = sitk.GetArrayFromImage(amap)
        assert a.dtype == np.float32 and np.isfinite(a).all() and a.min() >= 0 and a.max() > 0
        mask = sitk.GetArrayFromImage(sitk.ReadImage(str(outs[0] / f"{case}_mask.nii.gz")))
        np.testing.assert_array_equal(mask, a >= threshold)
        again = sitk.GetArrayFromImage(sitk.ReadImage(str(outs[1] / f"{case}.nii.gz")))
        np.testing.assert_array_equal(a, again)
        assert (outs[0] / f"{case}_restoration_0000.nii.gz").is_file()


@pytest.mark.parametrize("method", ["image_conditioned", "synomaly"])
def test_killed_and_resumed_run_equals_an_uninterrupted_one(results, monkeypatch, method):
    args = ["1", "0", "-m", method, "--iterations", "6", "--checkpoint_every", "2", "--validation_every", "6",
            "--no_calibration", "--seed", "2", *FAST]
    assert train_main(args) == 0
    reference = _load(_fold(results, method) / "checkpoint_final.pth")
    shutil.rmtree(results)
    original = Trainer._step

    def dies_at_5(self, batch, it):
        if it == 5:
            raise SystemError("simulated kill")
        return original(self, batch, it)

    with monkeypatch.context() as mp:
        mp.setattr(Trainer, "_step", dies_at_5)
        with pytest.raises(SystemError):
            train_main(args)
    assert _load(_fold(results, method) / "checkpoint_latest.pth")["iteration"] == 4
    assert train_main([*args, "--c"]) == 0
    got = _load(_fold(results, method) / "checkpoint_final.pth")
    assert got["iteration"] == reference["iteration"] == 6
    for k, v in reference["network"].items():
        torch.testing.assert_close(got["network"][k], v, atol=1e-6, rtol=0)
