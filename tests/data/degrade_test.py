"""Synthetic and simulated-real degradations (dada_jax.data.degrade, camera)."""

import numpy as np
import pytest
from scipy import ndimage

from dada_jax.data import camera
from dada_jax.data import degrade

CASES = [(t, d) for t in degrade.DEGRADATIONS for d in ("synthetic", "real")]


def scene(h=64, w=64):
  """[h, w, 3] float32 in [0.1, 0.9]: colour gradients, a box and a disc."""
  y, x = np.mgrid[0:h, 0:w] / np.array([h - 1, w - 1])[:, None, None]
  img = np.stack([0.15 + 0.6 * x, 0.2 + 0.5 * y, 0.5 - 0.3 * x * y], -1)
  img[20:40, 10:30] = [0.8, 0.3, 0.2]
  img[(y * h - 45) ** 2 + (x * w - 45) ** 2 < 100] = [0.1, 0.6, 0.9]
  return img.astype(np.float32)


def two_grays(dark=0.3, bright=0.7):
  """[64, 64, 3]: left half `dark`, right half `bright` (flat grey)."""
  img = np.full((64, 64, 3), dark, np.float32)
  img[:, 32:] = bright
  return img


def second_moments(kernel):
  """Eigenvalues (ascending) of a kernel's 2x2 covariance, and its centroid."""
  k = kernel.astype(np.float64)
  r, c = np.mgrid[0:k.shape[0], 0:k.shape[1]]
  mr, mc = (k * r).sum(), (k * c).sum()
  crr, ccc = (k * (r - mr) ** 2).sum(), (k * (c - mc) ** 2).sum()
  crc = (k * (r - mr) * (c - mc)).sum()
  return np.linalg.eigvalsh([[crr, crc], [crc, ccc]]), (mr, mc)


def orientation(layer, sigma=1.0):
  """Dominant line direction of a [H, W] image in degrees (ccw from +x)."""
  gy = ndimage.gaussian_filter(layer, sigma, order=(1, 0))
  gx = ndimage.gaussian_filter(layer, sigma, order=(0, 1))
  jxx, jyy, jxy = (gx * gx).sum(), (gy * gy).sum(), (gx * gy).sum()
  gradient = 0.5 * np.degrees(np.arctan2(2 * jxy, jxx - jyy))  # rows down
  return (-(gradient + 90.0)) % 180.0


def high_pass(x, sigma=3.0):
  return x - ndimage.gaussian_filter(x, sigma)


def horizontal_corr(x):
  x = x - x.mean()
  a, b = x[:, :-1], x[:, 1:]
  return (a * b).sum() / np.sqrt((a * a).sum() * (b * b).sum())


# ---------------------------------------------------------------- all of them


@pytest.mark.parametrize("task,domain", CASES)
def test_deterministic_shape_dtype_range(task, domain):
  clean = scene()
  fn = degrade.DEGRADATIONS[task][domain]
  a = fn(clean, np.random.default_rng(7))
  b = fn(clean, np.random.default_rng(7))
  c = fn(clean, np.random.default_rng(8))
  assert a.shape == clean.shape and a.dtype == np.float32
  np.testing.assert_array_equal(a, b)
  assert np.abs(a - c).mean() > 1e-3
  assert np.abs(a - clean).mean() > 1e-3
  assert np.isfinite(a).all()
  if (task, domain) != ("denoise", "synthetic"):
    assert a.min() >= 0.0 and a.max() <= 1.0


def test_awgn_is_unclipped_and_has_the_drawn_sigma():
  clean = scene()
  noisy = degrade.synthetic_awgn(clean, np.random.default_rng(0),
                                 sigma_range=(50.0, 50.0))
  assert noisy.min() < 0.0 or noisy.max() > 1.0
  assert (noisy - clean).std() == pytest.approx(50 / 255, rel=0.05)


def test_degrade_registry_and_seeds():
  clean = scene()
  for task, domain in CASES:
    want = degrade.DEGRADATIONS[task][domain](clean, np.random.default_rng(3))
    np.testing.assert_array_equal(degrade.degrade(task, domain, clean, 3), want)
    np.testing.assert_array_equal(
        degrade.degrade(task, domain, clean, np.random.default_rng(3)), want)
  with pytest.raises(ValueError, match="unknown degradation"):
    degrade.degrade("dehaze", "real", clean, 0)
  with pytest.raises(ValueError, match=r"\[H, W, 3\]"):
    degrade.degrade("denoise", "real", clean[..., 0], 0)


