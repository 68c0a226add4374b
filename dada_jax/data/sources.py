"""Random-access image sources for Grain, and their validation.

Every source has `__len__` and `__getitem__` (Grain's RandomAccessDataSource
protocol) and yields dicts of [H, W, 3] uint8 numpy images:

  * paired sources (`paired = True`): {"lq": degraded, "gt": clean}, same size;
  * single sources (`paired = False`): {"image": ...}.

Constructors only list files (cheap) and never raise for bad data; they
record what they found wrong. `check_sources` then opens every image once and
raises a single `DataError` listing every problem, so a broken dataset is
reported in full before training instead of one file per crash.
"""

from __future__ import annotations

import collections
import concurrent.futures
import os
from typing import Any, Sequence

import numpy as np

from dada_jax import image_io
from dada_jax.data.common import DataError
from dada_jax.data.common import list_images_recursive
from dada_jax.data.common import Problem

IMAGE_EXTENSIONS = image_io.IMAGE_EXTENSIONS


def _read_rgb8(path: str) -> np.ndarray:
  """[H, W, 3] uint8; raises a ValueError naming `path` if unreadable."""
  return image_io.read_rgb8(path)


def _folder_problems(folder: str) -> list[Problem]:
  if not os.path.isdir(folder):
    return [Problem(folder, "folder does not exist")]
  return [Problem(folder, "folder holds no images (extensions: "
                  f"{', '.join(IMAGE_EXTENSIONS)})")]


def read_flist(flist_path: str) -> tuple[list[str], list[Problem]]:
  """Resolves a `.flist` (one image path per line, blank lines skipped).

  Each entry is tried as given (absolute), then relative to the flist's
  folder, then relative to the working directory.

  Returns:
    (paths, problems): one path per entry (unresolved ones as written, joined
    to the flist's folder), and a Problem for every entry that does not exist.
  """
  if not os.path.isfile(flist_path):
    return [], [Problem(flist_path, "flist file does not exist")]
  base = os.path.dirname(os.path.abspath(flist_path))
  paths, problems = [], []
  with open(flist_path, encoding="utf-8") as f:
    lines = [line.strip() for line in f]
  for lineno, entry in enumerate(lines, 1):
    if not entry:
      continue
    candidates = [os.path.join(base, entry), os.path.abspath(entry)]
    if os.path.isabs(entry):
      candidates = [entry]
    path = next((c for c in candidates if os.path.isfile(c)), None)
    if path is None:
      path = candidates[0]
      problems.append(Problem(path, f"listed in {flist_path} line {lineno} "
                              "but does not exist"))
    paths.append(path)
  if not paths:
    problems.append(Problem(flist_path, "flist lists no images"))
  return paths, problems


def _by_stem(folder: str) -> tuple[dict[str, str], list[Problem]]:
  """{relative path without extension: path}; same-stem files are ambiguous."""
  paths = list_images_recursive(folder) if os.path.isdir(folder) else []
  if not paths:
    return {}, _folder_problems(folder)
  groups = collections.defaultdict(list)
  for p in paths:
    groups[os.path.splitext(os.path.relpath(p, folder))[0]].append(p)
  stems = {k: v[0] for k, v in groups.items() if len(v) == 1}
  problems = [Problem(p, f"ambiguous: {len(v)} files share the stem {k!r}")
              for k, v in groups.items() if len(v) > 1 for p in v]
  return stems, problems


def _list_pair(lister, lq: str, gt: str):
  """(lq listing, gt listing, both listings' problems) by `lister`."""
  lq_found, lq_problems = lister(lq)
  gt_found, gt_problems = lister(gt)
  return lq_found, gt_found, lq_problems + gt_problems


class _FileSource:
  """Shared parts of the file-backed sources: listing, reading, checking."""

  paired = False
  name = ""

  def __init__(self):
    self.paths: list[Any] = []  # str, or (lq, gt) tuples when paired.
    self.problems: list[Problem] = []

  def __len__(self) -> int:
    return len(self.paths)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    entry = self.paths[index]
    if self.paired:
      return {"lq": _read_rgb8(entry[0]), "gt": _read_rgb8(entry[1])}
    return {"image": _read_rgb8(entry)}

  def __repr__(self) -> str:
    return self.name

  def check_item(self, index: int, min_size: int) -> list[Problem]:
    """Decodes item `index`; Problems for unreadable/too-small/mismatched."""
    entry = self.paths[index]
    files = entry if self.paired else (entry,)
    problems, shapes = [], []
    for path in files:
      try:
        shape = _read_rgb8(path).shape
      except Exception as e:  # pylint: disable=broad-except
        # Any decoder failure means the file is unusable; report, don't crash.
        reason = str(e).removeprefix(f"{path}: ") or type(e).__name__
        problems.append(Problem(path, f"unreadable: {reason}"))
        continue
      shapes.append(shape)
      if min(shape[:2]) < min_size:
        problems.append(Problem(path, f"image is {shape[0]}x{shape[1]}, "
                                f"smaller than the {min_size}x{min_size} "
                                "patch"))
    if self.paired and len(shapes) == 2 and shapes[0] != shapes[1]:
      (h0, w0, _), (h1, w1, _) = shapes
      problems.append(Problem(files[0], f"size {h0}x{w0} differs from its "
                              f"pair {files[1]} ({h1}x{w1})"))
    return problems


