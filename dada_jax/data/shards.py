"""Prepared shards (`dada-jax prepare`): the record layout and their source.

A prepared directory holds `manifest.json` and ArrayRecord shard files of a
fixed number of records each (the last may hold fewer). Each record is

  b"DDAR" | version: u8 | part count: u8 | per part: length: u64 LE, bytes

with part 0 a UTF-8 JSON object (where the record came from: "input", the
relative path(s) of its input file(s), and "window", [y, x, h, w] in the
input's pixels) and parts 1.. 8-bit RGB PNG images: one for a clean-only set
({"image"}), two for a paired one (lq then gt). Decoding runs no code from
the file (no pickle): PNG bytes go to Pillow's PNG decoder only.
"""

from __future__ import annotations

import io
import json
import os
import struct

import numpy as np
from PIL import Image

from dada_jax.data.common import DataError
from dada_jax.data.common import Problem

MANIFEST = "manifest.json"
FORMAT = "dada-jax prepared shards"
VERSION = 1
MAGIC = b"DDAR"
# What the manifest's "image_key" selects: the items as stored, or one side
# of a paired set as {"image": ...} (e.g. SIDD's noisy crops as a real
# stream, GoPro's sharp crops as a clean reference stream).
IMAGE_KEYS = ("image", "lq", "gt")
_HEAD = struct.Struct("<4sBB")
_LEN = struct.Struct("<Q")


def encode_png(pixels: np.ndarray) -> bytes:
  """[H, W, 3] uint8 -> PNG bytes (zlib level 6: deterministic bytes)."""
  buf = io.BytesIO()
  Image.fromarray(np.asarray(pixels, np.uint8), "RGB").save(
      buf, "PNG", compress_level=6)
  return buf.getvalue()


def decode_png(data: bytes) -> np.ndarray:
  """PNG bytes -> [H, W, 3] uint8; ValueError if not an 8-bit RGB PNG."""
  with Image.open(io.BytesIO(data), formats=["PNG"]) as img:
    if img.mode != "RGB":
      raise ValueError(f"PNG mode {img.mode}, expected RGB")
    return np.asarray(img, np.uint8)


def encode_record(meta: dict, pngs: list[bytes]) -> bytes:
  """One record: JSON `meta` and 1 (image) or 2 (lq, gt) PNG byte strings."""
  parts = [json.dumps(meta, sort_keys=True).encode(), *pngs]
  out = [_HEAD.pack(MAGIC, VERSION, len(parts))]
  for p in parts:
    out += [_LEN.pack(len(p)), p]
  return b"".join(out)


def decode_record(record: bytes) -> tuple[dict, list[bytes]]:
  """(meta, PNG byte strings) of a record; ValueError if malformed."""
  if len(record) < _HEAD.size:
    raise ValueError(f"record of {len(record)} bytes is truncated")
  magic, version, count = _HEAD.unpack_from(record)
  if magic != MAGIC or version != VERSION:
    raise ValueError(f"not a version-{VERSION} dada-jax record")
  parts, at = [], _HEAD.size
  for _ in range(count):
    if at + _LEN.size > len(record):
      raise ValueError("record truncated in a part length")
    (n,), at = _LEN.unpack_from(record, at), at + _LEN.size
    if at + n > len(record):
      raise ValueError("record truncated in a part")
    parts.append(record[at:at + n])
    at += n
  if at != len(record) or count < 2:
    raise ValueError("record has trailing bytes or no image")
  return json.loads(parts[0]), parts[1:]


def read_manifest(directory: str) -> dict:
  """The manifest of a prepared directory; DataError if absent or unusable."""
  path = os.path.join(directory, MANIFEST)
  try:
    with open(path, encoding="utf-8") as f:
      manifest = json.load(f)
  except FileNotFoundError:
    raise DataError(f"{path}: no such file (not a `dada-jax prepare` "
                    "output)") from None
  except (OSError, ValueError) as e:
    raise DataError(f"{path}: unreadable manifest: {e}") from e
  if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
    raise DataError(f"{path}: not a `dada-jax prepare` manifest")
  if manifest.get("version") != VERSION:
    raise DataError(f"{path}: manifest version {manifest.get('version')}, "
                    f"this dada-jax reads version {VERSION}")
  return manifest


