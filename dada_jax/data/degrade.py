"""Synthetic and simulated-"real" degradations: denoise, derain, deblur.

Denoising as Adaptation trains a restorer on *synthetic* degraded/clean pairs
and adapts it to *real* degraded images. The real datasets are not available
here, so each task pairs the paper's synthetic generator with a physically
richer "real" one whose statistics differ from it:

  denoise  AWGN, unclipped  |  camera pipeline (Brooks et al. 2019): raw
           Poisson-Gaussian noise, Malvar demosaic, ISP, optional JPEG
  derain   one layer of thin additive streaks  |  haze veil and three depth
           layers of streaks at one wind angle, screen-blended, JPEG
  deblur   linear motion in sRGB  |  camera-shake trajectory in linear light,
           blooming highlights, sensor noise, JPEG

Every degradation has the signature `fn(clean, rng, **params) -> degraded`:
`clean` is float32 [H, W, 3] sRGB in [0, 1], `rng` a `np.random.Generator`
(the only source of randomness), and the result is float32 [H, W, 3], clipped
to [0, 1] except for `synthetic_awgn`, which stays unclipped as in the paper.
Real-domain generators end with an optional JPEG round trip (`jpeg_quality`:
None, an int, or an inclusive (lo, hi) range drawn last from `rng`, so the
pre-JPEG image does not depend on it).

Angles are in degrees, counter-clockwise from the image's +x axis (rows grow
downwards, so 90 is vertical). Kernels are float32 [k, k], k odd,
non-negative, summing to 1, centred on pixel (k // 2, k // 2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
import math

import numpy as np
from scipy import ndimage
from scipy import signal

from dada_jax.data import camera


def _as_image(clean) -> np.ndarray:
  image = np.asarray(clean, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an [H, W, 3] image, got {image.shape}")
  return image


def _convolve(image: np.ndarray, kernel: np.ndarray) -> np.ndarray:
  """Each channel of [H, W, C] convolved with [k, k]; reflected borders."""
  p = kernel.shape[0] // 2
  padded = np.pad(image, ((p, p), (p, p), (0, 0)), mode="symmetric")
  return signal.fftconvolve(padded, kernel[:, :, None], mode="valid",
                            axes=(0, 1))


# ---------------------------------------------------------------- denoising


def synthetic_awgn(
    clean, rng: np.random.Generator,
    sigma_range: tuple[float, float] = (0.0, 75.0)) -> np.ndarray:
  """clean + σ N(0, 1) with σ ~ U[sigma_range] / 255; not clipped."""
  clean = _as_image(clean)
  sigma = np.float32(rng.uniform(*sigma_range) / 255.0)
  return clean + sigma * rng.standard_normal(clean.shape, dtype=np.float32)


def camera_noise(
    clean, rng: np.random.Generator, *,
    shot_noise_range: tuple[float, float] = camera.SHOT_NOISE_RANGE,
    jpeg_quality=None) -> np.ndarray:
  """Real-camera noise by unprocessing (Brooks et al. 2019).

  A random camera (`camera.sample_camera_params`) inverts the tone curve,
  sRGB gamma, colour correction and white balance; the raw image is RGGB
  mosaicked, given Poisson-Gaussian noise, white-balanced, demosaicked with
  Malvar-He-Cutler and processed forward. The noise is signal dependent
  (shot noise), spatially correlated (demosaic) and cross-channel correlated
  (demosaic, colour matrix, optional JPEG chroma subsampling).

  Args:
    clean: [H, W, 3] sRGB in [0, 1].
    rng: the generator to draw from.
    shot_noise_range: (lo, hi) of the raw shot-noise gain (log-uniform).
    jpeg_quality: None, an int or an inclusive (lo, hi) range.

  Returns:
    float32 [H, W, 3] in [0, 1].
  """
  clean = _as_image(clean)
  cam = camera.sample_camera_params(rng, shot_noise_range)
  out = camera.render(clean, cam, rng)
  return camera.jpeg(out, camera.resolve_jpeg_quality(jpeg_quality, rng))


def noise_stats(noisy, clean, bins: int = 16) -> dict[str, float]:
  """Statistics of the residual r = noisy - clean ([H, W, 3] each).

  Returns:
    lag1_corr: Pearson correlation of r with its right and lower neighbour,
      averaged over the two directions and the channels (0 for white noise).
    cross_channel_corr: mean Pearson correlation of r over the channel pairs
      (R, G), (R, B), (G, B).
    signal_dependence: pixels (all channels pooled) are binned by clean value
      into `bins` equal bins of [0, 1]; bins with at least 64 samples give
      (mean clean value, variance of r). The least-squares slope of variance
      on clean value, divided by the variance of r: 0 for signal-independent
      noise, about 1 / mean(clean) for pure shot noise (in the space the images
      are in; linearise both first to measure it in linear light). NaN if
      fewer than two bins qualify.
    std: standard deviation of r.
  """
  clean = np.asarray(clean, np.float64)
  r = np.asarray(noisy, np.float64) - clean
  r = r - r.mean(axis=(0, 1))

  def corr(a, b):
    denom = math.sqrt(float(np.sum(a * a) * np.sum(b * b)))
    return float(np.sum(a * b) / denom) if denom > 0 else 0.0

  lag1 = [corr(r[:, :-1, c], r[:, 1:, c]) + corr(r[:-1, :, c], r[1:, :, c])
          for c in range(r.shape[-1])]
  cross = [corr(r[..., i], r[..., j]) for i, j in ((0, 1), (0, 2), (1, 2))]
  values, res = clean.ravel(), r.ravel()
  which = np.clip((values * bins).astype(int), 0, bins - 1)
  means, variances = [], []
  for b in range(bins):
    sel = which == b
    if sel.sum() >= 64:
      means.append(values[sel].mean())
      variances.append(res[sel].var())
  slope = float("nan")
  if len(means) >= 2 and np.ptp(means) > 0:
    slope = float(np.polyfit(means, variances, 1)[0] / max(res.var(), 1e-20))
  return {"lag1_corr": float(np.mean(lag1) / 2),
          "cross_channel_corr": float(np.mean(cross)),
          "signal_dependence": slope,
          "std": float(res.std())}


# ---------------------------------------------------------------- kernels


def _splat(rows: np.ndarray, cols: np.ndarray, size: int) -> np.ndarray:
  """Equal-weight bilinear splatting of sub-pixel points into [size, size]."""
  r0, c0 = np.floor(rows).astype(int), np.floor(cols).astype(int)
  fr, fc = rows - r0, cols - c0
  out = np.zeros((size + 1, size + 1))
  for dr, wr in ((0, 1 - fr), (1, fr)):
    for dc, wc in ((0, 1 - fc), (1, fc)):
      np.add.at(out, (r0 + dr, c0 + dc), wr * wc)
  out = out[:size, :size]
  return (out / out.sum()).astype(np.float32)


def motion_kernel_linear(length: float, angle_deg: float,
                         size: int | None = None) -> np.ndarray:
  """Uniform linear motion: a segment of `length` px through the centre.

  The segment is sampled densely and splatted bilinearly, so the kernel's
  second moment along the motion is length^2 / 12 plus at most 1/4 px^2.
  `size` (odd) defaults to the smallest odd size > length + 2. Returns a
  float32 [size, size] kernel summing to 1.
  """
  size = size or 2 * math.ceil(length / 2) + 3
  n = max(2, math.ceil(8 * length))
  t = ((np.arange(n) + 0.5) / n - 0.5) * length
  a = math.radians(angle_deg)
  c = (size - 1) / 2
  return _splat(c - t * math.sin(a), c + t * math.cos(a), size)


def motion_kernel_trajectory(rng: np.random.Generator, size: int = 33,
                             length_range: tuple[float, float] = (10.0, 30.0),
                             n_steps: int = 64, turn: float = 0.05,
                             momentum: float = 0.8, speed_jitter: float = 0.4,
                             jerk_prob: float = 0.04) -> np.ndarray:
  """Camera-shake kernel: a random walk with momentum (after Boracchi & Foi).

  The heading starts uniform; its angular velocity follows
  ω_t = momentum ω_{t-1} + turn N(0, 1), and with probability `jerk_prob` a
  step adds a sudden heading change ~ N(0, (π/2)^2). Step lengths are
  exp(speed_jitter N(0, 1)), so the hand slows and speeds up. The path is
  scaled to a total length ~ U(length_range) px (shrunk if it would not fit
  in `size` - 3 px), every step is exposed for the same time (resampled at
  <= 1/8 px and splatted bilinearly, so slow parts are brighter) and the
  kernel's centroid is put on the centre pixel.

  Returns a float32 [size, size] kernel summing to 1 (`size` odd).
  """
  theta, omega = rng.uniform(0.0, 2 * math.pi), 0.0
  pos = [np.zeros(2)]
  for _ in range(n_steps):
    omega = momentum * omega + turn * rng.standard_normal()
    theta += omega
    if rng.random() < jerk_prob:
      theta += rng.normal(0.0, math.pi / 2)
    speed = math.exp(speed_jitter * rng.standard_normal())
    pos.append(pos[-1] + speed * np.array([-math.sin(theta), math.cos(theta)]))
  path = np.array(pos)
  steps = np.linalg.norm(np.diff(path, axis=0), axis=1)
  scale = rng.uniform(*length_range) / max(steps.sum(), 1e-12)
  path, steps = path * scale, steps * scale
  # Equal time per step, so a slow step lays down as much energy as a fast one.
  sub = max(1, math.ceil(8 * steps.max()))
  frac = (np.arange(sub) + 0.5) / sub
  pts = (path[:-1, None, :] + frac[None, :, None] *
         np.diff(path, axis=0)[:, None, :]).reshape(-1, 2)
  pts -= pts.mean(axis=0)
  extent = np.abs(pts).max()
  limit = (size - 3) / 2
  if extent > limit:
    pts *= limit / extent
  c = (size - 1) / 2
  return _splat(c + pts[:, 0], c + pts[:, 1], size)


# ---------------------------------------------------------------- deraining


def rain_streaks(shape: tuple[int, int], rng: np.random.Generator, *,
                 density: float, length: float, angle_deg: float,
                 brightness: tuple[float, float],
                 blur_sigma: float = 0.0) -> np.ndarray:
  """One layer of rain streaks: sparse seeds smeared by a line kernel.

  Seeds (probability `density` per pixel, value ~ U[brightness]) are drawn on
  a canvas padded by the streak length, so streaks enter from the borders,
  and convolved with `motion_kernel_linear(length, angle_deg)` (optionally
  widened by a Gaussian of `blur_sigma` px) scaled to peak 1, so a streak's
  brightest pixel carries its seed's value.

  Returns:
    float32 [H, W] in [0, 1] (overlaps clipped).
  """
  h, w = shape
  pad = math.ceil(length / 2) + 2 + math.ceil(3 * blur_sigma)
  canvas = (h + 2 * pad, w + 2 * pad)
  seeds = np.where(rng.random(canvas) < density,
                   rng.uniform(*brightness, canvas), 0.0)
  kernel = motion_kernel_linear(length, angle_deg).astype(np.float64)
  if blur_sigma > 0:
    kernel = ndimage.gaussian_filter(
        np.pad(kernel, math.ceil(3 * blur_sigma)), blur_sigma)
  layer = signal.fftconvolve(seeds, kernel / kernel.max(), mode="same")
  # FFT round-off leaves ~1e-16 negatives where there is no rain.
  return np.clip(layer[pad:pad + h, pad:pad + w], 0.0, 1.0).astype(np.float32)


def synthetic_rain(clean, rng: np.random.Generator, *,
                   angle_deg: float | None = None,
                   density_range: tuple[float, float] = (0.002, 0.008),
                   length_range: tuple[float, float] = (10.0, 30.0),
                   brightness: tuple[float, float] = (0.6, 0.9)) -> np.ndarray:
  """One layer of thin (1 px) streaks added to the image (Rain100L style).

  Args:
    clean: [H, W, 3] sRGB in [0, 1].
    rng: the generator to draw from.
    angle_deg: streak direction; default 90 + U(-20, 20) (near vertical).
    density_range, length_range, brightness: seed probability per pixel,
      streak length in px and streak peak value, each drawn uniformly.

  Returns:
    float32 [H, W, 3] in [0, 1]: clip(clean + streaks), so >= clean.
  """
  clean = _as_image(clean)
  if angle_deg is None:
    angle_deg = 90.0 + rng.uniform(-20.0, 20.0)
  layer = rain_streaks(clean.shape[:2], rng,
                       density=rng.uniform(*density_range),
                       length=rng.uniform(*length_range), angle_deg=angle_deg,
                       brightness=brightness)
  return np.minimum(clean + layer[..., None], 1.0)


# Far to near: sparser, longer, wider and brighter as the layer nears the lens.
# (density range, length range px, blur σ range px, brightness range)
REAL_RAIN_LAYERS = (
    ((0.010, 0.020), (5.0, 12.0), (0.0, 0.0), (0.15, 0.35)),
    ((0.003, 0.006), (15.0, 30.0), (0.5, 0.9), (0.30, 0.55)),
    ((0.0008, 0.002), (35.0, 60.0), (1.2, 2.0), (0.50, 0.80)),
)


def _smooth_field(shape: tuple[int, int], rng: np.random.Generator,
                  cells: int = 3) -> np.ndarray:
  """A smooth random [H, W] field in [0, 1], cubic-upsampled from a grid."""
  coarse = rng.random((cells + 1, cells + 1))
  rows = np.linspace(0, cells, shape[0])
  cols = np.linspace(0, cells, shape[1])
  grid = np.meshgrid(rows, cols, indexing="ij")
  field = ndimage.map_coordinates(coarse, grid, order=3, mode="nearest")
  return (field - field.min()) / max(np.ptp(field), 1e-12)


def real_rain(clean, rng: np.random.Generator, *,
              angle_deg: float | None = None,
              jpeg_quality=(70, 95)) -> np.ndarray:
  """Rain in depth: a haze veil and three streak layers, then JPEG.

  The background is veiled by atmospheric scattering, I t + A (1 - t), with
  transmission t = exp(-β d), a smooth random depth-like field d in [0.4, 1],
  β ~ U(0.3, 0.9) and a near-grey airlight A ~ U(0.75, 0.95) per channel
  (± 0.03). The `REAL_RAIN_LAYERS` share one wind angle and are combined
  with the background by screen blending, 1 - (1 - I) prod_i (1 - L_i).

  Args:
    clean: [H, W, 3] sRGB in [0, 1].
    rng: the generator to draw from.
    angle_deg: the shared wind angle; default 90 + U(-30, 30).
    jpeg_quality: None, an int or an inclusive (lo, hi) range.

  Returns:
    float32 [H, W, 3] in [0, 1].
  """
  clean = _as_image(clean).astype(np.float64)
  if angle_deg is None:
    angle_deg = 90.0 + rng.uniform(-30.0, 30.0)
  shape = clean.shape[:2]
  clear = np.ones(shape)
  for density, length, sigma, brightness in REAL_RAIN_LAYERS:
    layer = rain_streaks(shape, rng, density=rng.uniform(*density),
                         length=rng.uniform(*length), angle_deg=angle_deg,
                         brightness=brightness, blur_sigma=rng.uniform(*sigma))
    clear *= 1.0 - layer
  depth = 0.4 + 0.6 * _smooth_field(shape, rng)
  t = np.exp(-rng.uniform(0.3, 0.9) * depth)[..., None]
  airlight = rng.uniform(0.75, 0.95) + rng.uniform(-0.03, 0.03, 3)
  veiled = clean * t + airlight * (1.0 - t)
  rainy = 1.0 - (1.0 - veiled) * clear[..., None]
  return camera.jpeg(np.clip(rainy, 0.0, 1.0),
                     camera.resolve_jpeg_quality(jpeg_quality, rng))


# ---------------------------------------------------------------- deblurring


def synthetic_blur(
    clean, rng: np.random.Generator, *, kernel: np.ndarray | None = None,
    length_range: tuple[float, float] = (5.0, 25.0)) -> np.ndarray:
  """Uniform linear motion blur applied directly to the sRGB values.

  Args:
    clean: [H, W, 3] sRGB in [0, 1].
    rng: the generator to draw from.
    kernel: a [k, k] kernel to use instead of a random one.
    length_range: motion length in px; the angle is U[0, 180).

  Returns:
    float32 [H, W, 3] in [0, 1] (borders reflected).
  """
  clean = _as_image(clean)
  if kernel is None:
    kernel = motion_kernel_linear(rng.uniform(*length_range),
                                  rng.uniform(0.0, 180.0))
  out = _convolve(clean.astype(np.float64), np.asarray(kernel, np.float64))
  return np.clip(out, 0.0, 1.0).astype(np.float32)


def real_blur(clean, rng: np.random.Generator, *,
              kernel: np.ndarray | None = None,
              highlight_gain_range: tuple[float, float] = (3.0, 8.0),
              shot_noise_range: tuple[float, float] = (1e-4, 2e-3),
              jpeg_quality=(70, 95)) -> np.ndarray:
  """Camera-shake blur in linear light with blooming highlights and noise.

  The sRGB image is linearised; pixels whose brightest linear channel exceeds
  0.8 are scaled up, ramping to a gain ~ U(highlight_gain_range) at 1, since
  a clipped highlight stood for more light than the sensor could hold. The
  result is convolved with a `motion_kernel_trajectory` kernel, given
  Poisson-Gaussian noise (shot gain log-uniform in `shot_noise_range`, read
  noise tied to it as in `camera`), clipped (bright smears saturate, i.e.
  bloom), re-encoded to sRGB and JPEG compressed.

  Args:
    clean: [H, W, 3] sRGB in [0, 1].
    rng: the generator to draw from.
    kernel: a [k, k] kernel to use instead of a random trajectory.
    highlight_gain_range: range of the highlight gain.
    shot_noise_range: range of the shot-noise gain (linear [0, 1] units).
    jpeg_quality: None, an int or an inclusive (lo, hi) range.

  Returns:
    float32 [H, W, 3] in [0, 1].
  """
  clean = _as_image(clean)
  if kernel is None:
    kernel = motion_kernel_trajectory(rng)
  gain = rng.uniform(*highlight_gain_range)
  lin = camera.srgb_to_linear(clean.astype(np.float64))
  ramp = np.clip((lin.max(axis=-1, keepdims=True) - 0.8) / 0.2, 0.0, 1.0)
  blurred = _convolve(lin * (1.0 + (gain - 1.0) * ramp),
                      np.asarray(kernel, np.float64))
  shot, read = camera.sample_sensor_noise(rng, shot_noise_range)
  noisy = camera.add_raw_noise(blurred, shot, read, rng)
  out = camera.linear_to_srgb(np.clip(noisy, 0.0, 1.0))
  return camera.jpeg(out, camera.resolve_jpeg_quality(jpeg_quality, rng))


# ---------------------------------------------------------------- registry

Degradation = Callable[..., np.ndarray]

DEGRADATIONS: dict[str, dict[str, Degradation]] = {
    "denoise": {"synthetic": synthetic_awgn, "real": camera_noise},
    "derain": {"synthetic": synthetic_rain, "real": real_rain},
    "deblur": {"synthetic": synthetic_blur, "real": real_blur},
}


def degrade(task: str, domain: str, clean, seed_or_rng,
            **params) -> np.ndarray:
  """`DEGRADATIONS[task][domain](clean, rng, **params)`.

  Args:
    task: "denoise", "derain" or "deblur".
    domain: "synthetic" or "real".
    clean: [H, W, 3] float sRGB in [0, 1].
    seed_or_rng: an int seed (or seed sequence) for `np.random.default_rng`,
      or a `np.random.Generator`, used as is.
    **params: passed to the degradation.

  Returns:
    float32 [H, W, 3] degraded image.
  """
  try:
    fn = DEGRADATIONS[task][domain]
  except KeyError:
    known = [f"{t}/{d}" for t in DEGRADATIONS for d in DEGRADATIONS[t]]
    raise ValueError(f"unknown degradation {task}/{domain}; known: "
                     f"{', '.join(known)}") from None
  rng = (seed_or_rng if isinstance(seed_or_rng, np.random.Generator)
         else np.random.default_rng(seed_or_rng))
  return fn(clean, rng, **params)


def make_pairs(task: str, domain: str, images: Sequence[np.ndarray], seed: int,
               **params) -> list[tuple[np.ndarray, np.ndarray]]:
  """(degraded, clean) float32 pairs from uint8 [H, W, 3] images.

  Image i is degraded with `np.random.default_rng([seed, i])`, so each pair
  depends only on (seed, i, image), not on order or on how many are made.

  Returns:
    A list of (degraded, clean) float32 [H, W, 3]; clean = image / 255.
  """
  pairs = []
  for i, image in enumerate(images):
    image = np.asarray(image)
    if image.dtype != np.uint8:
      raise ValueError(f"image {i}: expected uint8, got {image.dtype}")
    clean = image.astype(np.float32) / 255.0
    pairs.append((degrade(task, domain, clean, [seed, i], **params), clean))
  return pairs
