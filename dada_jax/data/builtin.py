"""Clean demo photos that ship inside pip wheels, as a random-access source.

Lets a new user train and evaluate without downloading a dataset: eight
freely redistributable colour photos are read straight from the installed
`scikit-image` and `sporco` packages (files inside the wheels; nothing is
fetched at run time). Licences and credits: BUILTIN_IMAGES.md beside this file.

The packages are only located (`importlib.util.find_spec`), never imported:
importing sporco pulls in matplotlib and pyfftw, and the files are read with
`image_io.read_rgb8` like every other image of the project.

The train/test split is fixed and disjoint. The test split spans content: a
person (astronaut), an animal in nature (monarch), an object (coffee).
"""

from __future__ import annotations

import importlib.util
import os

import numpy as np
from PIL import Image

from dada_jax import image_io
from dada_jax.data.common import DataError
from dada_jax.data.common import list_images_recursive
from dada_jax.data.common import Problem

# name: (import name of the package, path inside it, split).
BUILTIN = {
    "chelsea": ("skimage", "data/chelsea.png", "train"),
    "rocket": ("skimage", "data/rocket.jpg", "train"),
    "kodim23": ("sporco", "data/kodim23.png", "train"),
    "sail": ("sporco", "data/sail.png", "train"),
    "tulips": ("sporco", "data/tulips.png", "train"),
    "astronaut": ("skimage", "data/astronaut.png", "test"),
    "coffee": ("skimage", "data/coffee.png", "test"),
    "monarch": ("sporco", "data/monarch.png", "test"),
}

# (height, width) of each file as shipped (scikit-image 0.26, sporco 0.2.2).
SIZES = {
    "chelsea": (300, 451), "rocket": (427, 640), "kodim23": (512, 768),
    "sail": (512, 768), "tulips": (512, 768), "astronaut": (512, 512),
    "coffee": (400, 600), "monarch": (512, 768),
}

PIP_INSTALL = {
    "skimage": "pip install scikit-image",
    # sporco's declared dependencies (matplotlib, pyfftw, future, ...) are not
    # needed to read its data files.
    "sporco": "pip install --no-deps sporco",
}

SPLITS = ("train", "test", "all")

# In a folder given by `images_dir`, sorted file i is a test image iff
# i % TEST_EVERY == 0, so both splits are non-empty from two images on.
TEST_EVERY = 4


def _package_dir(package: str) -> str | None:
  """Folder of an installed top-level package (not imported), or None."""
  try:
    spec = importlib.util.find_spec(package)
  except (ImportError, ValueError):
    return None
  locations = list(getattr(spec, "submodule_search_locations", None) or [])
  return locations[0] if locations else None


def available() -> dict[str, str]:
  """{name: absolute file path} of the BUILTIN photos present on disk."""
  found = {}
  for name, (package, relpath, _) in BUILTIN.items():
    folder = _package_dir(package)
    path = os.path.join(folder, *relpath.split("/")) if folder else None
    if path and os.path.isfile(path):
      found[name] = path
  return found


def missing() -> list[str]:
  """One line per absent BUILTIN photo: 'name: not found; <pip command>'."""
  present = available()
  return [f"{name}: {package}/{relpath} not found; {PIP_INSTALL[package]}"
          for name, (package, relpath, _) in BUILTIN.items()
          if name not in present]


def _resize_max_side(image: np.ndarray, max_side: int) -> np.ndarray:
  """Shrinks [H, W, 3] uint8 so max(H, W) <= max_side, keeping the aspect."""
  h, w = image.shape[:2]
  if max(h, w) <= max_side:
    return image
  scale = max_side / max(h, w)
  size = (max(1, round(w * scale)), max(1, round(h * scale)))
  resized = Image.fromarray(image).resize(size, Image.Resampling.LANCZOS)
  return np.asarray(resized, np.uint8)


