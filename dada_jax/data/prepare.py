"""`dada-jax prepare`: a reference dataset cut into ArrayRecord shards.

The inputs of a preset (`presets.PRESETS`) are read in order; each gives its
windows (`presets.windows`) as records (`shards.encode_record`), and every
`shard_size` consecutive records make one shard, `PRESET-NNNNN.array_record`.
A shard is written under a temporary name and renamed when complete, then
the manifest is rewritten (atomically) listing it: its record count, size,
sha256, and the input positions (input index, window index) where it starts
and ends. So a rerun of the same command verifies the listed shards against
their checksums, keeps those that match and rewrites from its recorded start
any other: an interrupted run finishes with the bytes an uninterrupted one
writes. The manifest holds no times, so it is byte-identical too.

Unreadable inputs (and unpaired or mis-sized pairs, images smaller than the
window) are skipped with one line each on stderr and listed in the manifest.
"""

from __future__ import annotations

import concurrent.futures
import contextlib
import hashlib
import json
import os
import sys
from typing import Callable, Iterator

from array_record.python import array_record_module

from dada_jax import image_io
from dada_jax import outputs
from dada_jax.data import presets as presets_lib
from dada_jax.data import shards as shards_lib
from dada_jax.data.common import DataError

DEFAULT_SHARD_SIZE = 256  # 512 px PNG crops: ~100 MB shards
WRITER_OPTIONS = "group_size:1,uncompressed"  # random access; PNG is packed


def _sha256(path: str) -> str:
  h = hashlib.sha256()
  with open(path, "rb") as f:
    for block in iter(lambda: f.read(1 << 20), b""):
      h.update(block)
  return h.hexdigest()


def _fingerprint(inputs) -> str:
  """sha256 of the input listing: names and file sizes, in order."""
  size = lambda p: os.path.getsize(p) if os.path.isfile(p) else -1
  listing = [(name, [size(p) for p in paths]) for name, paths in inputs]
  return hashlib.sha256(json.dumps(listing).encode()).hexdigest()


class _Unusable(Exception):
  """An input file that cannot be used: (path, reason)."""


def _load(entry, preset) -> tuple[list, list]:
  """(images, windows) of one input; _Unusable(path, reason) if it fails."""
  _, paths = entry
  images = []
  for p in paths:
    try:
      images.append(image_io.read_rgb8(p))
    except image_io.ImageReadError as e:
      raise _Unusable(p, str(e).removeprefix(f"{p}: ")) from None
  if len(images) == 2 and images[0].shape != images[1].shape:
    (h0, w0, _), (h1, w1, _) = images[0].shape, images[1].shape
    raise _Unusable(paths[0], f"size {h0}x{w0} differs from its pair "
                    f"{paths[1]} ({h1}x{w1})")
  h, w = images[0].shape[:2]
  try:
    return images, presets_lib.windows(h, w, preset)
  except ValueError as e:
    raise _Unusable(paths[0], str(e)) from None


def _encode(entry, images, window) -> bytes:
  y, x, h, w = window
  meta = {"input": entry[0], "window": [y, x, h, w]}
  return shards_lib.encode_record(
      meta, [shards_lib.encode_png(im[y:y + h, x:x + w]) for im in images])


class _Records:
  """Records from input position (i, j) on, decoding ahead in threads.

  Iterating yields ("record", (i, j), bytes) per window j of input i,
  ("skip", (i, 0), (path, reason)) for an unusable input i, and
  ("input_done", (i + 1, 0), None) after the last window of input i.
  """

  def __init__(self, inputs, preset, workers: int):
    self.inputs, self.preset = inputs, preset
    self.pool = concurrent.futures.ThreadPoolExecutor(workers)
    self.ahead = workers

  def from_position(self, i: int, j: int) -> Iterator:
    loads = {}
    for k in range(i, len(self.inputs)):
      for n in range(k, min(k + self.ahead, len(self.inputs))):
        if n not in loads:
          loads[n] = self.pool.submit(_load, self.inputs[n], self.preset)
      try:
        images, wins = loads.pop(k).result()
      except _Unusable as e:
        yield "skip", (k, 0), e.args
        continue
      start = j if k == i else 0
      encoded = self.pool.map(
          lambda win, e=self.inputs[k], im=images: _encode(e, im, win),
          wins[start:])
      for n, record in enumerate(encoded, start):
        yield "record", (k, n), record
      yield "input_done", (k + 1, 0), None

  def close(self):
    self.pool.shutdown(cancel_futures=True)


