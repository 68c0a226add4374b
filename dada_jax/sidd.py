"""SIDD sRGB validation / benchmark blocks: reading them, writing Idenoised.mat.

The SIDD files hold one uint8 array [N_img, N_blk, H, W, 3] (40 x 32 blocks
of 256 x 256 RGB for the real files):
  ValidationNoisyBlocksSrgb.mat  variable ValidationNoisyBlocksSrgb
  ValidationGtBlocksSrgb.mat     variable ValidationGtBlocksSrgb
  BenchmarkNoisyBlocksSrgb.mat   variable BenchmarkNoisyBlocksSrgb
They are MATLAB v5 files (read with scipy.io). MATLAB v7.3 (HDF5) copies are
read too when h5py is installed.

`write_denoised` writes the restored blocks the way the official Noise-DA test
code does: variable `Idenoised`, float32 in [0, 1], unquantised, same block
layout, which is what Noise-DA's Denoising/eva_denoise.m expects (it compares
against im2single(ValidationGtBlocksSrgb); see metrics.PRESETS["sidd_matlab"]).
`dtype="uint8"` writes rounded 8-bit blocks instead (4x smaller; what 8-bit
evaluation and SIDD's own uint8 block format use). The official SIDD online
benchmark submission format (a cell array in its own .mat bundle) is not
written here.
"""

from __future__ import annotations

import os
import pathlib
from typing import Iterator

import numpy as np
import scipy.io
from scipy.io import matlab

from dada_jax import errors
from dada_jax import metrics
from dada_jax import outputs

KNOWN_KEYS = ("ValidationNoisyBlocksSrgb", "ValidationGtBlocksSrgb",
              "BenchmarkNoisyBlocksSrgb")
DENOISED_KEY = "Idenoised"


class SiddError(errors.UserError):
  """A SIDD .mat file is missing, unreadable or not what was expected."""


def _pick_key(path, names, key):
  """The variable to read: `key`, or the only non-`__` one when key is None."""
  visible = [n for n in names if not n.startswith("__")]
  if key is None:
    if len(visible) != 1:
      known = ", ".join(KNOWN_KEYS)
      if not visible:
        raise SiddError(f"{path}: holds no variables; expected one array of "
                        f"SIDD blocks (SIDD names it one of {known})")
      raise SiddError(
          f"{path}: holds {len(visible)} variables {visible}, so the blocks "
          "cannot be picked automatically; save the blocks alone in their "
          f"own .mat file (SIDD names the variable one of {known}) "
          "(Python API: pass key=NAME)")
    return visible[0]
  if key not in visible:
    raise SiddError(f"{path}: no variable {key!r}; it holds {visible}")
  return key


def _load_hdf5(path, key):
  """Reads a MATLAB v7.3 variable, restoring MATLAB's axis order."""
  try:
    import h5py  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise SiddError(
        f"{path} is a MATLAB v7.3 (HDF5) file, which needs h5py (not "
        "installed): install h5py, or re-save the file in MATLAB with "
        "save(..., '-v7')") from None
  try:
    with h5py.File(path, "r") as f:
      # '#refs#' / '#subsystem#' are MATLAB's bookkeeping groups.
      key = _pick_key(path, [n for n in f.keys() if not n.startswith("#")],
                      key)
      data = np.asarray(f[key])
  except OSError as e:
    raise SiddError(f"{path}: cannot read as HDF5 ({e})") from e
  # HDF5 stores MATLAB's column-major array with its dimensions reversed.
  return np.transpose(data), key


def _load_variable(path, key):
  """(array, key) of one variable of a .mat file, with SiddError on failure."""
  path = pathlib.Path(path)
  if not path.is_file():
    raise SiddError(f"{path}: no such file")
  try:
    major, _ = matlab.matfile_version(str(path))
    if major == 2:
      return _load_hdf5(path, key)
    key = _pick_key(path, [n for n, _, _ in scipy.io.whosmat(str(path))], key)
    return scipy.io.loadmat(str(path), variable_names=[key])[key], key
  except SiddError:
    raise
  except (OSError, ValueError, TypeError, IndexError,
          matlab.MatReadError) as e:
    raise SiddError(f"{path}: not a readable MATLAB .mat file ({e})") from e