class PreparedShards:
  """Records of a `dada-jax prepare` directory, by global index.

  Elements: {"lq", "gt"} ([H, W, 3] uint8, same size) for a paired set read
  with image_key "image", else {"image": [H, W, 3] uint8} (with "lq"/"gt":
  that side of a paired set). Any record is read by index through Grain's
  ArrayRecordDataSource (each shard's index, not the whole set), so each
  host decodes only the records it uses.
  """

  def __init__(self, directory: str | os.PathLike, image_key: str = "image"):
    self.directory = os.fspath(directory)
    self.image_key = image_key
    self.name = f"PreparedShards({self.directory!r}"
    self.name += f", image_key={image_key!r})" if image_key != "image" else ")"
    self.problems: list[Problem] = []
    self.manifest: dict = {}
    self._source = None
    self._length = 0
    try:
      self.manifest = read_manifest(self.directory)
    except DataError as e:
      self.problems.append(Problem(self.directory, str(e)))
      self.stored_paired = self.paired = False
      return
    m = self.manifest
    self.stored_paired = bool(m.get("paired"))
    self.paired = self.stored_paired and image_key == "image"
    if image_key not in IMAGE_KEYS or (image_key != "image" and
                                       not self.stored_paired):
      self.problems.append(Problem(self.directory, (
          f"image_key {image_key!r}: expected 'image' for this clean-only "
          f"set ({m.get('preset')})") if image_key in IMAGE_KEYS else (
              f"image_key {image_key!r}: expected one of {IMAGE_KEYS}")))
    if not m.get("complete"):
      self.problems.append(Problem(self.directory, (
          f"preparation of {m.get('preset')} is unfinished "
          f"({len(m.get('shards', []))} shards so far): rerun the same "
          "`dada-jax prepare` command to finish it")))
    self.paths = []
    for shard in m.get("shards", []):
      path = os.path.join(self.directory, shard["file"])
      self.paths.append(path)
      if not os.path.isfile(path):
        self.problems.append(Problem(path, "shard listed in the manifest is "
                                     "missing"))
      elif os.path.getsize(path) != shard["bytes"]:
        self.problems.append(Problem(path, (
            f"{os.path.getsize(path)} bytes, the manifest says "
            f"{shard['bytes']}: rerun `dada-jax prepare` to rewrite it")))
    self._length = sum(s["records"] for s in m.get("shards", []))

  def __len__(self) -> int:
    return self._length

  def _records(self):
    if self._source is None:
      import grain  # pylint: disable=g-import-not-at-top
      self._source = grain.sources.ArrayRecordDataSource(self.paths)
    return self._source

  def record(self, index: int) -> tuple[dict, list[np.ndarray]]:
    """(meta, [image] or [lq, gt]) of record `index`, as stored."""
    if not 0 <= index < self._length:
      raise IndexError(f"{self.name}: index {index} out of range "
                       f"[0, {self._length})")
    try:
      meta, pngs = decode_record(self._records()[index])
      images = [decode_png(p) for p in pngs]
    except ValueError as e:
      raise DataError(f"{self.name}[{index}]: {e}") from e
    if len(images) != 1 + self.stored_paired:
      raise DataError(f"{self.name}[{index}]: {len(images)} images, "
                      f"expected {1 + self.stored_paired}")
    return meta, images

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    _, images = self.record(index)
    if self.paired:
      return {"lq": images[0], "gt": images[1]}
    if self.image_key == "gt":
      return {"image": images[1]}
    return {"image": images[0]}

  def __getstate__(self):  # The ArrayRecord readers reopen in each worker.
    return {**self.__dict__, "_source": None}

  def __repr__(self) -> str:
    return self.name

  def check_item(self, index: int, min_size: int) -> list[Problem]:
    """Decodes record `index`; Problems if unreadable or too small."""
    where = f"{self.name}[{index}]"
    try:
      _, images = self.record(index)
    except Exception as e:  # pylint: disable=broad-except
      return [Problem(where, f"unreadable: {e}")]
    problems = []
    if len(images) == 2 and images[0].shape != images[1].shape:
      problems.append(Problem(where, f"lq {images[0].shape[:2]} and gt "
                              f"{images[1].shape[:2]} differ in size"))
    h, w = images[0].shape[:2]
    if min(h, w) < min_size:
      problems.append(Problem(where, f"image is {h}x{w}, smaller than the "
                              f"{min_size}x{min_size} patch"))
    return problems