def _shard_ok(output: str, entry: dict) -> bool:
  path = os.path.join(output, entry["file"])
  return (os.path.isfile(path) and os.path.getsize(path) == entry["bytes"]
          and _sha256(path) == entry["sha256"])


def _write_shard(output: str, index: int, preset: str, records: list[bytes],
                 start, end, skipped) -> dict:
  name = f"{preset}-{index:05d}.array_record"
  path = os.path.join(output, name)
  tmp = os.path.join(output, f".{name}.tmp")
  writer = array_record_module.ArrayRecordWriter(tmp, WRITER_OPTIONS)
  for r in records:
    writer.write(r)
  writer.close()
  os.replace(tmp, path)
  return {"file": name, "records": len(records),
          "bytes": os.path.getsize(path), "sha256": _sha256(path),
          "start": list(start), "end": list(end), "skipped": skipped}


def _write_manifest(output: str, manifest: dict) -> None:
  with outputs.atomic_write(os.path.join(output, shards_lib.MANIFEST),
                            "w") as f:
    json.dump(manifest, f, indent=1, sort_keys=True)
    f.write("\n")


def _previous(output: str, manifest: dict) -> list[dict]:
  """The shards of an earlier run into `output`; DataError if incompatible."""
  path = os.path.join(output, shards_lib.MANIFEST)
  if not os.path.exists(path):
    ours = [f for f in os.listdir(output) if not f.startswith(".")]
    if ours:
      raise DataError(f"--output {output}: not empty and holds no "
                      f"{shards_lib.MANIFEST}; choose a new or empty folder")
    return []
  old = shards_lib.read_manifest(output)
  if old.get("preset") != manifest["preset"]:
    raise DataError(f"--output {output}: holds preset {old.get('preset')}, "
                    f"not {manifest['preset']}; choose another folder")
  for key, what in (("shard_size", "--shard-size"), ("inputs", "the input "
                    "listing (file names and sizes)"), ("patch", "windows"),
                    ("list", "--list")):
    if old.get(key) != manifest[key]:
      raise DataError(f"--output {output}: its {old['preset']} shards "
                      f"were prepared with another {what}; rerun with the "
                      "same input and flags, or choose another folder")
  return old.get("shards", [])


