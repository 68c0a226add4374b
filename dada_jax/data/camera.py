"""A simulated camera: unprocessing, raw noise, Malvar demosaic, ISP, JPEG.

Used by `degrade.camera_noise` (and `degrade.real_blur`) to make "real"
noise the way Brooks et al. 2019, "Unprocessing Images for Learned Raw
Denoising", do: an sRGB image is inverted through a randomly drawn camera
(tone curve, gamma, colour correction, white balance), mosaicked, given
Poisson-Gaussian raw noise, demosaicked and processed forward again.

Conventions: images are float arrays [H, W, 3]; "sRGB" images are display
referred in [0, 1]; "linear" images are linear-light RGB in [0, 1]; "raw"
images are linear camera RGB before white balance (not clipped: the inverse
colour correction can leave [0, 1] slightly). Bayer mosaics are [H, W], RGGB:
R at (even row, even col), G at (even, odd) and (odd, even), B at (odd, odd).
All functions are pure NumPy; randomness only comes from the `rng` argument.
"""

from __future__ import annotations

import dataclasses
import io

import numpy as np
from PIL import Image
from scipy import ndimage

# XYZ (D65) -> camera matrices of four real cameras (DNG ColorMatrix values,
# the set Brooks et al. draw convex combinations from).
XYZ_TO_CAMS = np.array([
    [[1.0234, -0.2969, -0.2266], [-0.5625, 1.6328, -0.0469],
     [-0.0703, 0.2188, 0.6406]],
    [[0.4913, -0.0541, -0.0202], [-0.6130, 1.3513, 0.2906],
     [-0.1564, 0.2151, 0.7183]],
    [[0.8380, -0.2630, -0.0639], [-0.2887, 1.0725, 0.2496],
     [-0.0627, 0.1427, 0.5438]],
    [[0.6596, -0.2079, -0.0562], [-0.4782, 1.3016, 0.1933],
     [-0.0970, 0.1581, 0.5181]],
])

# Linear sRGB -> XYZ (D65), IEC 61966-2-1.
RGB_TO_XYZ = np.array([[0.4124564, 0.3575761, 0.1804375],
                       [0.2126729, 0.7151522, 0.0721750],
                       [0.0193339, 0.1191920, 0.9503041]])

# Brooks et al.'s shot-noise range and the log-linear fit of read noise to it:
# log(read) = 2.18 log(shot) + 1.20 + N(0, 0.26^2).
SHOT_NOISE_RANGE = (1e-4, 1.2e-2)
READ_SLOPE, READ_INTERCEPT, READ_JITTER = 2.18, 1.20, 0.26


def srgb_to_linear(x: np.ndarray) -> np.ndarray:
  """The sRGB transfer function inverted; [0, 1] -> [0, 1] (input clipped)."""
  x = np.clip(x, 0.0, 1.0)
  return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


def linear_to_srgb(x: np.ndarray) -> np.ndarray:
  """The sRGB transfer function; linear [0, 1] -> sRGB [0, 1] (clipped)."""
  x = np.clip(x, 0.0, 1.0)
  return np.where(x <= 0.0031308, 12.92 * x,
                  1.055 * np.power(x, 1.0 / 2.4) - 0.055)


def tone_curve(x: np.ndarray) -> np.ndarray:
  """Brooks et al.'s global tone curve, smoothstep 3x^2 - 2x^3, on [0, 1]."""
  x = np.clip(x, 0.0, 1.0)
  return 3.0 * x**2 - 2.0 * x**3


def inverse_tone_curve(y: np.ndarray) -> np.ndarray:
  """Inverse of `tone_curve` on [0, 1]: 0.5 - sin(asin(1 - 2y) / 3)."""
  y = np.clip(y, 0.0, 1.0)
  return 0.5 - np.sin(np.arcsin(1.0 - 2.0 * y) / 3.0)


@dataclasses.dataclass(frozen=True)
class CameraParams:
  """One simulated camera and exposure.

  Attributes:
    rgb_to_cam: [3, 3] linear sRGB -> camera RGB; rows sum to 1 so grey maps
      to grey before white balance.
    red_gain, blue_gain: white-balance gains applied by the ISP (> 1).
    digital_gain: exposure gain applied by the ISP to all channels.
    shot_noise: raw Poisson gain a: Var[raw] = a * raw + b.
    read_noise: raw Gaussian variance b.
  """
  rgb_to_cam: np.ndarray
  red_gain: float
  blue_gain: float
  digital_gain: float
  shot_noise: float
  read_noise: float

  @property
  def gains(self) -> np.ndarray:
    """[3] per-channel ISP gains (white balance times digital gain)."""
    return np.array([self.red_gain, 1.0, self.blue_gain]) * self.digital_gain


