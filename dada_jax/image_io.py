"""Reading any common image as 8-bit RGB, value-range conversion, PNG writing.

Everything the project reads goes through `load_image`, so training and
restoration see the same pixels: EXIF orientation applied, grayscale and
palette expanded, alpha dropped, 16-bit scaled to 8-bit.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile

import numpy as np
from PIL import Image
from PIL import ImageOps

from dada_jax.config_lib import VALUE_RANGES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(ValueError):
  """An image that cannot be read; the message starts with its path."""


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  pixels: np.ndarray  # [H, W, 3] uint8
  note: str | None    # what was converted, e.g. "16-bit -> 8-bit", or None


def _to_rgb8(img: Image.Image) -> tuple[np.ndarray, list[str]]:
  notes = []
  mode = img.mode
  if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
    a = np.asarray(img).astype(np.float64)
    scale = 1.0
    if mode != "I" or a.max(initial=0) > 255:
      scale = 257.0
      notes.append("16-bit -> 8-bit")
    a = np.clip(np.round(a / scale), 0, 255).astype(np.uint8)
    notes.append("grayscale -> RGB")
    return np.repeat(a[..., None], 3, axis=-1), notes
  if mode == "F":
    a = np.asarray(img, np.float64)
    a = a * 255.0 if a.max(initial=0) <= 1.0 else a
    notes.append("float grayscale -> 8-bit RGB")
    a = np.clip(np.round(a), 0, 255).astype(np.uint8)
    return np.repeat(a[..., None], 3, axis=-1), notes
  if mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
      mode == "P" and "transparency" in img.info):
    notes.append("alpha dropped")
  if mode in ("L", "LA", "1"):
    notes.append("grayscale -> RGB")
  elif mode in ("P", "PA"):
    notes.append("palette -> RGB")
  elif mode == "CMYK":
    notes.append("CMYK -> RGB")
  return np.asarray(img.convert("RGB"), np.uint8), notes


def load_image(path: str | os.PathLike) -> LoadedImage:
  """Reads `path` as [H, W, 3] uint8 RGB, upright per its EXIF orientation.

  Raises:
    ImageReadError naming the file: missing, empty, truncated, or not an image.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise ImageReadError(f"{path}: no such file")
  if os.path.getsize(path) == 0:
    raise ImageReadError(f"{path}: empty file (0 bytes)")
  try:
    with Image.open(path) as img:
      img.load()
      orientation = img.getexif().get(0x0112, 1)
      img = ImageOps.exif_transpose(img)
      pixels, notes = _to_rgb8(img)
  except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
    reason = str(e) or type(e).__name__
    if "cannot identify image file" in reason:
      reason = "not an image file (or an unsupported format)"
    raise ImageReadError(f"{path}: cannot read image: {reason}") from e
  if orientation not in (1, None):
    notes.insert(0, f"EXIF orientation {orientation} applied")
  return LoadedImage(np.ascontiguousarray(pixels), "; ".join(notes) or None)


def read_rgb8(path) -> np.ndarray:
  """[H, W, 3] uint8; see `load_image`."""
  return load_image(path).pixels


def to_float(pixels: np.ndarray, value_range: str) -> np.ndarray:
  """uint8 [..., 3] -> float32 in the task range ([0, 1] or [-1, 1])."""
  lo, hi = VALUE_RANGES[value_range]
  x = pixels.astype(np.float32) / 255.0
  return x if (lo, hi) == (0.0, 1.0) else x * (hi - lo) + lo


def to_uint8(x: np.ndarray, value_range: str) -> np.ndarray:
  """float in the task range -> uint8, clipped and rounded."""
  lo, hi = VALUE_RANGES[value_range]
  x = (np.asarray(x, np.float32) - lo) / (hi - lo)
  return np.clip(np.round(x * 255.0), 0, 255).astype(np.uint8)


def write_png(path: str | os.PathLike, pixels: np.ndarray) -> None:
  """Writes an 8-bit RGB PNG atomically: a crash never leaves a partial file."""
  path = os.fspath(path)
  folder = os.path.dirname(path) or "."
  fd, tmp = tempfile.mkstemp(suffix=".png.tmp", dir=folder)
  try:
    with os.fdopen(fd, "wb") as f:
      Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(f, "PNG")
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def list_images(folder: str | os.PathLike) -> list[str]:
  """Image files directly in `folder` (by extension, case-insensitive), sorted."""
  folder = os.fspath(folder)
  return sorted(
      os.path.join(folder, n) for n in os.listdir(folder)
      if n.lower().endswith(IMAGE_EXTENSIONS)
      and os.path.isfile(os.path.join(folder, n)))
