"""Reading any common image as 8-bit RGB, value-range conversion, PNG writing.

Everything the project reads goes through `load_image`, so training and
restoration see the same pixels: EXIF orientation applied, grayscale and
palette expanded, alpha dropped, 16-bit scaled to 8-bit.
"""

from __future__ import annotations

import dataclasses
import os

import numpy as np
from PIL import Image
from PIL import ImageOps

from dada_jax import errors
from dada_jax import outputs
from dada_jax.config_lib import VALUE_RANGES

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class ImageReadError(errors.UserError):
  """An image that cannot be read; the message starts with its path."""


@dataclasses.dataclass(frozen=True)
class LoadedImage:
  pixels: np.ndarray  # [H, W, 3] uint8
  note: str | None    # what was converted, e.g. "16-bit -> 8-bit", or None


def _to_rgb8(img: Image.Image,
             deep: bool = False) -> tuple[np.ndarray, list[str]]:
  """([H, W, 3] uint8 pixels, conversion notes) of a loaded image.

  `deep`: the file stores 16 bits per sample, which Pillow has already cut to
  8 for RGB(A) and LA (keeping the high byte, i.e. v >> 8; the grayscale
  16-bit modes below round v / 257 instead, they differ by at most 1).
  """
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
  if deep:
    notes.append("16-bit -> 8-bit")
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
      frames = getattr(img, "n_frames", 1)
      # Before load(), which clears the tiles: a tile's decoder arguments
      # start with its raw mode (e.g. "RGB;16B"), which tells whether the
      # file holds 16-bit samples that Pillow will cut to 8 bits.
      deep = False
      for tile in img.tile:
        args = tile[3]
        rawmode = args[0] if isinstance(args, tuple) and args else args
        deep = deep or (isinstance(rawmode, str) and ";16" in rawmode)
      img.load()
      orientation = img.getexif().get(0x0112, 1)
      img = ImageOps.exif_transpose(img)
      pixels, notes = _to_rgb8(img, deep)
  # Pillow's decoders raise many types on malformed files (struct.error,
  # IndexError, ZeroDivisionError, MemoryError, ...); all mean "unreadable".
  except Exception as e:  # pylint: disable=broad-exception-caught
    if isinstance(e, (OSError, ValueError, SyntaxError)):
      reason = str(e) or type(e).__name__
    else:
      reason = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
    if "cannot identify image file" in reason:
      reason = "not an image file (or an unsupported format)"
    reason = " ".join(reason.split())[:300]
    raise ImageReadError(f"{path}: cannot read image: {reason}") from e
  if pixels.ndim != 3 or 0 in pixels.shape:
    raise ImageReadError(f"{path}: cannot read image: it has no pixels "
                         f"(size {list(pixels.shape[:2])})")
  if orientation in range(2, 9):
    notes.insert(0, f"EXIF orientation {orientation} applied")
  if frames > 1:
    notes.insert(0, f"first of {frames} frames used")
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
  with outputs.atomic_write(path) as f:
    Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(f, "PNG")


def scan_images(folder: str | os.PathLike):
  """(image files, notes, unreadable): what `folder` holds directly.

  Entries are picked by extension. Folders named like images are left out
  with a note each; symbolic links that point nowhere are left out as
  unreadable, each with its reason (the caller counts them as failed inputs).
  """
  folder = os.fspath(folder)
  files, notes, unreadable = [], [], []
  for name in sorted(os.listdir(folder)):
    if not name.lower().endswith(IMAGE_EXTENSIONS):
      continue
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      files.append(path)
    elif os.path.isdir(path):
      notes.append(f"{path}: skipped, a folder named like an image")
    elif os.path.islink(path):
      unreadable.append(f"{path}: skipped, a symbolic link to nothing "
                        f"({os.readlink(path)})")
    else:
      notes.append(f"{path}: skipped, not a regular file")
  return files, notes, unreadable
