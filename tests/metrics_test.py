"""Tests for dada_jax.metrics (PSNR / SSIM) and dada_jax.sidd (.mat blocks)."""

import math

import numpy as np
import pytest
import scipy.io
import scipy.ndimage
import torch
import torch.nn.functional as F

from dada_jax import config_lib
from dada_jax import metrics
from dada_jax import sidd

WINDOWS = metrics.SSIM_WINDOWS


def _pair(shape=(24, 20, 3), sigma=12.0, seed=0):
  """A random uint8 target and a noisy uint8 'restored' version of it."""
  rng = np.random.default_rng(seed)
  target = rng.integers(0, 256, shape, dtype=np.uint8)
  noisy = np.clip(np.round(target + rng.normal(0.0, sigma, shape)), 0, 255)
  return noisy.astype(np.uint8), target


def _gauss_torch(size=11, sigma=1.5):
  x = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
  g = torch.exp(-x**2 / (2 * sigma**2))
  return g / g.sum()


def _ssim_from_means(mean, a, b, cov_norm=1.0):
  c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
  m1, m2 = mean(a), mean(b)
  v1 = cov_norm * (mean(a * a) - m1**2)
  v2 = cov_norm * (mean(b * b) - m2**2)
  v12 = cov_norm * (mean(a * b) - m1 * m2)
  return ((2 * m1 * m2 + c1) * (2 * v12 + c2) /
          ((m1**2 + m2**2 + c1) * (v1 + v2 + c2))).mean().item()


def _torch_ssim(a, b, window):
  """Independent SSIM with torch float64 conv2d / avg_pool2d / conv3d."""
  a = torch.from_numpy(np.asarray(a, np.float64))
  b = torch.from_numpy(np.asarray(b, np.float64))
  g = _gauss_torch()
  if window == "matlab3d":
    k3 = g[:, None, None] * g[None, :, None] * g[None, None, :]

    def mean3(x):
      x = F.pad(x[None, None], (5,) * 6, mode="replicate")
      return F.conv3d(x, k3[None, None])[0, 0]

    return _ssim_from_means(mean3, a, b)
  per_channel = []
  for c in range(a.shape[-1]):
    x, y = a[None, None, :, :, c], b[None, None, :, :, c]
    if window == "gaussian11":
      mean = lambda t: F.conv2d(t, torch.outer(g, g)[None, None])
      per_channel.append(_ssim_from_means(mean, x, y))
    else:
      mean = lambda t: F.avg_pool2d(t, 7, stride=1)
      per_channel.append(_ssim_from_means(mean, x, y, 49 / 48))
  return float(np.mean(per_channel))


def _loop_ssim_gaussian(a, b):
  """Slow SSIM of 2-D float64 images with explicit 11x11 weighted windows."""
  r = np.arange(11) - 5.0
  w = np.exp(-(r[:, None]**2 + r[None, :]**2) / (2 * 1.5**2))
  w /= w.sum()
  c1, c2 = (0.01 * 255)**2, (0.03 * 255)**2
  vals = []
  for i in range(a.shape[0] - 10):
    for j in range(a.shape[1] - 10):
      pa, pb = a[i:i + 11, j:j + 11], b[i:i + 11, j:j + 11]
      ma, mb = np.sum(w * pa), np.sum(w * pb)
      va, vb = np.sum(w * (pa - ma)**2), np.sum(w * (pb - mb)**2)
      cov = np.sum(w * (pa - ma) * (pb - mb))
      vals.append((2 * ma * mb + c1) * (2 * cov + c2) /
                  ((ma**2 + mb**2 + c1) * (va + vb + c2)))
  return float(np.mean(vals))


def _y(img):
  img = np.asarray(img, np.float64) / 255.0
  return (16.0 + 65.481 * img[..., 0] + 128.553 * img[..., 1] +
          24.966 * img[..., 2])[..., None]


def test_value_ranges_match_config_lib():
  assert metrics.VALUE_RANGES == config_lib.VALUE_RANGES


@pytest.mark.parametrize("offsets", [(1, 1, 1), (2, 2, 2), (1, 2, 3)])
def test_psnr_known_value_constant_offset(offsets):
  rng = np.random.default_rng(1)
  target = rng.integers(0, 250, (16, 12, 3), dtype=np.uint8)
  restored = target + np.array(offsets, np.uint8)
  mse = np.mean(np.square(offsets))
  expected = 10 * math.log10(255**2 / mse)
  assert metrics.psnr(restored, target) == pytest.approx(expected, abs=1e-10)
  as_float = (restored / 255.0).astype(np.float32)
  assert metrics.psnr(as_float, target, value_range="zero_one") == (
      pytest.approx(expected, abs=1e-10))


