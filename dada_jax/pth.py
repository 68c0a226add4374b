"""Reads PyTorch `.pth` state dicts without torch, writes them with torch.

`torch.save` (since 1.6) writes a zip archive holding `data.pkl` and one raw
little-endian storage file per tensor. The reader unpickles with an allow-list
(ordered dicts and tensor rebuilds only; no arbitrary code runs) and maps
storages straight to NumPy, so importing the official checkpoints needs
neither torch nor trust in the file.
"""

from __future__ import annotations

import collections
import os
import pickle
import zipfile

import numpy as np

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": None,
    "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}


class PthError(ValueError):
  """A .pth file that cannot be read; the message names the file."""


class _StorageType:

  def __init__(self, name):
    self.name = name


def _rebuild_tensor(storage, offset, size, stride, *unused):
  del unused
  if not size:
    return storage[offset].copy().reshape(())
  itemsize = storage.itemsize
  view = np.lib.stride_tricks.as_strided(
      storage[offset:], shape=tuple(size),
      strides=tuple(s * itemsize for s in stride))
  return np.array(view)


def _rebuild_parameter(data, *unused):
  del unused
  return data


class _Unpickler(pickle.Unpickler):
  """Resolves only the globals a state dict needs."""

  def __init__(self, fileobj, archive: zipfile.ZipFile, prefix: str, path):
    super().__init__(fileobj)
    self._archive, self._prefix, self._path = archive, prefix, path
    self._cache = {}

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return _rebuild_tensor
    if module == "torch._utils" and name == "_rebuild_parameter":
      return _rebuild_parameter
    if module == "torch" and name in _STORAGE_DTYPES:
      return _StorageType(name)
    raise PthError(f"{self._path}: holds a {module}.{name} object; only "
                   "tensor state dicts can be read")

  def persistent_load(self, pid):
    kind, storage_type, key, _, numel = pid
    if kind != "storage":
      raise PthError(f"{self._path}: unsupported persistent id {kind!r}")
    dtype = _STORAGE_DTYPES.get(getattr(storage_type, "name", ""))
    if dtype is None:
      raise PthError(f"{self._path}: unsupported tensor storage "
                     f"{getattr(storage_type, 'name', storage_type)!r}")
    if key not in self._cache:
      raw = self._archive.read(f"{self._prefix}data/{key}")
      arr = np.frombuffer(raw, dtype=np.dtype(dtype).newbyteorder("<"))
      if arr.size < numel:
        raise PthError(f"{self._path}: storage {key} is truncated")
      self._cache[key] = arr
    return self._cache[key]


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Returns {key: array} from a torch.save'd (zip format) state dict."""
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise PthError(f"{path}: no such file")
  try:
    with zipfile.ZipFile(path) as archive:
      pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
      if not pkl:
        raise PthError(f"{path}: no data.pkl inside; not a torch.save file")
      prefix = pkl[0][:-len("data.pkl")]
      with archive.open(pkl[0]) as f:
        obj = _Unpickler(f, archive, prefix, path).load()
  except zipfile.BadZipFile as e:
    raise PthError(f"{path}: not a readable torch checkpoint (zip archive "
                   f"expected: {e}); legacy pre-1.6 files must be re-saved "
                   "with a current torch") from e
  except (EOFError, KeyError, pickle.UnpicklingError, ValueError,
          TypeError) as e:
    if isinstance(e, PthError):
      raise
    raise PthError(f"{path}: truncated or corrupt checkpoint ({e!r})") from e
  if isinstance(obj, dict) and "state_dict" in obj and isinstance(
      obj["state_dict"], dict):
    obj = obj["state_dict"]
  if not isinstance(obj, dict) or not all(
      isinstance(v, np.ndarray) for v in obj.values()):
    raise PthError(f"{path}: expected a state dict of tensors")
  return dict(obj)


def write_state_dict(state: dict[str, np.ndarray], path) -> None:
  """torch.save's `state` as float tensors (needs the `torch` extra)."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise PthError(f"{path}: writing .pth needs torch; install the extra "
                   "`pip install dada-jax[torch]` or write .npz") from e
  out = collections.OrderedDict(
      (k, torch.from_numpy(np.array(v, copy=True))) for k, v in state.items())
  torch.save(out, os.fspath(path))