def sample_camera_params(
    rng: np.random.Generator,
    shot_noise_range: tuple[float, float] = SHOT_NOISE_RANGE) -> CameraParams:
  """Draws a camera as Brooks et al. do.

  The colour matrix is a random convex combination of `XYZ_TO_CAMS` composed
  with `RGB_TO_XYZ`; gains are red ~ U(1.9, 2.4), blue ~ U(1.5, 1.9) and
  digital = 1 / N(0.8, 0.1) with the normal clipped to [0.5, 1]; shot noise
  is log-uniform in `shot_noise_range`, read noise follows the log-linear fit.

  Args:
    rng: the generator to draw from.
    shot_noise_range: (lo, hi) of the shot-noise gain; lo == hi fixes it.

  Returns:
    A `CameraParams`.
  """
  weights = rng.uniform(1e-8, 1.0, len(XYZ_TO_CAMS))
  xyz_to_cam = np.tensordot(weights / weights.sum(), XYZ_TO_CAMS, axes=1)
  rgb_to_cam = xyz_to_cam @ RGB_TO_XYZ
  rgb_to_cam /= rgb_to_cam.sum(axis=-1, keepdims=True)
  red_gain = rng.uniform(1.9, 2.4)
  blue_gain = rng.uniform(1.5, 1.9)
  digital_gain = 1.0 / np.clip(rng.normal(0.8, 0.1), 0.5, 1.0)
  return CameraParams(rgb_to_cam, float(red_gain), float(blue_gain),
                      float(digital_gain),
                      *sample_sensor_noise(rng, shot_noise_range))


def sample_sensor_noise(
    rng: np.random.Generator,
    shot_noise_range: tuple[float, float] = SHOT_NOISE_RANGE,
) -> tuple[float, float]:
  """(shot, read): shot log-uniform in the range, read by the log-linear fit."""
  log_shot = rng.uniform(np.log(shot_noise_range[0]),
                         np.log(shot_noise_range[1]))
  log_read = (READ_SLOPE * log_shot + READ_INTERCEPT +
              rng.normal(0.0, READ_JITTER))
  return float(np.exp(log_shot)), float(np.exp(log_read))


def unprocess(srgb: np.ndarray, cam: CameraParams) -> np.ndarray:
  """Inverse ISP: sRGB [H, W, 3] in [0, 1] -> raw camera RGB [H, W, 3].

  Inverse tone curve, inverse sRGB gamma, linear sRGB -> camera RGB, divide
  by the ISP gains. Not clipped, so `process(unprocess(x))` returns x.
  """
  lin = srgb_to_linear(inverse_tone_curve(np.asarray(srgb, np.float64)))
  return (lin @ cam.rgb_to_cam.T) / cam.gains


def _finish(white_balanced: np.ndarray, cam: CameraParams) -> np.ndarray:
  """White-balanced camera RGB -> sRGB in [0, 1]: CCM, clip, gamma, tone."""
  lin = white_balanced @ np.linalg.inv(cam.rgb_to_cam).T
  return tone_curve(linear_to_srgb(np.clip(lin, 0.0, 1.0)))


def process(raw: np.ndarray, cam: CameraParams) -> np.ndarray:
  """Forward ISP on full raw RGB [H, W, 3] -> sRGB [H, W, 3] in [0, 1]."""
  return _finish(raw * cam.gains, cam)


def process_bayer(bayer: np.ndarray, cam: CameraParams) -> np.ndarray:
  """Forward ISP on an RGGB mosaic [H, W] -> sRGB [H, W, 3] in [0, 1].

  White balance is applied per CFA site before the demosaic, as in cameras
  (Malvar's gradient correction assumes balanced channels).
  """
  return _finish(demosaic_malvar(bayer * mosaic(
      np.broadcast_to(cam.gains, bayer.shape + (3,)))), cam)


def render(srgb: np.ndarray, cam: CameraParams,
           rng: np.random.Generator | None = None) -> np.ndarray:
  """sRGB [H, W, 3] in [0, 1] photographed by `cam`: unprocess, RGGB mosaic,
  raw Poisson-Gaussian noise (skipped when `rng` is None), white balance,
  Malvar demosaic, CCM, gamma, tone curve. Returns float64 in [0, 1].

  With and without noise, the two renders differ only by the sensor noise as
  the ISP carries it (demosaicked, colour-mixed, gamma-scaled), so
  `render(x, cam)` is the clean target of `render(x, cam, rng)`.
  """
  raw = mosaic(unprocess(srgb, cam))
  if rng is not None:
    raw = add_raw_noise(raw, cam.shot_noise, cam.read_noise, rng)
  return process_bayer(raw, cam)