def test_psnr_identical_is_inf():
  a, _ = _pair()
  assert metrics.psnr(a, a.copy()) == math.inf
  assert metrics.psnr(a, a, y_channel=True) == math.inf


def test_y_channel_known_colours():
  colours = np.array([[[255, 255, 255], [0, 0, 0], [255, 0, 0],
                       [0, 255, 0], [0, 0, 255]]], np.float64)
  y = metrics.rgb_to_y(colours)[0, :, 0]
  np.testing.assert_allclose(y, [235.0, 16.0, 16 + 65.481, 16 + 128.553,
                                 16 + 24.966], atol=1e-9)
  white = np.full((12, 12, 3), 255, np.uint8)
  black = np.zeros((12, 12, 3), np.uint8)
  assert metrics.psnr(white, black, y_channel=True) == pytest.approx(
      10 * math.log10(255**2 / 219**2), abs=1e-9)
  # PSNR on Y equals PSNR of the independently computed luma planes.
  a, b = _pair()
  assert metrics.psnr(a, b, y_channel=True) == pytest.approx(
      10 * math.log10(255**2 / np.mean((_y(a) - _y(b))**2)), abs=1e-9)


@pytest.mark.parametrize("window", WINDOWS)
def test_ssim_identical_is_one_and_decreases_with_noise(window):
  target = _pair()[1]
  assert metrics.ssim(target, target, window=window) == pytest.approx(
      1.0, abs=1e-12)
  values = [metrics.ssim(_pair(sigma=s)[0], target, window=window)
            for s in (2.0, 8.0, 32.0)]
  assert 1.0 > values[0] > values[1] > values[2] > 0.0


@pytest.mark.parametrize("window", WINDOWS)
@pytest.mark.parametrize("y_channel", [False, True])
def test_ssim_matches_torch_reference(window, y_channel):
  a, b = _pair(shape=(29, 23, 3))
  got = metrics.ssim(a, b, window=window, y_channel=y_channel)
  if y_channel:
    a, b = _y(a), _y(b)
  assert got == pytest.approx(_torch_ssim(a, b, window), abs=1e-12)


def test_ssim_gaussian_matches_explicit_window_loop():
  a, b = _pair(shape=(15, 14, 1), sigma=20.0, seed=3)
  want = _loop_ssim_gaussian(a[..., 0].astype(np.float64),
                             b[..., 0].astype(np.float64))
  assert metrics.ssim(a, b) == pytest.approx(want, abs=1e-12)


def test_ssim_uniform7_matches_skimage_algorithm():
  # skimage: scipy uniform_filter (reflect), sample covariance, crop 3.
  a, b = _pair(shape=(20, 17, 3), seed=4)
  vals = []
  for c in range(3):
    x, y = a[..., c].astype(np.float64), b[..., c].astype(np.float64)
    mean = lambda t: scipy.ndimage.uniform_filter(t, size=7)
    c1, c2, n = (0.01 * 255)**2, (0.03 * 255)**2, 49 / 48
    ux, uy = mean(x), mean(y)
    vx, vy = n * (mean(x * x) - ux * ux), n * (mean(y * y) - uy * uy)
    vxy = n * (mean(x * y) - ux * uy)
    s = ((2 * ux * uy + c1) * (2 * vxy + c2) /
         ((ux**2 + uy**2 + c1) * (vx + vy + c2)))
    vals.append(s[3:-3, 3:-3].mean())
  assert metrics.ssim(a, b, window="uniform7") == pytest.approx(
      np.mean(vals), abs=1e-12)


@pytest.mark.parametrize("window", WINDOWS)
def test_crop_border_removes_border_differences(window):
  target = _pair(shape=(30, 28, 3))[1]
  restored = target.copy()
  restored[:4] = 255 - restored[:4]
  restored[:, -4:] = 0
  assert metrics.psnr(restored, target, crop_border=4) == math.inf
  assert metrics.ssim(restored, target, crop_border=4,
                      window=window) == pytest.approx(1.0, abs=1e-12)
  assert metrics.psnr(restored, target, crop_border=3) < 30.0
  ssims = [metrics.ssim(restored, target, crop_border=c, window=window)
           for c in (0, 3)]
  assert ssims[0] < ssims[1] < 1.0 - 1e-6