def prepare(name: str, input_dir: str, output: str, *,
            list_path: str | None = None,
            shard_size: int = DEFAULT_SHARD_SIZE, workers: int = 4,
            progress: bool = True, log=None,
            after_shard: Callable[[int], None] | None = None) -> dict:
  """Prepares (or finishes preparing) `output` from `input_dir`.

  Args:
    name: the preset, a key of presets.PRESETS.
    input_dir: the folder the preset reads (see presets.Preset.layout).
    output: the folder for the shards and manifest.json (created).
    list_path: realblur_j's split list (default in `input_dir`).
    shard_size: records per shard (the last shard may hold fewer).
    workers: decoding and PNG-encoding threads.
    progress: a progress bar on stderr when it is a terminal.
    log: one line per skipped input and shard rewritten (default: stderr).
    after_shard: called with each shard index once it is listed (tests).

  Returns:
    The final manifest.

  Raises:
    DataError: unknown preset, missing or empty input, an output folder that
      holds something else, or no readable input.
  """
  log = log or (lambda line: print(line, file=sys.stderr, flush=True))
  preset = presets_lib.PRESETS.get(name)
  if preset is None:
    raise DataError(f"unknown preset {name!r}; known: "
                    f"{', '.join(presets_lib.PRESETS)}")
  if shard_size < 1:
    raise DataError(f"--shard-size {shard_size}: must be >= 1")
  input_dir = os.path.abspath(input_dir)
  inputs, listing_problems = preset.lister(input_dir, list_path)
  manifest = {
      "format": shards_lib.FORMAT, "version": shards_lib.VERSION,
      "preset": preset.name, "reference": preset.reference,
      "paired": preset.paired, "keys": ["lq", "gt"] if preset.paired else
      ["image"], "input": input_dir,
      "list": os.path.abspath(list_path) if list_path else None,
      "patch": {"size": preset.patch_size, "overlap": preset.overlap,
                "cut_when_both_sides_over": preset.min_side},
      "record_layout": "DDAR v1: JSON meta, then PNG image(s) [lq, gt]",
      "shard_size": shard_size,
      "inputs": {"count": len(inputs), "fingerprint": _fingerprint(inputs)},
      "listing_problems": [{"path": p.path, "reason": p.reason}
                           for p in listing_problems],
  }
  if os.path.exists(output) and not os.path.isdir(output):
    raise DataError(f"--output {output}: exists and is not a folder")
  os.makedirs(output, exist_ok=True)
  old = _previous(output, manifest)
  for p in listing_problems:
    log(f"skipped {p.path}: {p.reason}")

  bar = _bar(len(inputs), progress)
  emit = log

  def log(line):  # clears the bar, writes the line, redraws the bar
    with bar.external_write_mode(file=sys.stderr):
      emit(line)

  records = _Records(inputs, preset, workers)
  shards, pending, skipped, checked = [], [], [], set()
  position = start = (0, 0)
  stream = iter(())

  def keep_old() -> bool:
    """Keeps the listed shard that starts here if its bytes still match."""
    nonlocal start, position, stream
    k = len(shards)
    if k >= len(old) or old[k]["start"] != list(start) or k in checked:
      return False
    checked.add(k)
    if not _shard_ok(output, old[k]):
      log(f"rewriting {old[k]['file']}: missing or not the listed bytes")
      return False
    for e in old[k]["skipped"]:  # each run names every skipped file
      log(f"skipped {e['path']}: {e['reason']}")
    shards.append(old[k])
    start = position = tuple(old[k]["end"])
    bar.update(position[0] - bar.n)
    stream = iter(())  # read on from the kept shard's end
    return True

  def flush(end):
    nonlocal start, pending, skipped
    shards.append(_write_shard(output, len(shards), preset.name, pending,
                               start, end, skipped))
    _write_manifest(output, {**manifest, "shards": shards, "complete": False})
    if after_shard is not None:
      after_shard(len(shards) - 1)
    start, pending, skipped = end, [], []

  try:
    while True:
      if not pending and keep_old():
        continue
      event = next(stream, None)
      if event is None:
        if position[0] >= len(inputs):
          break
        stream = records.from_position(*position)
        continue
      kind, where, payload = event
      if kind == "record":
        if len(pending) == shard_size:
          flush(where)  # a shard ends where the next record starts
          if keep_old():
            continue
        pending.append(payload)
        position = (where[0], where[1] + 1)
      else:  # "skip" or "input_done": on to the next input
        if kind == "skip":
          log(f"skipped {payload[0]}: {payload[1]}")
          skipped.append({"input": where[0], "path": payload[0],
                          "reason": payload[1]})
          where = (where[0] + 1, 0)
        position = where
        bar.update(position[0] - bar.n)
    if pending:
      flush((len(inputs), 0))
  finally:
    records.close()
    bar.close()
  total = sum(s["records"] for s in shards)
  if not total:
    raise DataError(f"--input {input_dir}: no readable images for preset "
                    f"{preset.name}")
  manifest.update(shards=shards, records=total, complete=True, skipped=[
      *manifest["listing_problems"],
      *({"path": e["path"], "reason": e["reason"]}
        for s in shards for e in s["skipped"])])
  _write_manifest(output, manifest)
  return manifest


class _NoBar:
  n = 0

  def update(self, k):
    self.n += k

  def external_write_mode(self, **_):
    return contextlib.nullcontext()

  def close(self):
    pass


def _bar(total: int, progress: bool):
  if not (progress and sys.stderr.isatty()):
    return _NoBar()
  import tqdm  # pylint: disable=g-import-not-at-top
  return tqdm.tqdm(total=total, unit="image", file=sys.stderr,
                   dynamic_ncols=True)