def test_make_pairs_depends_only_on_seed_and_index():
  rng = np.random.default_rng(0)
  images = [rng.integers(0, 256, (32, 40, 3), dtype=np.uint8) for _ in range(3)]
  three = degrade.make_pairs("derain", "real", images, seed=5)
  two = degrade.make_pairs("derain", "real", images[:2], seed=5)
  other = degrade.make_pairs("derain", "real", images[:2], seed=6)
  for (lq3, gt3), (lq2, gt2), img in zip(three, two, images):
    np.testing.assert_array_equal(lq3, lq2)
    np.testing.assert_array_equal(gt3, gt2)
    np.testing.assert_array_equal(gt2, img.astype(np.float32) / 255)
    assert lq2.dtype == gt2.dtype == np.float32
  np.testing.assert_array_equal(
      three[2][0], degrade.degrade("derain", "real", three[2][1], [5, 2]))
  assert np.abs(other[0][0] - two[0][0]).mean() > 1e-3
  with pytest.raises(ValueError, match="uint8"):
    degrade.make_pairs("derain", "real", [images[0] / 255.0], seed=0)


# ---------------------------------------------------------------- denoising


def test_noise_stats_on_constructed_noise():
  n = np.random.default_rng(0).standard_normal((128, 129, 4))
  zeros = np.zeros((128, 128, 3))
  # Horizontal 2-tap sums: lag-1 corr 0.5 across, 0 down -> mean 0.25.
  for r in (n[:, :-1, :3] + n[:, 1:, :3], n[1:, :-1, :3] + n[:-1, :-1, :3]):
    st = degrade.noise_stats(r[:127, :128], zeros[:127])
    assert st["lag1_corr"] == pytest.approx(0.25, abs=0.03)
    assert abs(st["cross_channel_corr"]) < 0.03
  # A component shared by the channels: pairwise corr 0.5.
  st = degrade.noise_stats(n[:, :-1, :3] + n[:, :-1, 3:], zeros)
  assert st["cross_channel_corr"] == pytest.approx(0.5, abs=0.03)
  assert abs(st["lag1_corr"]) < 0.03
  assert st["std"] == pytest.approx(np.sqrt(2), rel=0.03)


def test_awgn_residual_is_white():
  clean = scene()
  for seed in range(4):
    noisy = degrade.synthetic_awgn(clean, np.random.default_rng(seed),
                                   sigma_range=(5.0, 75.0))
    st = degrade.noise_stats(noisy, clean)
    assert abs(st["lag1_corr"]) < 0.05
    assert abs(st["cross_channel_corr"]) < 0.05


def test_camera_noise_is_spatially_and_cross_channel_correlated():
  clean = scene()
  # Noise that dominates the demosaic error of the clean image's edges.
  for seed in range(4):
    noisy = degrade.camera_noise(clean, np.random.default_rng(seed),
                                 shot_noise_range=(2e-3, 1e-2))
    st = degrade.noise_stats(noisy, clean)
    assert st["lag1_corr"] > 0.25, st
    assert st["cross_channel_corr"] > 0.05, st
  # Default (Brooks) range: includes levels where the residual is mostly
  # demosaic error, whose cross-channel correlation can be ~0.
  stats = [degrade.noise_stats(
      degrade.camera_noise(clean, np.random.default_rng(s)), clean)
           for s in range(8)]
  assert min(s["lag1_corr"] for s in stats) > 0.2
  assert np.mean([s["cross_channel_corr"] for s in stats]) > 0.03


def test_camera_noise_variance_follows_linear_intensity():
  clean = two_grays()
  to_linear = lambda x: camera.srgb_to_linear(camera.inverse_tone_curve(x))
  x_dark, x_bright = to_linear(np.float64(0.3)), to_linear(np.float64(0.7))
  dark, bright = np.s_[4:-4, 4:28], np.s_[4:-4, 36:-4]
  for seed in range(3):
    rng = np.random.default_rng(seed)
    noisy = degrade.camera_noise(clean, rng, shot_noise_range=(1e-3, 5e-3))
    res = to_linear(noisy) - to_linear(clean)
    v_dark, v_bright = res[dark].var(), res[bright].var()
    assert v_bright > 2.0 * v_dark
    # Shot-noise dominated: variance proportional to the linear signal.
    assert 0.7 < (v_bright / x_bright) / (v_dark / x_dark) < 1.4
    assert degrade.noise_stats(to_linear(noisy),
                               to_linear(clean))["signal_dependence"] > 2.0
    # AWGN of fixed σ in sRGB: flat in sRGB, but not proportional in linear.
    awgn = degrade.synthetic_awgn(clean, rng, sigma_range=(10.0, 10.0))
    assert abs(degrade.noise_stats(awgn, clean)["signal_dependence"]) < 0.3
    res = camera.srgb_to_linear(awgn) - camera.srgb_to_linear(clean)
    assert (res[bright].var() / x_bright) / (res[dark].var() / x_dark) > 1.8


