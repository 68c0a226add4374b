"""`dada-jax restore`: restored PNGs for an image or a folder of images.

Everything that can be checked before the restorer runs is checked first:
the inputs, the tile side, the output folder and every output path (an
input is never replaced, an existing file only with `overwrite`). An image
that cannot be read is reported and skipped; the others are still restored.
"""

from __future__ import annotations

import os
import sys
import time

import ml_collections as mlc

from dada_jax import config_lib
from dada_jax import errors
from dada_jax import image_io
from dada_jax import models
from dada_jax import outputs
from dada_jax import predict
from dada_jax import weights


class RestoreError(errors.UserError):
  """Unusable restore inputs or outputs; the message names the flag."""


def list_inputs(path: str) -> tuple[list[str], list[str], list[str]]:
  """(image files, notes, unreadable entries) of the input `path`; see
  `image_io.scan_images`."""
  notes, unreadable = [], []
  if os.path.isdir(path):
    files, notes, unreadable = image_io.scan_images(path)
    if not files:
      raise RestoreError(f"--input {path}: folder holds no images "
                         f"({', '.join(image_io.IMAGE_EXTENSIONS)})")
  elif os.path.isfile(path):
    files = [path]
  elif os.path.islink(path):
    raise RestoreError(f"--input {path}: symbolic link to nothing "
                       f"({os.readlink(path)})")
  else:
    raise RestoreError(f"--input {path}: no such file or folder")
  stems = {}
  for f in files:
    stems.setdefault(os.path.splitext(os.path.basename(f))[0], []).append(f)
  clashes = [v for v in stems.values() if len(v) > 1]
  if clashes:
    raise RestoreError("--input: outputs would collide for inputs sharing a "
                       "stem: " + "; ".join(", ".join(c) for c in clashes))
  return files, notes, unreadable


def check_tiling(config: mlc.ConfigDict, tile: int | None) -> None:
  """Raises if `tile` (or, when None, config.predict's tiling) is unusable."""
  multiple, p = models.pad_multiple(config), config.predict
  if tile is None:
    problem = predict.tiling_problem(multiple, p.tile, p.tile_overlap)
    if problem:
      raise config_lib.ConfigError(
          f"config.predict.tile={p.tile}, tile_overlap={p.tile_overlap}: "
          f"{problem}")
    return
  problem = predict.tiling_problem(multiple, tile, 0)  # the side alone
  if problem:
    raise RestoreError(f"--tile {tile}: {problem}")
  problem = predict.tiling_problem(multiple, tile, p.tile_overlap)
  if problem:
    raise RestoreError(f"--tile {tile}: {problem} "
                       "(config.predict.tile_overlap)")


def plan_outputs(files: list[str], folder: str,
                 overwrite: bool) -> dict[str, str]:
  """{input: output PNG}; refuses to replace an input, or an existing file
  unless `overwrite`, before anything is computed."""
  planned = {f: os.path.join(folder, os.path.splitext(os.path.basename(f))[0]
                             + ".png") for f in files}
  sources = {os.path.realpath(f) for f in files}
  existing = []
  for out in planned.values():
    if os.path.realpath(out) in sources:
      raise RestoreError(f"--output {folder}: would overwrite the input "
                         f"{out}; choose another --output folder")
    if os.path.isdir(out):
      raise RestoreError(f"--output {folder}: {out} is a folder")
    if os.path.lexists(out):
      existing.append(out)
  if existing and not overwrite:
    shown = ", ".join(existing[:3]) + (
        f" and {len(existing) - 3} more" if len(existing) > 3 else "")
    raise RestoreError(f"--output {folder}: {len(existing)} file(s) would be "
                       f"overwritten ({shown}); pass --overwrite to replace "
                       "them")
  return planned


def run(config: mlc.ConfigDict, *, checkpoint: str, input: str,  # pylint: disable=redefined-builtin
        output: str, tile: int | None = None, overwrite: bool = False,
        self_ensemble: bool = False) -> int:
  """Restores `input` (an image or a folder) into PNGs in `output`.

  Args:
    config: model config (restorer, predict, data.value_range).
    checkpoint: a directory from `convert`, or a .pth/.npz.
    input: an image file or a folder of images.
    output: folder for <input stem>.png; created once something is written.
    tile: tile side (None: config.predict's choice; 0: never tile).
    overwrite: replace PNGs already in `output` (inputs never are).
    self_ensemble: average the 8 flips/rotations (`predict.restore_array`).

  Returns:
    0, or 1 when some inputs could not be read (listed on stderr).
  """
  files, notes, unreadable = list_inputs(input)
  check_tiling(config, tile)
  outputs.check_folder(output, "--output")
  planned = plan_outputs(files, output, overwrite)
  params = weights.load_params(checkpoint, config)["restorer"]
  value_range = config.data.value_range
  failures = list(unreadable)
  for n in notes + unreadable:
    print(f"note: {n}", file=sys.stderr)
  for i, path in enumerate(files, 1):
    out_path = planned[path]
    start = time.perf_counter()
    try:
      loaded = image_io.load_image(path)
    except image_io.ImageReadError as e:
      failures.append(str(e))
      print(f"[{i}/{len(files)}] FAILED {e}", file=sys.stderr)
      continue
    x = image_io.to_float(loaded.pixels, value_range)
    y = predict.restore_array(config, params, x, tile=tile,
                              self_ensemble=self_ensemble)
    os.makedirs(output, exist_ok=True)  # only once something is written
    image_io.write_png(out_path, image_io.to_uint8(y, value_range))
    note = f" ({loaded.note})" if loaded.note else ""
    h, w, _ = x.shape
    print(f"[{i}/{len(files)}] {path} -> {out_path} {w}x{h} "
          f"{time.perf_counter() - start:.2f}s{note}")
  if failures:
    total = len(files) + len(unreadable)
    print(f"dada-jax restore: {len(failures)} of {total} inputs failed:",
          file=sys.stderr)
    for f in failures:
      print(f"  {f}", file=sys.stderr)
    return 1
  print(f"restored {len(files)} images into {output}")
  return 0