class BuiltinPhotos:
  """Clean photos from pip wheels (or any folder): {"image": uint8 [H, W, 3]}.

  Elements are RGB uint8 in [0, 255]; with `max_side`, photos larger than it
  are shrunk (PIL Lanczos, aspect kept) so max(H, W) <= max_side.

  Args:
    split: "train", "test" or "all" (the union, sorted by name).
    images_dir: use the clean photos in this folder (recursive, sorted paths)
      instead of the built-in ones; sorted file i is in "test" iff
      i % TEST_EVERY == 0, else in "train". Needs at least two images.
    max_side: if set, the largest allowed image side in pixels.
    cache_size: decoded images kept in memory (per process; 0: none).

  Attributes:
    names: built-in names, or paths relative to `images_dir`; sorted.
    paths: the files read, in the same order.

  Raises:
    DataError: a built-in photo is missing (its package is not installed),
      or `images_dir` holds fewer than two images; the message says how to
      fix it.
    ValueError: bad `split` or `max_side`.
  """

  paired = False

  def __init__(self, split: str = "train", *,
               images_dir: str | os.PathLike | None = None,
               max_side: int | None = None, cache_size: int = 64):
    if split not in SPLITS:
      raise ValueError(f"split={split!r}: expected one of {SPLITS}")
    if max_side is not None and max_side < 1:
      raise ValueError(f"max_side={max_side}: expected a positive int")
    self.split, self.max_side, self.problems = split, max_side, []
    # Decoded (and resized) photos, so patches do not re-decode their file.
    self._cache: dict[int, np.ndarray] = {}
    self._cache_size = int(cache_size)
    if images_dir is None:
      self.images_dir = None
      self.names, self.paths = self._builtin(split)
    else:
      self.images_dir = os.fspath(images_dir)
      self.paths = self._folder(self.images_dir, split)
      self.names = [os.path.relpath(p, self.images_dir) for p in self.paths]
    where = "" if images_dir is None else f"images_dir={self.images_dir!r}, "
    self.name = (f"BuiltinPhotos(split={split!r}, {where}"
                 f"max_side={max_side})")

  @staticmethod
  def _builtin(split: str) -> tuple[list[str], list[str]]:
    present = available()
    if absent := missing():
      # Never a silently smaller set: results would not be comparable.
      raise DataError(
          f"{len(absent)} of the {len(BUILTIN)} built-in photos are missing:"
          " they ship inside the scikit-image and sporco wheels. Install "
          "them with\n  pip install scikit-image && pip install --no-deps "
          "sporco\nor pass images_dir=<a folder of clean photos>. Missing:"
          "\n  " + "\n  ".join(absent))
    names = sorted(n for n, (_, _, s) in BUILTIN.items()
                   if split in (s, "all"))
    return names, [present[n] for n in names]

  @staticmethod
  def _folder(folder: str, split: str) -> list[str]:
    found = list_images_recursive(folder) if os.path.isdir(folder) else []
    if len(found) < 2:
      state = "does not exist" if not os.path.isdir(folder) else (
          f"holds {len(found)} image(s)")
      raise DataError(f"images_dir {folder!r} {state}; it needs at least 2 "
                      "clean photos (one for train, one for test; extensions: "
                      f"{', '.join(image_io.IMAGE_EXTENSIONS)})")
    return [p for i, p in enumerate(found)
            if split == "all" or (i % TEST_EVERY == 0) == (split == "test")]

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    image = self._cache.get(index)
    if image is None:
      image = image_io.read_rgb8(self.paths[index])
      if self.max_side is not None:
        image = _resize_max_side(image, self.max_side)
      if len(self._cache) < self._cache_size:
        self._cache[index] = image
    return {"image": image}

  def __repr__(self) -> str:
    return self.name

  def check_item(self, index: int, min_size: int) -> list[Problem]:
    """Decodes item `index`; Problems if unreadable or too small (resized)."""
    path = self.paths[index]
    try:
      h, w = self[index]["image"].shape[:2]
    except Exception as e:  # pylint: disable=broad-except
      # Any decoder failure means the file is unusable; report, don't crash.
      reason = str(e).removeprefix(f"{path}: ") or type(e).__name__
      return [Problem(path, f"unreadable: {reason}")]
    if min(h, w) < min_size:
      return [Problem(path, f"image is {h}x{w}, smaller than the "
                      f"{min_size}x{min_size} patch")]
    return []