def test_raw_noise_is_poisson_gaussian():
  rng = np.random.default_rng(0)
  shot, read = 4e-3, 1e-4
  for level in (0.05, 0.5):
    x = camera.add_raw_noise(np.full(200_000, level), shot, read, rng)
    assert x.mean() == pytest.approx(level, rel=0.01)
    assert x.var() == pytest.approx(shot * level + read, rel=0.03)


def test_malvar_demosaic_is_exact_on_constant_and_linear_images():
  y, x = np.mgrid[0:32, 0:30]
  ramp = np.stack([0.1 + 0.01 * x + 0.005 * y, 0.6 + 0.004 * x - 0.006 * y,
                   0.2 + 0.002 * x + 0.01 * y], -1)
  const = np.broadcast_to([0.2, 0.5, 0.7], ramp.shape)
  for img in (const, ramp):
    out = camera.demosaic_malvar(camera.mosaic(img))
    np.testing.assert_allclose(out[2:-2, 2:-2], img[2:-2, 2:-2], atol=1e-9)


def bilinear_demosaic(bayer):
  """Plain bilinear RGGB demosaic, the baseline Malvar et al. improve on."""
  # mask[..., c] is 1 on the sites that sample channel c.
  mask = np.stack([camera.mosaic(np.broadcast_to(e, bayer.shape + (3,)))
                   for e in np.eye(3)], -1)
  k_g = np.array([[0, 1, 0], [1, 4, 1], [0, 1, 0]]) / 4
  k_rb = np.array([[1, 2, 1], [2, 4, 2], [1, 2, 1]]) / 4
  return np.stack([ndimage.convolve(bayer * mask[..., c], k, mode="mirror")
                   for c, k in enumerate((k_rb, k_g, k_rb))], -1)


def test_malvar_gradient_correction_beats_bilinear_on_grey_images():
  y, x = np.mgrid[0:64, 0:64]
  wave = 0.5 + 0.3 * np.sin(x / 3.0 + y / 5.0)
  for grey in (wave, scene().mean(-1).astype(np.float64)):
    img = np.repeat(grey[..., None], 3, -1)
    bayer = camera.mosaic(img)
    mse = lambda out: ((out - img)[2:-2, 2:-2] ** 2).mean()
    assert mse(camera.demosaic_malvar(bayer)) < 0.5 * mse(
        bilinear_demosaic(bayer))


def test_isp_round_trip_without_noise():
  img = np.random.default_rng(0).random((16, 16, 3))
  for seed in range(5):
    cam = camera.sample_camera_params(np.random.default_rng(seed))
    raw = camera.unprocess(img, cam)
    assert np.abs(raw - img).mean() > 0.05  # A real change of space.
    np.testing.assert_allclose(camera.process(raw, cam), img, atol=1e-3)


# ---------------------------------------------------------------- deraining


def test_synthetic_rain_only_adds_streaks_at_the_angle():
  clean = scene()
  for seed, angle in enumerate((65.0, 80.0, 95.0, 110.0)):
    rainy = degrade.synthetic_rain(clean, np.random.default_rng(seed),
                                   angle_deg=angle)
    diff = rainy - clean
    assert (diff >= 0).all()
    assert 0.01 < (diff > 0.05).mean() < 0.5
    assert np.median(diff) == 0.0  # No veil: most pixels untouched.
    assert abs(orientation(diff.mean(-1)) - angle) < 3.0


def test_real_rain_has_a_veil_and_wide_streaks_at_one_angle():
  clean = scene()
  for seed, angle in enumerate((70.0, 100.0, 115.0)):
    rainy = degrade.real_rain(clean, np.random.default_rng(seed),
                              angle_deg=angle, jpeg_quality=None)
    diff = (rainy - clean).mean(-1)
    # Veil: nearly every pixel is lifted, smoothly.
    assert np.percentile(diff, 10) > 0.03
    assert ndimage.gaussian_filter(diff, 8).min() > 0.03
    assert abs(orientation(high_pass(diff)) - angle) < 3.0
  for seed in range(4):
    # Vertical rain: the width of streaks shows as horizontal correlation.
    syn = degrade.synthetic_rain(clean, np.random.default_rng(seed),
                                 angle_deg=90.0)
    real = degrade.real_rain(clean, np.random.default_rng(seed),
                             angle_deg=90.0, jpeg_quality=None)
    assert horizontal_corr(high_pass((syn - clean).mean(-1))) < 0.0
    assert horizontal_corr(high_pass((real - clean).mean(-1))) > 0.1


def test_rain_streak_layers_grow_with_width():
  widths = []
  for sigma in (0.0, 1.0, 2.0):
    layer = degrade.rain_streaks((64, 64), np.random.default_rng(0),
                                 density=0.003, length=20, angle_deg=90,
                                 brightness=(0.8, 0.8), blur_sigma=sigma)
    assert layer.dtype == np.float32 and 0 <= layer.min() <= layer.max() <= 1
    widths.append((layer > 0.1).mean())
  assert widths[0] < widths[1] < widths[2]