def mosaic(rgb: np.ndarray) -> np.ndarray:
  """RGGB Bayer sampling of [H, W, 3] -> [H, W] (same dtype)."""
  out = np.empty(rgb.shape[:2], rgb.dtype)
  out[0::2, 0::2] = rgb[0::2, 0::2, 0]
  out[0::2, 1::2] = rgb[0::2, 1::2, 1]
  out[1::2, 0::2] = rgb[1::2, 0::2, 1]
  out[1::2, 1::2] = rgb[1::2, 1::2, 2]
  return out


# Malvar, He & Cutler 2004, "High-quality linear interpolation for
# demosaicing of Bayer-patterned color images", Fig. 2 (all divided by 8).
_G_AT_RB = np.array([[0, 0, -1, 0, 0],
                     [0, 0, 2, 0, 0],
                     [-1, 2, 4, 2, -1],
                     [0, 0, 2, 0, 0],
                     [0, 0, -1, 0, 0]]) / 8.0
# The colour whose samples are the horizontal neighbours of a green site.
_RB_AT_G_ROW = np.array([[0, 0, 0.5, 0, 0],
                         [0, -1, 0, -1, 0],
                         [-1, 4, 5, 4, -1],
                         [0, -1, 0, -1, 0],
                         [0, 0, 0.5, 0, 0]]) / 8.0
_RB_AT_G_COL = _RB_AT_G_ROW.T
_RB_AT_BR = np.array([[0, 0, -1.5, 0, 0],
                      [0, 2, 0, 2, 0],
                      [-1.5, 0, 6, 0, -1.5],
                      [0, 2, 0, 2, 0],
                      [0, 0, -1.5, 0, 0]]) / 8.0

_EVEN, _ODD = slice(0, None, 2), slice(1, None, 2)
_SITES = ((_EVEN, _EVEN), (_EVEN, _ODD), (_ODD, _EVEN), (_ODD, _ODD))


def demosaic_malvar(bayer: np.ndarray) -> np.ndarray:
  """Malvar-He-Cutler gradient-corrected linear demosaic of an RGGB mosaic.

  Args:
    bayer: [H, W] float mosaic (H, W even), any value range.

  Returns:
    [H, W, 3] float64 RGB. Exact for images linear in x and y away from the
    2-pixel border; the border uses mirror padding, which keeps the CFA phase.
  """
  b = np.asarray(bayer, np.float64)
  conv = lambda k: ndimage.convolve(b, k, mode="mirror")
  g_rb, row, col, diag = (conv(_G_AT_RB), conv(_RB_AT_G_ROW),
                          conv(_RB_AT_G_COL), conv(_RB_AT_BR))
  r, g, bl = b.copy(), b.copy(), b.copy()
  ee, eo, oe, oo = _SITES
  g[ee], bl[ee] = g_rb[ee], diag[ee]  # R sites.
  r[eo], bl[eo] = row[eo], col[eo]  # G in an R row: R left/right, B up/down.
  r[oe], bl[oe] = col[oe], row[oe]  # G in a B row: B left/right, R up/down.
  r[oo], g[oo] = diag[oo], g_rb[oo]  # B sites.
  return np.stack([r, g, bl], axis=-1)


def add_raw_noise(raw: np.ndarray, shot_noise: float, read_noise: float,
                  rng: np.random.Generator) -> np.ndarray:
  """Poisson-Gaussian sensor noise: a * Poisson(x / a) + N(0, b).

  Args:
    raw: linear raw values (any shape); negatives count as 0 photons.
    shot_noise: a, the signal-to-variance gain (Var = a * x + b).
    read_noise: b, the Gaussian read-noise variance.
    rng: the generator to draw from.

  Returns:
    float64 array shaped like `raw`, unclipped (mean x, variance a x + b).
  """
  photons = rng.poisson(np.maximum(raw, 0.0) / shot_noise)
  return (shot_noise * photons +
          np.sqrt(read_noise) * rng.standard_normal(np.shape(raw)))


def resolve_jpeg_quality(quality, rng: np.random.Generator) -> int | None:
  """None, an int, or (lo, hi) drawn uniformly from the integers lo..hi."""
  if quality is None or isinstance(quality, (int, np.integer)):
    return quality
  lo, hi = quality
  return int(rng.integers(lo, hi + 1))


def jpeg(image: np.ndarray, quality: int | None) -> np.ndarray:
  """JPEG round trip through 8 bits with PIL (4:2:0 chroma, PIL's default).

  Args:
    image: [H, W, 3] float in [0, 1] (clipped first).
    quality: 1..95, or None for no compression (image returned as float32).

  Returns:
    [H, W, 3] float32 in [0, 1]; multiples of 1/255 when compressed.
  """
  if quality is None:
    return np.asarray(image, np.float32)
  u8 = np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)
  buf = io.BytesIO()
  Image.fromarray(u8).save(buf, format="JPEG", quality=int(quality))
  buf.seek(0)
  with Image.open(buf) as im:
    return np.asarray(im.convert("RGB"), np.float32) / 255.0