@pytest.mark.parametrize("preset", sorted(metrics.PRESETS))
def test_uint8_and_float_value_ranges_agree(preset):
  a, b = _pair()
  want = metrics.evaluate_pair(a, b, preset)
  zero_one = [(x / 255.0).astype(np.float32) for x in (a, b)]
  minus_one_one = [(x / 127.5 - 1.0).astype(np.float32) for x in (a, b)]
  got01 = metrics.evaluate_pair(*zero_one, preset, "zero_one")
  got11 = metrics.evaluate_pair(*minus_one_one, preset, "minus_one_one")
  if metrics.PRESETS[preset].quantize:
    assert got01 == want and got11 == want
  else:  # Unquantised floats carry float32 rounding of k/255.
    for got in (got01, got11):
      assert got == pytest.approx(want, rel=1e-6)
  mixed = metrics.evaluate_pair(zero_one[0], b, preset, "zero_one",
                                quantize=True)
  assert mixed == metrics.evaluate_pair(a, b, preset, quantize=True)


@pytest.mark.parametrize("value_range", ["zero_one", "minus_one_one"])
def test_inputs_are_clipped_to_the_value_range(value_range):
  lo, hi = metrics.VALUE_RANGES[value_range]
  rng = np.random.default_rng(5)
  target = rng.uniform(lo, hi, (16, 16, 3))
  restored = rng.uniform(lo - 0.3, hi + 0.3, (16, 16, 3))
  for quantize in (True, False):
    for f in (metrics.psnr, metrics.ssim):
      kw = dict(value_range=value_range, quantize=quantize)
      assert f(restored, target, **kw) == f(np.clip(restored, lo, hi), target,
                                            **kw)


def test_quantize_rounds_to_8_bit():
  target = np.random.default_rng(6).integers(0, 255, (16, 16, 3),
                                             dtype=np.uint8)
  restored = (target + 0.4) / 255.0
  assert metrics.psnr(restored, target, value_range="zero_one") == math.inf
  assert metrics.psnr(restored, target, value_range="zero_one",
                      quantize=False) == pytest.approx(
                          10 * math.log10(255**2 / 0.16), abs=1e-6)


def test_evaluate_pair_uses_the_preset():
  a, b = _pair(shape=(32, 32, 3))
  for name, p in metrics.PRESETS.items():
    got = metrics.evaluate_pair(a, b, name)
    kw = dict(crop_border=p.crop_border, y_channel=p.y_channel)
    assert got == {"psnr": metrics.psnr(a, b, **kw),
                   "ssim": metrics.ssim(a, b, window=p.ssim_window, **kw)}
  assert metrics.PRESETS["y"].y_channel
  assert metrics.PRESETS["y_crop4"].crop_border == 4
  assert metrics.PRESETS["skimage_rgb"].ssim_window == "uniform7"
  assert not metrics.PRESETS["sidd_matlab"].quantize


def test_metric_argument_errors():
  a, b = _pair()
  f = a / 255.0
  with pytest.raises(ValueError, match="shapes differ"):
    metrics.psnr(a, b[:-1])
  with pytest.raises(ValueError, match="value_range"):
    metrics.psnr(f, f)
  with pytest.raises(ValueError, match="value_range"):
    metrics.ssim(f, f, value_range="zero_255")
  with pytest.raises(TypeError, match="uint8"):
    metrics.psnr(a.astype(np.int16), b)
  with pytest.raises(ValueError, match="y_channel"):
    metrics.psnr(a[..., :1], b[..., :1], y_channel=True)
  with pytest.raises(ValueError, match="at least"):
    metrics.ssim(a[:10], b[:10])
  with pytest.raises(ValueError, match="window"):
    metrics.ssim(a, b, window="box")
  with pytest.raises(ValueError, match="crop_border"):
    metrics.psnr(a, b, crop_border=10)
  with pytest.raises(ValueError, match="unknown metrics preset"):
    metrics.evaluate_pair(a, b, "psnr_y")


def _blocks(shape=(2, 3, 16, 16, 3), seed=7):
  return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.mark.parametrize("key", sidd.KNOWN_KEYS)
def test_sidd_read_blocks_round_trip(tmp_path, key):
  blocks = _blocks()
  path = tmp_path / f"{key}.mat"
  scipy.io.savemat(path, {key: blocks})
  for k in (None, key):
    got = sidd.read_blocks(path, key=k)
    assert got.dtype == np.uint8 and got.shape == blocks.shape
    np.testing.assert_array_equal(got, blocks)