def _check_blocks(path, key, x, dtypes):
  if x.ndim != 5 or x.shape[-1] != 3 or x.dtype not in dtypes:
    raise SiddError(
        f"{path}: variable {key!r} is {x.dtype} {list(x.shape)}; expected "
        f"{'/'.join(str(np.dtype(d)) for d in dtypes)} "
        "[N_img, N_blk, H, W, 3] (SIDD: 40 x 32 x 256 x 256 x 3)")


def read_blocks(path: str | os.PathLike, key: str | None = None) -> np.ndarray:
  """Reads SIDD sRGB blocks.

  Args:
    path: a SIDD .mat file (e.g. ValidationNoisyBlocksSrgb.mat).
    key: the variable name; None picks the file's only variable.

  Returns:
    uint8 [N_img, N_blk, H, W, 3] (40 x 32 x 256 x 256 x 3 for SIDD), RGB.

  Raises:
    SiddError: missing or unreadable file, absent/ambiguous variable, or a
      variable that is not uint8 [N_img, N_blk, H, W, 3].
  """
  x, key = _load_variable(path, key)
  _check_blocks(path, key, x, (np.uint8,))
  return np.ascontiguousarray(x)


def read_denoised(path: str | os.PathLike,
                  key: str | None = DENOISED_KEY) -> np.ndarray:
  """Reads an Idenoised.mat as stored: float32/float64 in [0, 1] or uint8.

  Returns:
    [N_img, N_blk, H, W, 3] array in the file's dtype.
  """
  x, key = _load_variable(path, key)
  _check_blocks(path, key, x, (np.uint8, np.float32, np.float64))
  return np.ascontiguousarray(x)


def write_denoised(path: str | os.PathLike, blocks, *,
                   value_range: str = "zero_one", dtype: str = "float32",
                   do_compression: bool = False) -> pathlib.Path:
  """Writes restored blocks as variable `Idenoised` of a MATLAB v5 .mat file.

  Args:
    path: output file (conventionally .../Idenoised.mat); parents are made.
    blocks: [N_img, N_blk, H, W, 3], uint8, or float in `value_range` (clipped
      to it, as the reference clamps its outputs).
    value_range: "zero_one" / "minus_one_one" for float blocks.
    dtype: "float32" (default; [0, 1], unquantised, like the Noise-DA test
      code) or "uint8" (rounded to 8 bits).
    do_compression: zlib-compress the variable (smaller, slower).

  Returns:
    The path written.
  """
  x = np.asarray(blocks)
  if x.ndim != 5 or x.shape[-1] != 3:
    raise SiddError(f"{path}: blocks must be [N_img, N_blk, H, W, 3], got "
                    f"shape {list(x.shape)}")
  if dtype == "float32":
    out = (metrics.to_255(x, value_range, quantize=False) /
           255.0).astype(np.float32)
  elif dtype == "uint8":
    out = metrics.to_255(x, value_range, quantize=True).astype(np.uint8)
  else:
    raise ValueError(f"dtype={dtype!r} must be 'float32' or 'uint8'")
  path = pathlib.Path(path)
  path.parent.mkdir(parents=True, exist_ok=True)
  with outputs.atomic_write(path) as f:
    scipy.io.savemat(f, {DENOISED_KEY: out}, do_compression=do_compression)
  return path


def iter_blocks(blocks) -> Iterator[tuple[int, int, np.ndarray]]:
  """Yields (i, k, blocks[i, k]) over [N_img, N_blk, ...] in row-major order.

  The 0-based (i, k) match the reference's loops and its PNG names
  '%04d_%02d.png' % (i + 1, k + 1).
  """
  for i in range(blocks.shape[0]):
    for k in range(blocks.shape[1]):
      yield i, k, blocks[i, k]