# ---------------------------------------------------------------- deblurring


@pytest.mark.parametrize("length,angle", [(5.0, 0.0), (10.0, 90.0),
                                          (17.3, 33.0), (25.0, 135.0)])
def test_linear_kernel_is_a_segment_of_the_length(length, angle):
  k = degrade.motion_kernel_linear(length, angle)
  assert k.dtype == np.float32 and k.shape[0] == k.shape[1] and k.shape[0] % 2
  assert k.min() >= 0 and k.sum() == pytest.approx(1.0, abs=1e-5)
  (small, big), centroid = second_moments(k)
  c = (k.shape[0] - 1) / 2
  np.testing.assert_allclose(centroid, (c, c), atol=1e-3)
  # Uniform segment: variance L^2 / 12, plus the splat's 1/6.
  assert np.sqrt(12 * (big - 1 / 6)) == pytest.approx(length, abs=0.3)
  assert small <= 0.25
  rows, cols = np.nonzero(k)
  a = np.radians(angle)
  along = (cols - c) * np.cos(a) - (rows - c) * np.sin(a)
  across = (cols - c) * np.sin(a) + (rows - c) * np.cos(a)
  assert np.abs(across).max() < 1.5
  assert np.abs(along).max() < length / 2 + 1.5


def test_trajectory_kernel_is_a_curve():
  smallest = []
  for seed in range(16):
    k = degrade.motion_kernel_trajectory(np.random.default_rng(seed))
    assert k.dtype == np.float32 and k.shape == (33, 33)
    assert k.min() >= 0 and k.sum() == pytest.approx(1.0, abs=1e-5)
    (small, big), centroid = second_moments(k)
    np.testing.assert_allclose(centroid, (16, 16), atol=1e-3)
    assert big > 1.0  # Not a point.
    smallest.append(small)
  np.testing.assert_array_equal(
      degrade.motion_kernel_trajectory(np.random.default_rng(3)),
      degrade.motion_kernel_trajectory(np.random.default_rng(3)))
  # Straight kernels stay <= 0.25 px^2 across the motion (test above).
  assert np.median(smallest) > 0.6
  assert np.mean(np.array(smallest) > 0.5) > 0.6


def test_synthetic_blur_keeps_constants_and_blurs_edges():
  flat = np.broadcast_to(np.float32([0.2, 0.5, 0.9]), (48, 40, 3))
  for seed in range(3):
    out = degrade.synthetic_blur(flat, np.random.default_rng(seed))
    np.testing.assert_allclose(out, flat, atol=1e-6)
  clean = scene()
  edges = lambda im: sum((np.diff(im, axis=a) ** 2).sum() for a in (0, 1))
  for seed in range(4):
    out = degrade.synthetic_blur(clean, np.random.default_rng(seed))
    assert edges(out) < 0.5 * edges(clean)


def test_real_blur_blooms_highlights_in_linear_light():
  img = np.full((64, 64, 3), 0.05, np.float32)
  img[29:35, 29:35] = 1.0
  kernel = degrade.motion_kernel_linear(9.0, 0.0)
  srgb = degrade.synthetic_blur(img, np.random.default_rng(0), kernel=kernel)
  for seed in range(3):
    real = degrade.real_blur(img, np.random.default_rng(seed), kernel=kernel,
                             jpeg_quality=None)
    assert (srgb >= 0.9).sum() == 0  # 6/9 of white at most.
    assert (real >= 0.9).all(-1).sum() > 36  # Saturated beyond the square.
    assert np.median(real) == pytest.approx(0.05, abs=0.01)


# ---------------------------------------------------------------- JPEG


@pytest.mark.parametrize("fn", [degrade.camera_noise, degrade.real_rain,
                                degrade.real_blur])
def test_jpeg_option(fn):
  clean = scene()
  plain = fn(clean, np.random.default_rng(1), jpeg_quality=None)
  coded = fn(clean, np.random.default_rng(1), jpeg_quality=40)
  drawn = fn(clean, np.random.default_rng(1), jpeg_quality=(40, 60))
  for out in (coded, drawn):
    assert out.dtype == np.float32 and 0 <= out.min() <= out.max() <= 1
    np.testing.assert_allclose(out * 255, np.round(out * 255), atol=1e-3)
    diff = np.abs(out - plain).mean()
    assert 1e-3 < diff < 0.05  # Only the compression differs.


def test_jpeg_round_trip():
  clean = scene()
  np.testing.assert_array_equal(camera.jpeg(clean, None), clean)
  coded = camera.jpeg(clean, 30)
  assert 1e-3 < np.abs(coded - clean).mean() < 0.05
  assert camera.resolve_jpeg_quality((50, 50), np.random.default_rng(0)) == 50
