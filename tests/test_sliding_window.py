"""Sliding-window prediction: importance map, tile placement, Gaussian blending, padding, foreground skipping."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

from uadnet.scoring.sliding_window import gaussian_importance_map, sliding_window_predict, tile_starts


def _volume(shape, seed=0):
    return np.random.default_rng(seed).random(shape, dtype=np.float32)


class CountingIdentity:
    """Identity ``predict`` that records the batch shapes it was given."""

    def __init__(self):
        self.shapes: list[tuple[int, ...]] = []
        self.grad_enabled: list[bool] = []

    def __call__(self, t: torch.Tensor) -> torch.Tensor:
        self.shapes.append(tuple(t.shape))
        self.grad_enabled.append(torch.is_grad_enabled())
        assert t.dtype == torch.float32
        return t.clone()

    @property
    def tiles(self) -> int:
        return sum(s[0] for s in self.shapes)


# ---------------------------------------------------------------- importance map


@pytest.mark.parametrize("patch", [(8, 8), (7, 12), (5, 16, 9), (1, 32, 32), (1, 1)])
def test_importance_map_symmetric_max_one_no_zeros(patch):
    g = gaussian_importance_map(patch)
    assert g.shape == patch and g.dtype == np.float32
    assert g.max() == 1.0 and g.min() > 0
    for axis in range(len(patch)):
        np.testing.assert_array_equal(g, np.flip(g, axis))
    centre = tuple(n // 2 for n in patch)
    assert g[centre] == g.max()
    corner = (0,) * len(patch)
    if min(patch) > 1:
        assert g[corner] < 0.01  # σ = patch / 8: corners at ≈ 4σ per axis


def test_importance_map_tiny_sigma_never_zero():
    g = gaussian_importance_map((64, 64), sigma_scale=0.005)
    assert g.max() == 1.0 and g.min() > 0
    assert np.count_nonzero(g == g.min()) > 100  # underflowed values were replaced by the smallest nonzero one


def test_importance_map_bad_arguments():
    with pytest.raises(ValueError):
        gaussian_importance_map((8, 0))
    with pytest.raises(ValueError):
        gaussian_importance_map((8, 8), sigma_scale=0)


# ---------------------------------------------------------------- tile starts


@pytest.mark.parametrize("image,patch,step", [
    ((160,), (128,), 0.5), ((100,), (50,), 0.5), ((64,), (64,), 0.5), ((65,), (64,), 0.5),
    ((301, 77), (64, 32), 0.5), ((50, 40, 33), (16, 16, 16), 0.25), ((50, 40, 33), (16, 16, 16), 1.0),
    ((13, 9), (5, 9), 0.7),
])
def test_tile_starts_cover_image(image, patch, step):
    starts = tile_starts(image, patch, step)
    assert len(starts) == len(image)
    for axis_starts, i, p in zip(starts, image, patch):
        assert axis_starts[0] == 0 and axis_starts[-1] == i - p
        gaps = np.diff(axis_starts)
        assert np.all(gaps > 0) and np.all(gaps <= step * p + 0.5)  # consecutive tiles overlap ≥ (1 - step) × patch
        expected_n = int(np.ceil((i - p) / (step * p))) + 1
        assert len(axis_starts) == expected_n
        covered = np.zeros(i, bool)
        for s in axis_starts:
            covered[s:s + p] = True
        assert covered.all()


def test_tile_starts_known_values():
    assert tile_starts((160,), (128,), 0.5) == [[0, 32]]
    assert tile_starts((100,), (50,), 0.5) == [[0, 25, 50]]
    assert tile_starts((64, 64), (64, 64), 0.5) == [[0], [0]]
    assert tile_starts((10,), (4,), 0.5) == [[0, 2, 4, 6]]
    assert tile_starts((11,), (4,), 1.0) == [[0, 4, 7]]


def test_tile_starts_bad_arguments():
    with pytest.raises(ValueError, match="must be >= patch_size"):
        tile_starts((10, 5), (8, 8), 0.5)
    with pytest.raises(ValueError, match="dimensionality"):
        tile_starts((10, 10), (8,), 0.5)
    for step in (0, -0.5, 1.01):
        with pytest.raises(ValueError, match="step_size"):
            tile_starts((10,), (8,), step)


# ---------------------------------------------------------------- sliding window prediction

# (volume shape (c, z, y, x), patch): non-divisible sizes, axes smaller than the patch, exact fits
CASES = [
    ((1, 3, 37, 50), (16, 16)),      # 2D, non-divisible
    ((2, 2, 10, 40), (16, 16)),      # 2D, y smaller than the patch
    ((1, 1, 5, 7), (16, 16)),        # 2D, everything smaller
    ((1, 4, 16, 16), (16, 16)),      # 2D, exact fit
    ((1, 21, 30, 19), (8, 16, 8)),   # 3D, non-divisible
    ((2, 5, 30, 9), (8, 16, 8)),     # 3D, z smaller than the patch
    ((1, 3, 4, 5), (8, 8, 8)),       # 3D, everything smaller
]


@pytest.mark.parametrize("shape,patch", CASES)
def test_identity_reproduces_input(shape, patch):
    vol = _volume(shape)
    predict = CountingIdentity()
    out = sliding_window_predict(vol, predict, patch, num_outputs=shape[0], batch_size=3)
    assert out.shape == shape and out.dtype == np.float32
    np.testing.assert_allclose(out, vol, rtol=0, atol=1e-6)
    assert all(s[1:] == (shape[0], *patch) for s in predict.shapes)
    assert all(s[0] <= 3 for s in predict.shapes)
    assert not any(predict.grad_enabled)


@pytest.mark.parametrize("shape,patch", [CASES[0], CASES[4]])
def test_constant_predict_gives_constant(shape, patch):
    vol = _volume(shape)
    exact = sliding_window_predict(vol, lambda t: torch.full_like(t[:, :1], 0.5), patch, num_outputs=1)
    np.testing.assert_array_equal(exact, np.full((1, *shape[1:]), 0.5, np.float32))  # power of 2: exact
    near = sliding_window_predict(vol, lambda t: torch.full_like(t[:, :1], 0.3), patch, num_outputs=1)
    np.testing.assert_allclose(near, 0.3, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape,patch", [CASES[0], CASES[4]])
def test_batch_size_does_not_matter(shape, patch):
    vol = _volume(shape)

    def predict(t):  # non-trivial and tile-dependent, so blending actually mixes different values
        return torch.sigmoid(3 * t - t.mean(dim=tuple(range(1, t.ndim)), keepdim=True))

    one = sliding_window_predict(vol, predict, patch, num_outputs=shape[0], batch_size=1)
    five = sliding_window_predict(vol, predict, patch, num_outputs=shape[0], batch_size=5)
    np.testing.assert_allclose(one, five, rtol=0, atol=1e-6)


def test_2d_batches_mix_slices():
    vol = _volume((1, 5, 20, 20))  # 2 × 2 tiles per slice
    predict = CountingIdentity()
    sliding_window_predict(vol, predict, (16, 16), num_outputs=1, batch_size=6)
    assert [s[0] for s in predict.shapes] == [6, 6, 6, 2]
    assert predict.tiles == 5 * 2 * 2


@pytest.mark.parametrize("patch", [(16, 16), (8, 16, 16)])
def test_foreground_skips_empty_tiles(patch):
    shape = (1, 16, 40, 40)
    vol = _volume(shape)
    fg = np.zeros(shape[1:], bool)
    fg[2:5, 3:9, 4:10] = True  # one small blob in a corner
    starts = tile_starts(shape[1:] if len(patch) == 3 else shape[2:], patch, 0.5)
    tile = patch if len(patch) == 3 else (1, *patch)
    if len(patch) == 2:
        starts = [list(range(shape[1])), *starts]
    all_tiles = list(itertools.product(*starts))
    with_fg = [s for s in all_tiles if fg[tuple(slice(a, a + t) for a, t in zip(s, tile))].any()]
    assert 0 < len(with_fg) < len(all_tiles)

    predict = CountingIdentity()
    out = sliding_window_predict(vol, predict, patch, num_outputs=1, foreground=fg.astype(np.uint8))
    assert predict.tiles == len(with_fg)
    covered = np.zeros(shape[1:], bool)
    for s in with_fg:
        covered[tuple(slice(a, a + t) for a, t in zip(s, tile))] = True
    assert covered[fg].all() and not covered.all()
    assert np.all(out[0][~covered] == 0)
    np.testing.assert_allclose(out[0][covered], vol[0][covered], rtol=0, atol=1e-6)


def test_foreground_empty_predicts_nothing():
    vol = _volume((1, 3, 20, 20))
    predict = CountingIdentity()
    out = sliding_window_predict(vol, predict, (16, 16), num_outputs=2, foreground=np.zeros((3, 20, 20), bool))
    assert predict.tiles == 0 and out.shape == (2, 3, 20, 20) and not out.any()


def test_foreground_with_padding():
    vol = np.zeros((1, 2, 10, 12), np.float32)
    vol[0, :, 2:6, 3:8] = 0.7
    out = sliding_window_predict(vol, CountingIdentity(), (16, 16), num_outputs=1, foreground=vol[0] > 0)
    np.testing.assert_allclose(out, vol, rtol=0, atol=1e-6)


@pytest.mark.parametrize("shape,patch", [CASES[1], CASES[5]])
def test_multiple_outputs(shape, patch):
    vol = _volume(shape)
    scale = torch.tensor([1.0, 2.0, 3.0]).view(1, 3, *([1] * len(patch)))
    out = sliding_window_predict(vol, lambda t: t.mean(1, keepdim=True) * scale, patch, num_outputs=3)
    assert out.shape == (3, *shape[1:])
    mean = vol.mean(0)
    for k in range(3):
        np.testing.assert_allclose(out[k], (k + 1) * mean, rtol=0, atol=1e-5)


def test_output_dtype_and_input_dtype_are_cast():
    vol = _volume((1, 4, 20, 20)).astype(np.float64)
    out = sliding_window_predict(vol, lambda t: t.half(), (16, 16), num_outputs=1, progress=True)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, vol, rtol=0, atol=1e-3)  # float16 resolution


def test_memmap_volume(tmp_path):
    vol = _volume((1, 10, 24, 24))
    np.save(tmp_path / "v.npy", vol)
    mm = np.load(tmp_path / "v.npy", mmap_mode="r")
    out = sliding_window_predict(mm, lambda t: t, (8, 16, 16), num_outputs=1)
    np.testing.assert_allclose(out, vol, rtol=0, atol=1e-6)


def test_bad_arguments_raise():
    vol = _volume((1, 4, 20, 20))
    ident = CountingIdentity()
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_predict(vol, ident, (16,), num_outputs=1)
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_predict(vol, ident, (4, 4, 4, 4), num_outputs=1)
    with pytest.raises(ValueError, match="patch_size"):
        sliding_window_predict(vol, ident, (16, 0), num_outputs=1)
    with pytest.raises(ValueError, match="volume"):
        sliding_window_predict(vol[0], ident, (16, 16), num_outputs=1)
    with pytest.raises(ValueError, match="volume"):
        sliding_window_predict(vol[None], ident, (16, 16), num_outputs=1)
    for step in (0, 1.5, -1):
        with pytest.raises(ValueError, match="step_size"):
            sliding_window_predict(vol, ident, (16, 16), num_outputs=1, step_size=step)
    with pytest.raises(ValueError, match="num_outputs"):
        sliding_window_predict(vol, ident, (16, 16), num_outputs=0)
    with pytest.raises(ValueError, match="batch_size"):
        sliding_window_predict(vol, ident, (16, 16), num_outputs=1, batch_size=0)
    with pytest.raises(ValueError, match="foreground"):
        sliding_window_predict(vol, ident, (16, 16), num_outputs=1, foreground=np.ones((4, 20, 21), bool))
    with pytest.raises(ValueError, match="predict returned shape"):
        sliding_window_predict(vol, ident, (16, 16), num_outputs=2)
    with pytest.raises(TypeError, match="torch.Tensor"):
        sliding_window_predict(vol, lambda t: t.numpy(), (16, 16), num_outputs=1)