class ImageFolder(_FileSource):
  """Unpaired images under `folder` (recursive, sorted): {"image": uint8}."""

  def __init__(self, folder: str | os.PathLike):
    super().__init__()
    folder = os.fspath(folder)
    self.name = f"ImageFolder({folder!r})"
    self.paths = (list_images_recursive(folder) if os.path.isdir(folder)
                  else [])
    if not self.paths:
      self.problems = _folder_problems(folder)


class PairedFolders(_FileSource):
  """Degraded/clean pairs matched by relative path stem ('a.png' ~ 'a.jpg').

  Elements: {"lq": [H, W, 3] uint8, "gt": [H, W, 3] uint8}, sorted by stem.
  """

  paired = True

  def __init__(self, lq_dir: str | os.PathLike, gt_dir: str | os.PathLike):
    super().__init__()
    lq_dir, gt_dir = os.fspath(lq_dir), os.fspath(gt_dir)
    self.name = f"PairedFolders(lq_dir={lq_dir!r}, gt_dir={gt_dir!r})"
    lq, gt, self.problems = _list_pair(_by_stem, lq_dir, gt_dir)
    if lq and gt:
      self.problems += [Problem(lq[s], f"no file with this stem in {gt_dir}")
                        for s in sorted(lq.keys() - gt.keys())]
      self.problems += [Problem(gt[s], f"no file with this stem in {lq_dir}")
                        for s in sorted(gt.keys() - lq.keys())]
    self.paths = [(lq[s], gt[s]) for s in sorted(lq.keys() & gt.keys())]


class FlistSource(_FileSource):
  """Images listed in a `.flist` text file, in file order: {"image": uint8}."""

  def __init__(self, flist_path: str | os.PathLike):
    super().__init__()
    flist_path = os.fspath(flist_path)
    self.name = f"FlistSource({flist_path!r})"
    self.paths, self.problems = read_flist(flist_path)


class PairedFlists(_FileSource):
  """Pairs from two `.flist` files matched by line order: {"lq", "gt"}."""

  paired = True

  def __init__(self, lq_flist: str | os.PathLike, gt_flist: str | os.PathLike):
    super().__init__()
    lq_flist, gt_flist = os.fspath(lq_flist), os.fspath(gt_flist)
    self.name = f"PairedFlists(lq_flist={lq_flist!r}, gt_flist={gt_flist!r})"
    lq, gt, self.problems = _list_pair(read_flist, lq_flist, gt_flist)
    if lq and gt and len(lq) != len(gt):
      self.problems.append(Problem(
          lq_flist, f"lists {len(lq)} images but {gt_flist} lists {len(gt)}"))
    self.paths = list(zip(lq, gt))


class TfdsSource:
  """A TFDS dataset (ArrayRecord format) read without TensorFlow.

  Elements: {"image": [H, W, 3] uint8}; grayscale is expanded to RGB and an
  alpha channel dropped.
  """

  paired = False

  def __init__(self, name_or_builder_dir: str | os.PathLike, split: str,
               image_key: str = "image", data_dir: str | None = None):
    import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top
    spec = os.fspath(name_or_builder_dir)
    self.name = f"TfdsSource({spec!r}, split={split!r})"
    self.image_key = image_key
    self.problems = []
    if os.path.isfile(os.path.join(spec, "dataset_info.json")):
      builder = tfds.builder_from_directory(spec)
    else:
      builder = tfds.builder(spec, data_dir=data_dir)
    self._source = builder.as_data_source(split=split)
    if image_key not in builder.info.features:
      self.problems.append(Problem(spec, f"no feature {image_key!r}; has "
                                   f"{sorted(builder.info.features)}"))

  def __len__(self) -> int:
    return len(self._source)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    image = np.asarray(self._source[index][self.image_key])
    if image.dtype != np.uint8:
      raise DataError(f"{self.name}[{index}]: {self.image_key!r} has dtype "
                      f"{image.dtype}, expected uint8")
    if image.ndim == 2:
      image = image[..., None]
    if image.shape[-1] == 1:
      image = np.repeat(image, 3, axis=-1)
    return {"image": image[..., :3]}

  def __repr__(self) -> str:
    return self.name

  def check_item(self, index: int, min_size: int) -> list[Problem]:
    where = f"{self.name}[{index}]"
    try:
      shape = self[index]["image"].shape
    except Exception as e:  # pylint: disable=broad-except
      return [Problem(where, f"unreadable: {e}")]
    if min(shape[:2]) < min_size:
      return [Problem(where, f"image is {shape[0]}x{shape[1]}, smaller than "
                      f"the {min_size}x{min_size} patch")]
    return []