def test_sidd_read_blocks_errors(tmp_path):
  blocks = _blocks()
  missing = tmp_path / "ValidationGtBlocksSrgb.mat"
  with pytest.raises(sidd.SiddError, match="ValidationGtBlocksSrgb.mat"):
    sidd.read_blocks(missing)
  two = tmp_path / "two.mat"
  scipy.io.savemat(two, {"a": blocks, "b": blocks})
  with pytest.raises(sidd.SiddError, match="two.mat.*key="):
    sidd.read_blocks(two)
  with pytest.raises(sidd.SiddError, match="no variable 'c'"):
    sidd.read_blocks(two, key="c")
  for name, bad in [("4d", blocks[0]), ("float", blocks / 255.0),
                    ("rgba", np.zeros((1, 1, 4, 4, 4), np.uint8))]:
    path = tmp_path / f"{name}.mat"
    scipy.io.savemat(path, {"ValidationNoisyBlocksSrgb": bad})
    with pytest.raises(sidd.SiddError, match=f"{name}.mat.*expected uint8"):
      sidd.read_blocks(path)
  junk = tmp_path / "junk.mat"
  junk.write_bytes(b"not a mat file at all")
  with pytest.raises(sidd.SiddError, match="junk.mat"):
    sidd.read_blocks(junk)
  assert issubclass(sidd.SiddError, ValueError)


def test_sidd_v73_without_h5py_is_a_clear_error(tmp_path):
  # A MATLAB v7.3 header (version 0x0200, 'IM'); the HDF5 body is garbage.
  path = tmp_path / "BenchmarkNoisyBlocksSrgb.mat"
  header = b"MATLAB 7.3 MAT-file, Platform: GLNXA64".ljust(116, b" ")
  path.write_bytes(header + b"\0" * 8 + b"\x00\x02IM" + b"\0" * 512)
  try:
    import h5py  # pylint: disable=g-import-not-at-top,unused-import
    match = "BenchmarkNoisyBlocksSrgb.mat.*HDF5"
  except ImportError:
    match = "BenchmarkNoisyBlocksSrgb.mat.*v7.3.*h5py.*-v7"
  with pytest.raises(sidd.SiddError, match=match):
    sidd.read_blocks(path)


def test_sidd_write_denoised_float32(tmp_path):
  blocks = _blocks()
  path = sidd.write_denoised(tmp_path / "out" / "Idenoised.mat", blocks)
  assert path.name == "Idenoised.mat"
  raw = scipy.io.loadmat(path)
  assert [k for k in raw if not k.startswith("__")] == ["Idenoised"]
  assert raw["Idenoised"].dtype == np.float32
  np.testing.assert_array_equal(raw["Idenoised"],
                                (blocks / 255.0).astype(np.float32))
  overshoot = np.random.default_rng(8).uniform(-1.5, 1.5, (1, 2, 12, 12, 3))
  sidd.write_denoised(path, overshoot, value_range="minus_one_one")
  got = sidd.read_denoised(path)
  assert got.dtype == np.float32 and got.shape == (1, 2, 12, 12, 3)
  np.testing.assert_allclose(got, (np.clip(overshoot, -1, 1) + 1) / 2,
                             atol=1e-7)
  assert got.min() == 0.0 and got.max() == 1.0


def test_sidd_write_denoised_uint8_round_trip(tmp_path):
  blocks = _blocks()
  path = sidd.write_denoised(tmp_path / "Idenoised.mat", blocks, dtype="uint8")
  np.testing.assert_array_equal(sidd.read_blocks(path), blocks)
  near = blocks / 255.0 + np.random.default_rng(9).uniform(-0.45, 0.45,
                                                           blocks.shape) / 255
  sidd.write_denoised(path, near, dtype="uint8")
  np.testing.assert_array_equal(sidd.read_blocks(path, key="Idenoised"),
                                blocks)


def test_sidd_write_denoised_errors(tmp_path):
  with pytest.raises(sidd.SiddError, match="N_img, N_blk"):
    sidd.write_denoised(tmp_path / "Idenoised.mat", _blocks()[0])
  with pytest.raises(ValueError, match="dtype"):
    sidd.write_denoised(tmp_path / "Idenoised.mat", _blocks(), dtype="f16")
  with pytest.raises(ValueError, match="value_range"):
    sidd.write_denoised(tmp_path / "Idenoised.mat", _blocks() / 255.0,
                        value_range=None)


def test_sidd_iter_blocks_order():
  blocks = _blocks()
  got = list(sidd.iter_blocks(blocks))
  assert [(i, k) for i, k, _ in got] == [(i, k) for i in range(2)
                                         for k in range(3)]
  for i, k, block in got:
    np.testing.assert_array_equal(block, blocks[i, k])
