"""Per-element Grain transforms: crop, 8-way augmentation, float, online AWGN.

All randomness comes from the `np.random.Generator` Grain passes to
`random_map`, which is seeded from the pipeline seed and the element index,
so every transform is deterministic for a seed. Elements are dicts of images;
the crop and augmentation apply the same window and the same op to every
image of one element, which keeps lq/gt pairs aligned.
"""

from __future__ import annotations

import grain
import numpy as np

from dada_jax import image_io
from dada_jax.config_lib import VALUE_RANGES

# Noise levels are in 8-bit units, as in the reference: σ ~ U[0, 75] / 255.
DEFAULT_SIGMA_RANGE = (0.0, 75.0)


def dihedral(image: np.ndarray, op: int) -> np.ndarray:
  """One of the 8 rotations/flips of an [H, W, C] image.

  Args:
    image: [H, W, C] array.
    op: 0..7; rotates by 90° * (op % 4), then flips left-right if op >= 4.

  Returns:
    The transformed image ([W, H, C] for odd rotations), contiguous.
  """
  out = np.rot90(image, op % 4, axes=(0, 1))
  if op >= 4:
    out = out[:, ::-1]
  return np.ascontiguousarray(out)


def crop_window(height: int, width: int, patch_size: int,
                rng: np.random.Generator) -> tuple[int, int]:
  """A uniformly random (top, left) of a patch_size square inside H x W."""
  if min(height, width) < patch_size:
    raise ValueError(f"image of {height}x{width} is smaller than the "
                     f"{patch_size}x{patch_size} patch")
  top = int(rng.integers(0, height - patch_size + 1))
  left = int(rng.integers(0, width - patch_size + 1))
  return top, left


def add_awgn(clean: np.ndarray, sigma: float, rng: np.random.Generator,
             value_range: str) -> np.ndarray:
  """clean + σ·N(0, 1), not clipped.

  Args:
    clean: float32 image in `value_range`.
    sigma: noise std in 8-bit units (e.g. 25 means 25/255 of the [0, 1]
      range, i.e. 50/255 in [-1, 1]).
    rng: the generator to draw the noise from.
    value_range: "zero_one" or "minus_one_one".

  Returns:
    float32 array shaped like `clean`; may leave the value range.
  """
  lo, hi = VALUE_RANGES[value_range]
  scale = np.float32(sigma / 255.0 * (hi - lo))
  return clean + scale * rng.standard_normal(clean.shape, dtype=np.float32)


class CropAndAugment(grain.transforms.RandomMap):
  """Same random square crop and dihedral op on every image of an element.

  Input: dict of [H, W, C] images (all the same H x W). Output: the same keys,
  [patch_size, patch_size, C] each. `patch_size=None` keeps the full image.
  """

  def __init__(self, patch_size: int | None, augment: bool = True):
    self.patch_size = patch_size
    self.augment = augment

  def random_map(self, element, rng: np.random.Generator):
    sizes = {k: v.shape[:2] for k, v in element.items()}
    if len(set(sizes.values())) > 1:
      raise ValueError(f"images of one element differ in size: {sizes}")
    (h, w), = set(sizes.values())
    out = dict(element)
    if self.patch_size is not None:
      top, left = crop_window(h, w, self.patch_size, rng)
      p = self.patch_size
      out = {k: v[top:top + p, left:left + p] for k, v in out.items()}
    op = int(rng.integers(0, 8)) if self.augment else 0
    return {k: dihedral(v, op) for k, v in out.items()}


class ToFloat(grain.transforms.Map):
  """uint8 images -> float32 in `value_range` ([0, 1] or [-1, 1])."""

  def __init__(self, value_range: str):
    if value_range not in VALUE_RANGES:
      raise ValueError(f"value_range={value_range!r}: expected one of "
                       f"{sorted(VALUE_RANGES)}")
    self.value_range = value_range

  def map(self, element):
    return {k: image_io.to_float(v, self.value_range)
            for k, v in element.items()}


class AddNoise(grain.transforms.RandomMap):
  """{"image": clean float32} -> {"lq": clean + σ·N(0,1), "gt": clean}.

  σ ~ U[sigma_range] per image, in 8-bit units (see `add_awgn`); a fixed level
  is sigma_range=(25, 25). The noisy image is not clipped, matching the
  reference's online noise.
  """

  def __init__(self, value_range: str,
               sigma_range: tuple[float, float] = DEFAULT_SIGMA_RANGE):
    if value_range not in VALUE_RANGES:
      raise ValueError(f"value_range={value_range!r}: expected one of "
                       f"{sorted(VALUE_RANGES)}")
    self.value_range = value_range
    self.sigma_range = tuple(float(s) for s in sigma_range)

  def random_map(self, element, rng: np.random.Generator):
    clean = element["image"]
    sigma = rng.uniform(*self.sigma_range)
    return {"lq": add_awgn(clean, sigma, rng, self.value_range), "gt": clean}