class SyntheticClean:
  """Procedural clean images (smooth gradients plus shapes), for tests/benches.

  Element i is {"image": [H, W, 3] uint8}, a pure function of (seed, i).
  """

  paired = False

  def __init__(self, num: int, size: int | tuple[int, int] = 64,
               seed: int = 0):
    self.num, self.seed = num, seed
    self.size = (size, size) if isinstance(size, int) else tuple(size)
    self.name = f"SyntheticClean(num={num}, size={self.size}, seed={seed})"
    self.problems = []

  def __len__(self) -> int:
    return self.num

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < self.num:
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, index])
    h, w = self.size
    y, x = np.mgrid[0:h, 0:w].astype(np.float32)
    y, x = y / max(h - 1, 1), x / max(w - 1, 1)
    a, b, c = rng.uniform(-1, 1, (3, 3)).astype(np.float32)
    xy = (x + y)[..., None]
    img = 0.5 + 0.25 * (a * x[..., None] + b * y[..., None]) + 0.1 * np.sin(
        6.0 * c * xy)
    for _ in range(rng.integers(2, 6)):
      cy, cx, r = rng.uniform(0, 1, 3) * (h, w, min(h, w) / 3)
      color = rng.uniform(0, 1, 3).astype(np.float32)
      if rng.random() < 0.5:
        mask = (y * (h - 1) - cy) ** 2 + (x * (w - 1) - cx) ** 2 < r * r
      else:
        mask = (abs(y * (h - 1) - cy) < r) & (abs(x * (w - 1) - cx) < r / 2)
      img[mask] = color
    return {"image": np.clip(np.round(img * 255), 0, 255).astype(np.uint8)}

  def __repr__(self) -> str:
    return self.name

  def check_item(self, index: int, min_size: int) -> list[Problem]:
    if min(self.size) < min_size:
      return [Problem(f"{self.name}[{index}]", "smaller than the patch")]
    return []


def check_sources(sources: Sequence[Any], min_size: int = 0, *,
                  decode: bool = True, num_threads: int | None = None,
                  shard: tuple[int, int] = (0, 1)) -> None:
  """Raises one DataError listing every problem found in `sources`.

  Args:
    sources: sources from this module (each has `problems` from listing and
      `check_item(index, min_size)`, or its own `check(min_size)`, as a
      generated source of many items has).
    min_size: smallest allowed image height and width (the training patch).
    decode: also open and decode every image once (slow for big datasets);
      otherwise only the listing problems (missing folders, unmatched pairs,
      missing flist entries) are reported.
    num_threads: decoding threads (default: the CPU count).
    shard: (host, host_count): decode only items host, host + host_count, ...
      (on a pod the hosts together decode each image once).

  Raises:
    DataError: first line a summary naming the sources with problems, then one
      `path: reason` line per problem.
  """
  per_source = {}
  for source in sources:
    problems = list(source.problems)
    listed = {p.path for p in problems}  # e.g. missing: no second line
    own_check = getattr(source, "check", None)
    if decode and own_check is not None:  # a generated source checks itself
      problems.extend(p for p in own_check(min_size) if p.path not in listed)
    elif decode and len(source):
      with concurrent.futures.ThreadPoolExecutor(num_threads) as pool:
        for item_problems in pool.map(
            lambda i, s=source: s.check_item(i, min_size),
            range(shard[0], len(source), shard[1])):
          problems.extend(p for p in item_problems if p.path not in listed)
    if problems:
      per_source[repr(source)] = problems
  if per_source:
    count = sum(len(p) for p in per_source.values())
    lines = [f"{count} data problem(s) in {', '.join(per_source)}:"]
    for name, problems in per_source.items():
      tag = f"  [{name}]" if len(per_source) > 1 else ""
      lines += [f"  {p.path}: {p.reason}{tag}" for p in problems]
    raise DataError("\n".join(lines))
