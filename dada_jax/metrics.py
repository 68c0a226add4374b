"""PSNR / SSIM on the host in NumPy float64, with the paper's conventions.

Images are [H, W, C] arrays (C = 3 for RGB): uint8 in [0, 255], or floats in
a stated value range ("zero_one" = [0, 1], "minus_one_one" = [-1, 1]).
Floats are clipped to their range (restored outputs may overshoot), mapped to
[0, 255] and, with `quantize=True` (the default), rounded to integers, so that
metrics are those of the saved 8-bit PNGs and a uint8 image and its float
versions give identical numbers. Everything is then computed in float64.

Conventions (BasicSR basicsr/metrics/psnr_ssim.py, also copied into the
official Noise-DA scripts):
  * crop_border pixels are removed on each side before anything else;
  * y_channel: ITU-R BT.601 luma Y = 16 + 65.481 R + 128.553 G + 24.966 B with
    R, G, B in [0, 1], so Y is in [16, 235] (not rounded). BasicSR computes
    this intermediate in float32; here it is float64 (differences ~1e-6 dB);
  * PSNR = 10 log10(255^2 / MSE), MSE over all pixels and channels; identical
    images give inf;
  * SSIM, window "gaussian11": 11x11 Gaussian, sigma 1.5, 'valid' filtering
    (BasicSR's cv2.filter2D(...)[5:-5, 5:-5]), C1 = (0.01*255)^2,
    C2 = (0.03*255)^2, computed per channel and averaged.
Other SSIM windows, for the other official scripts:
  * "uniform7": skimage.metrics.structural_similarity defaults on uint8 with
    channel_axis: 7x7 uniform window, sample covariance (x 49/48),
    data_range 255, map cropped by 3 (= 'valid'), per channel and averaged;
  * "matlab3d": MATLAB's ssim(A, ref) on an H x W x 3 array, which MATLAB
    treats as a 3-D volume: separable 11-tap Gaussian (sigma 1.5) along H, W
    and C with replicate padding, 'same' size map, mean over the whole map.
    Written from MATLAB's documented algorithm; not checked against MATLAB
    (which also works in single precision).
SSIM is invariant to the [0, 1] vs [0, 255] scale because C1, C2 scale with
the data range, so MATLAB's [0, 1] computations equal these on [0, 255].

Presets (`PRESETS`) and the official evaluation each one reproduces:
  "rgb"          BasicSR RGB PSNR/SSIM, no crop (generic).
  "y"            Deraining: Noise-DA Deraining/eva_derain.py (Y channel,
                 crop 0, on the saved 8-bit PNGs), as in Restormer/MPRNet.
  "y_crop4"      Y channel with a 4-pixel crop (super-resolution convention).
  "skimage_rgb"  Deblurring: Noise-DA Deblurring/eval_deblur.py, skimage
                 peak_signal_noise_ratio / structural_similarity(channel_axis=2)
                 on the 8-bit PNGs. No alignment is done (RealBlur's own
                 alignment-based evaluation is not implemented here).
  "sidd_matlab"  Denoising, SIDD validation: Noise-DA Denoising/eva_denoise.m,
                 MATLAB psnr/ssim per 256x256 block of the float Idenoised.mat
                 in [0, 1] (so no quantisation) against im2single(GT);
                 average the per-block numbers over the 40x32 blocks.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

VALUE_RANGES = {"zero_one": (0.0, 1.0), "minus_one_one": (-1.0, 1.0)}
SSIM_WINDOWS = ("gaussian11", "uniform7", "matlab3d")
_C1 = (0.01 * 255.0)**2
_C2 = (0.03 * 255.0)**2
# BT.601 luma weights for R, G, B in [0, 1] (they sum to 219 = 235 - 16).
_Y_WEIGHTS = np.array([65.481, 128.553, 24.966])


@dataclasses.dataclass(frozen=True)
class Preset:
  """One evaluation convention: arguments shared by `psnr` and `ssim`."""
  y_channel: bool = False
  crop_border: int = 0
  ssim_window: str = "gaussian11"
  quantize: bool = True
  description: str = ""


PRESETS = {
    "rgb": Preset(description="BasicSR PSNR/SSIM on RGB, no crop."),
    "y": Preset(y_channel=True,
                description="BasicSR Y-channel PSNR/SSIM, no crop: deraining "
                "(Noise-DA Deraining/eva_derain.py)."),
    "y_crop4": Preset(y_channel=True, crop_border=4,
                      description="BasicSR Y-channel PSNR/SSIM, 4-pixel "
                      "crop."),
    "skimage_rgb": Preset(ssim_window="uniform7",
                          description="skimage defaults on uint8 RGB: "
                          "deblurring (Noise-DA Deblurring/eval_deblur.py), "
                          "no alignment."),
    "sidd_matlab": Preset(ssim_window="matlab3d", quantize=False,
                          description="MATLAB psnr/ssim on float blocks in "
                          "[0, 1]: SIDD validation (Noise-DA "
                          "Denoising/eva_denoise.m)."),
}


def to_255(img, value_range: str | None = None, *,
           quantize: bool = True) -> np.ndarray:
  """Converts an image to float64 on the [0, 255] scale.

  Args:
    img: array of any shape; uint8 in [0, 255] (value_range is then ignored)
      or floating point in `value_range`.
    value_range: "zero_one" or "minus_one_one"; required for float input.
    quantize: round to integers (the 8-bit image) after clipping.

  Returns:
    float64 array, same shape, in [0, 255].
  """
  x = np.asarray(img)
  if x.dtype == np.uint8:
    return x.astype(np.float64)
  if x.dtype.kind in "biu":
    raise TypeError(f"integer images must be uint8, got {x.dtype}")
  if value_range not in VALUE_RANGES:
    raise ValueError(f"value_range={value_range!r} must be one of "
                     f"{sorted(VALUE_RANGES)} for {x.dtype} images")
  lo, hi = VALUE_RANGES[value_range]
  x = (np.clip(x.astype(np.float64), lo, hi) - lo) * (255.0 / (hi - lo))
  return np.round(x) if quantize else x


def rgb_to_y(img255: np.ndarray) -> np.ndarray:
  """BT.601 luma: [..., 3] RGB in [0, 255] -> [..., 1] Y in [16, 235]."""
  return ((img255 / 255.0) @ _Y_WEIGHTS + 16.0)[..., None]


def _prepare(a, b, value_range, crop_border, y_channel, quantize):
  """Both images as float64 [H', W', C'] on the 255 scale, cropped (and Y)."""
  a = to_255(a, value_range, quantize=quantize)
  b = to_255(b, value_range, quantize=quantize)
  if a.shape != b.shape:
    raise ValueError(f"image shapes differ: {a.shape} vs {b.shape}")
  if a.ndim != 3:
    raise ValueError(f"images must be [H, W, C], got shape {a.shape}")
  c = int(crop_border)
  if c != crop_border or c < 0 or 2 * c >= min(a.shape[:2]):
    raise ValueError(f"crop_border={crop_border} invalid for shape {a.shape}")
  if c:
    a, b = a[c:-c, c:-c], b[c:-c, c:-c]
  if y_channel:
    if a.shape[-1] != 3:
      raise ValueError(f"y_channel needs RGB images, got shape {a.shape}")
    a, b = rgb_to_y(a), rgb_to_y(b)
  return a, b


def psnr(a, b, *, value_range: str | None = None, crop_border: int = 0,
         y_channel: bool = False, quantize: bool = True) -> float:
  """PSNR in dB on the [0, 255] scale (BasicSR calculate_psnr).

  Args:
    a, b: [H, W, C] images, uint8 or float in `value_range` (see `to_255`).
    value_range: "zero_one" / "minus_one_one"; needed for float inputs.
    crop_border: pixels removed from each side.
    y_channel: compare the BT.601 Y channel only (C must be 3).
    quantize: round float inputs to 8-bit values first.

  Returns:
    10 log10(255^2 / MSE); float("inf") when the (processed) images are equal.
  """
  a, b = _prepare(a, b, value_range, crop_border, y_channel, quantize)
  mse = float(np.mean((a - b)**2))
  if mse == 0.0:
    return math.inf
  return float(10.0 * np.log10(255.0**2 / mse))


def _gaussian_1d(size: int = 11, sigma: float = 1.5) -> np.ndarray:
  """cv2.getGaussianKernel(size, sigma): normalised sampled Gaussian."""
  x = np.arange(size) - (size - 1) / 2.0
  g = np.exp(-x * x / (2.0 * sigma * sigma))
  return g / g.sum()


def _filter_valid(x: np.ndarray, kernel: np.ndarray, axes) -> np.ndarray:
  """Separable 'valid' correlation of x with `kernel` along each of `axes`."""
  for ax in axes:
    windows = np.lib.stride_tricks.sliding_window_view(x, kernel.size, axis=ax)
    x = windows @ kernel
  return x


def _ssim_map(a, b, local_mean, cov_norm=1.0):
  """SSIM map from local means; local_mean maps an array to its filtered one."""
  mu1, mu2 = local_mean(a), local_mean(b)
  mu1_sq, mu2_sq, mu1_mu2 = mu1 * mu1, mu2 * mu2, mu1 * mu2
  s1 = cov_norm * (local_mean(a * a) - mu1_sq)
  s2 = cov_norm * (local_mean(b * b) - mu2_sq)
  s12 = cov_norm * (local_mean(a * b) - mu1_mu2)
  return (((2.0 * mu1_mu2 + _C1) * (2.0 * s12 + _C2)) /
          ((mu1_sq + mu2_sq + _C1) * (s1 + s2 + _C2)))


def ssim(a, b, *, value_range: str | None = None, crop_border: int = 0,
         y_channel: bool = False, quantize: bool = True,
         window: str = "gaussian11") -> float:
  """Mean SSIM (BasicSR calculate_ssim by default), in [-1, 1].

  Args:
    a, b: [H, W, C] images, uint8 or float in `value_range` (see `to_255`).
    value_range: "zero_one" / "minus_one_one"; needed for float inputs.
    crop_border: pixels removed from each side.
    y_channel: compare the BT.601 Y channel only (C must be 3).
    quantize: round float inputs to 8-bit values first.
    window: "gaussian11" (BasicSR), "uniform7" (skimage defaults) or
      "matlab3d" (MATLAB ssim on an RGB array); see the module docstring.
      After cropping, H and W must be at least 11 (7 for "uniform7").

  Returns:
    The SSIM map's mean (per channel, then averaged over channels, except
    "matlab3d" which averages its one volumetric map).
  """
  a, b = _prepare(a, b, value_range, crop_border, y_channel, quantize)
  if window == "matlab3d":
    g = _gaussian_1d()
    pad = g.size // 2

    def local_mean(x):
      return _filter_valid(np.pad(x, pad, mode="edge"), g, (0, 1, 2))

    return float(np.mean(_ssim_map(a, b, local_mean)))
  if window == "gaussian11":
    k, cov_norm = _gaussian_1d(), 1.0
  elif window == "uniform7":
    k, cov_norm = np.full(7, 1.0 / 7.0), 49.0 / 48.0
  else:
    raise ValueError(f"window={window!r} must be one of {SSIM_WINDOWS}")
  if min(a.shape[:2]) < k.size:
    raise ValueError(f"SSIM window {window} needs images of at least "
                     f"{k.size}x{k.size} after cropping, got {a.shape}")

  def local_mean_2d(x):
    return _filter_valid(x, k, (0, 1))

  per_channel = [np.mean(_ssim_map(a[..., c], b[..., c], local_mean_2d,
                                   cov_norm)) for c in range(a.shape[-1])]
  return float(np.mean(per_channel))


def get_preset(preset: str | Preset) -> Preset:
  """Returns `preset` itself or the named entry of `PRESETS`."""
  if isinstance(preset, Preset):
    return preset
  if preset not in PRESETS:
    raise ValueError(f"unknown metrics preset {preset!r}; "
                     f"known: {sorted(PRESETS)}")
  return PRESETS[preset]


def evaluate_pair(restored, target, preset: str | Preset = "rgb",
                  value_range: str | None = None, *,
                  quantize: bool | None = None) -> dict[str, float]:
  """PSNR and SSIM of one restored / target pair under a preset.

  Args:
    restored: [H, W, 3] restored image (uint8, or float in value_range;
      clipped to it).
    target: [H, W, 3] ground truth, same shape (uint8 or float).
    preset: a name in `PRESETS` or a `Preset`.
    value_range: "zero_one" / "minus_one_one" for float inputs.
    quantize: overrides the preset's quantisation when not None.

  Returns:
    {"psnr": dB (inf if equal), "ssim": mean SSIM}.
  """
  p = get_preset(preset)
  q = p.quantize if quantize is None else quantize
  common = dict(value_range=value_range, crop_border=p.crop_border,
                y_channel=p.y_channel, quantize=q)
  return {"psnr": psnr(restored, target, **common),
          "ssim": ssim(restored, target, window=p.ssim_window, **common)}
