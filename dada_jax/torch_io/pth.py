"""Reads PyTorch `.pth` state dicts without torch, writes them with torch.

`torch.save` (since 1.6) writes a zip archive holding `data.pkl` and one raw
storage file per tensor (little-endian unless a `byteorder` record says
"big"). The reader unpickles with an allow-list (dicts and tensor rebuilds
only; no arbitrary code runs), so importing the official checkpoints needs
neither torch nor trust in the file: every tensor record is checked against
its storage before any memory is read, and every malformed file raises
`PthError` with a one-line message starting with the file's path.
"""

from __future__ import annotations

import collections
import io
import lzma
import math
import os
import pickle
import reprlib
import struct
import tokenize
import zipfile
import zlib

import numpy as np

from dada_jax import errors

# Limits on what a file can make the reader allocate. Real state dicts stay
# far below them; a crafted one (say a one-element storage viewed with stride
# 0 as 2**40 elements, or a zip bomb) is refused instead of exhausting memory.
MAX_ELEMENTS = 2**31  # per tensor and per storage
MAX_PICKLE_BYTES = 2**28  # data.pkl, uncompressed
# Storages read plus arrays returned, all together: at most this many times
# the file's size, plus the slack (tied weights and views of one storage make
# the output larger than the file).
BUDGET_FACTOR = 4
BUDGET_SLACK_BYTES = 2**30
_MAX_DIMS = 64  # NumPy's limit

_STORAGE_DTYPES = {
    "FloatStorage": np.float32, "DoubleStorage": np.float64,
    "HalfStorage": np.float16, "BFloat16Storage": None,
    "LongStorage": np.int64, "IntStorage": np.int32,
    "ShortStorage": np.int16, "CharStorage": np.int8,
    "ByteStorage": np.uint8, "BoolStorage": np.bool_,
}

# What zipfile, zlib, pickle and NumPy raise on garbage. RuntimeError covers
# RecursionError, NotImplementedError (unknown compression) and encrypted
# members; NumPy's .npy header parser lets tokenize.TokenError through.
CORRUPT_FILE_ERRORS = (
    zipfile.BadZipFile, zipfile.LargeZipFile, zlib.error, lzma.LZMAError,
    pickle.UnpicklingError, EOFError, OSError, ValueError, TypeError,
    KeyError, IndexError, AttributeError, struct.error, OverflowError,
    MemoryError, RuntimeError, SyntaxError, tokenize.TokenError)

_repr = reprlib.Repr()
_repr.maxstring = _repr.maxother = 60
_repr.maxtuple = _repr.maxlist = _repr.maxdict = 8
_repr.maxlevel = 2


class PthError(errors.UserError):
  """A .pth file that cannot be read; the message names the file."""


def one_line(text: str, limit: int = 300) -> str:
  """`text` with whitespace runs collapsed, cut to `limit` characters."""
  text = " ".join(str(text).split())
  return text if len(text) <= limit else text[:limit - 3] + "..."


def _show(x) -> str:
  """A short repr of a value taken from an untrusted file."""
  return one_line(_repr.repr(x), 100)


def _is_int(x) -> bool:
  return isinstance(x, int) and not isinstance(x, bool)


class _StorageType:
  """What `find_class` gives for torch.XxxStorage: just the class name."""

  def __init__(self, name):
    self.name = name


class _Token:
  """An inert stand-in for a storage or tensor inside the unpickled object.

  The unpickler keeps what a token means in its own tables, keyed by the
  token's identity; no slots, so pickle's BUILD cannot attach anything.
  """
  __slots__ = ()

  def __repr__(self):
    return "<a storage or tensor record>"


class _Storage:
  """A checked persistent id: `numel` elements of `dtype` in `member`."""

  def __init__(self, key, type_name, dtype, numel, member):
    self.key, self.type_name, self.numel, self.member = (
        key, type_name, numel, member)
    self.dtype = np.dtype(dtype)


class _Tensor:
  """The (unchecked) arguments of one `_rebuild_tensor_v2` call."""

  def __init__(self, storage, offset, size, stride):
    self.storage, self.offset, self.size, self.stride = (
        storage, offset, size, stride)


class _Unpickler(pickle.Unpickler):
  """Resolves only the globals a state dict needs; records tensors lazily."""

  def __init__(self, fileobj, archive: zipfile.ZipFile, prefix: str, path):
    super().__init__(fileobj)
    self._archive, self._prefix, self._path = archive, prefix, path
    self.storages: dict[int, tuple[_Token, _Storage]] = {}
    self.tensors: dict[int, tuple[_Token, _Tensor]] = {}
    self._by_key: dict[str, _Token] = {}

  def _error(self, what: str) -> PthError:
    return PthError(f"{self._path}: {what}")

  def find_class(self, module, name):
    if (module, name) == ("collections", "OrderedDict"):
      return collections.OrderedDict
    if module == "torch._utils" and name == "_rebuild_tensor_v2":
      return self._rebuild_tensor
    if module == "torch._utils" and name in (
        "_rebuild_parameter", "_rebuild_parameter_with_state"):
      return self._rebuild_parameter
    if module == "torch" and isinstance(name, str) and name.endswith(
        "Storage"):
      return _StorageType(name)
    raise self._error(f"holds a {one_line(f'{module}.{name}', 100)} object; "
                      "only tensor state dicts can be read")

  def persistent_load(self, pid):
    if not isinstance(pid, tuple) or len(pid) != 5:
      raise self._error(f"malformed storage reference {_show(pid)}")
    kind, storage_type, key, _, numel = pid
    if kind != "storage":
      raise self._error(f"unsupported persistent id kind {_show(kind)}")
    type_name = getattr(storage_type, "name", None)
    if not (isinstance(storage_type, _StorageType)
            and isinstance(type_name, str)):
      raise self._error(f"storage reference names no torch storage type "
                        f"({_show(storage_type)})")
    dtype = _STORAGE_DTYPES.get(type_name)
    if dtype is None:
      raise self._error(f"unsupported tensor storage {_show(type_name)}")
    if not isinstance(key, str):
      raise self._error(f"storage key {_show(key)} is not a string")
    if not _is_int(numel) or not 0 <= numel <= MAX_ELEMENTS:
      raise self._error(f"storage {_show(key)} declares {_show(numel)} "
                        f"elements (expected an int in [0, {MAX_ELEMENTS}])")
    if key in self._by_key:
      token = self._by_key[key]
      known = self.storages[id(token)][1]
      if (known.type_name, known.numel) != (type_name, numel):
        raise self._error(
            f"storage {_show(key)} is declared both as {known.numel} "
            f"{known.type_name} and as {numel} {type_name}")
      return token
    member = f"{self._prefix}data/{key}"
    try:
      info = self._archive.getinfo(member)
    except KeyError:
      raise self._error(f"storage {_show(key)}: archive member "
                        f"{_show(member)} is missing") from None
    itemsize = np.dtype(dtype).itemsize
    if info.file_size % itemsize:
      raise self._error(
          f"storage {_show(key)} is {info.file_size} bytes, not a whole "
          f"number of {itemsize}-byte {type_name} elements")
    if info.file_size < numel * itemsize:
      raise self._error(
          f"storage {_show(key)} is truncated: it declares {numel} elements "
          f"but holds {info.file_size // itemsize}")
    token = _Token()
    self.storages[id(token)] = (
        token, _Storage(key, type_name, dtype, numel, member))
    self._by_key[key] = token
    return token

  def _rebuild_tensor(self, *args):
    if len(args) < 4:
      raise self._error(f"tensor record with {len(args)} fields (at least 4 "
                        "expected)")
    token = _Token()
    self.tensors[id(token)] = (token, _Tensor(*args[:4]))
    return token

  def _rebuild_parameter(self, *args):
    if not args or id(args[0]) not in self.tensors or (
        self.tensors[id(args[0])][0] is not args[0]):
      raise self._error("a Parameter record wraps no tensor")
    return args[0]


class _Reader:
  """Turns the unpickled tokens into arrays, checking before reading."""

  def __init__(self, path, archive, prefix, byteorder, unpickler):
    self._path, self._archive, self._prefix = path, archive, prefix
    self._order = ">" if byteorder == "big" else "<"
    self._u = unpickler
    self._data: dict[str, np.ndarray] = {}
    self._budget = BUDGET_FACTOR * os.path.getsize(path) + BUDGET_SLACK_BYTES

  def _error(self, what: str) -> PthError:
    return PthError(f"{self._path}: {what}")

  def _charge(self, nbytes: int, what: str) -> None:
    if nbytes > self._budget:
      raise self._error(
          f"{what} would need {nbytes} more bytes, over the reader's budget "
          f"(at most {BUDGET_FACTOR}x the file size + {BUDGET_SLACK_BYTES} "
          "bytes for all arrays)")
    self._budget -= nbytes

  def _storage_data(self, s: _Storage) -> np.ndarray:
    """The storage's `s.numel` elements, native byte order."""
    if s.key not in self._data:
      nbytes = s.numel * s.dtype.itemsize
      self._charge(self._archive.getinfo(s.member).file_size,
                   f"storage {_show(s.key)}")
      raw = self._archive.read(s.member)
      if len(raw) < nbytes:  # A member may decompress short of its header.
        raise self._error(f"storage {_show(s.key)} is truncated: it declares "
                          f"{s.numel} elements but holds "
                          f"{len(raw) // s.dtype.itemsize}")
      arr = np.frombuffer(raw, s.dtype.newbyteorder(self._order), s.numel)
      self._data[s.key] = arr.astype(s.dtype.newbyteorder("="), copy=False)
    return self._data[s.key]

  def tensor(self, name: str, token) -> np.ndarray:
    """The array `token` stands for, after proving its bounds."""
    what = f"tensor {_show(name)}"
    token_and_record = self._u.tensors.get(id(token))
    if token_and_record is None or token_and_record[0] is not token:
      raise self._error(f"key {_show(name)} holds "
                        f"{_kind(token, self._u)}, not a tensor")
    t = token_and_record[1]
    entry = self._u.storages.get(id(t.storage))
    if entry is None or entry[0] is not t.storage:
      raise self._error(f"{what} has no storage (its record holds "
                        f"{_kind(t.storage, self._u)})")
    s = entry[1]
    size, stride, offset = t.size, t.stride, t.offset
    for field, value in (("size", size), ("stride", stride)):
      if not isinstance(value, tuple) or not all(map(_is_int, value)):
        raise self._error(f"{what}: {field} {_show(value)} is not a tuple of "
                          "ints")
    if len(size) != len(stride) or len(size) > _MAX_DIMS:
      raise self._error(f"{what}: size {_show(size)} and stride "
                        f"{_show(stride)} do not describe a tensor of at most "
                        f"{_MAX_DIMS} dimensions")
    if min(size + stride, default=0) < 0:
      raise self._error(f"{what}: negative size or stride (size "
                        f"{_show(size)}, stride {_show(stride)})")
    if not _is_int(offset) or offset < 0:
      raise self._error(f"{what}: storage offset {_show(offset)} is not an "
                        "int >= 0")
    count = math.prod(size)
    if count > MAX_ELEMENTS or max(size, default=0) > MAX_ELEMENTS:
      raise self._error(f"{what} claims {count} elements (size "
                        f"{_show(size)}), over the reader's limit of "
                        f"{MAX_ELEMENTS}")
    if count == 0:
      return np.zeros(size, s.dtype)
    last = offset + sum((n - 1) * st for n, st in zip(size, stride))
    if last >= s.numel:
      raise self._error(
          f"{what} claims {count} elements at offset {offset} (size "
          f"{_show(size)}, stride {_show(stride)}) reaching element {last}, "
          f"but its storage {_show(s.key)} holds {s.numel}")
    data = self._storage_data(s)
    self._charge(count * s.dtype.itemsize, what)
    # In bounds: every index offset + sum(i_k * stride_k) lies in
    # [offset, last]. Size-1 dimensions never step, so their stride is moot.
    view = np.lib.stride_tricks.as_strided(
        data[offset:], shape=size,
        strides=tuple(st * s.dtype.itemsize if n > 1 else 0
                      for n, st in zip(size, stride)))
    return np.array(view)


def _kind(x, unpickler: _Unpickler) -> str:
  """What `x` is, for messages: "a nested dict", "an int", ..."""
  if isinstance(x, dict):
    return "a nested dict"
  if id(x) in unpickler.tensors:
    return "a tensor"
  if id(x) in unpickler.storages:
    return "a bare storage"
  name = type(x).__name__
  return f"{'an' if name[0] in 'aeiou' else 'a'} {name}"


def _read(path: str, archive: zipfile.ZipFile) -> dict[str, np.ndarray]:
  pkl = [n for n in archive.namelist() if n.endswith("data.pkl")]
  if not pkl:
    raise PthError(f"{path}: no data.pkl inside; not a torch.save file")
  prefix = pkl[0][:-len("data.pkl")]
  if archive.getinfo(pkl[0]).file_size > MAX_PICKLE_BYTES:
    raise PthError(f"{path}: {_show(pkl[0])} is larger than "
                   f"{MAX_PICKLE_BYTES} bytes; not a state dict")
  byteorder = "little"
  if f"{prefix}byteorder" in archive.namelist():
    info = archive.getinfo(f"{prefix}byteorder")
    raw = archive.read(info) if info.file_size <= 16 else b"?"
    byteorder = raw.decode("ascii", "replace").strip()
    if byteorder not in ("little", "big"):
      raise PthError(f"{path}: unknown byteorder record {_show(raw)}")
  unpickler = _Unpickler(io.BytesIO(archive.read(pkl[0])), archive, prefix,
                         path)
  obj = unpickler.load()
  # Nestings of published checkpoints: {"state_dict": ...}, and BasicSR's
  # {"params": ...} / {"params_ema": ...} (NAFNet, Restormer, SwinIR).
  for nest in ("state_dict", "params", "params_ema"):
    if isinstance(obj, dict) and isinstance(obj.get(nest), dict):
      obj = obj[nest]
      break
  if not isinstance(obj, dict):
    raise PthError(f"{path}: expected a state dict of tensors, found "
                   f"{_kind(obj, unpickler)}")
  reader = _Reader(path, archive, prefix, byteorder, unpickler)
  out = {}
  for name, token in obj.items():
    if not isinstance(name, str):
      raise PthError(f"{path}: expected a state dict of tensors, but a key is "
                     f"{_kind(name, unpickler)}, not a string")
    out[name] = reader.tensor(name, token)
  return out


def read_state_dict(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Returns {key: array} from a torch.save'd (zip format) state dict.

  Raises:
    PthError: a missing, non-torch, truncated, corrupt or hostile file; the
      message is one line starting with `path`.
  """
  path = os.fspath(path)
  if not os.path.isfile(path):
    raise PthError(f"{path}: no such file")
  try:
    archive = zipfile.ZipFile(path)
  except zipfile.BadZipFile as e:
    raise PthError(f"{path}: not a readable torch checkpoint (zip archive "
                   f"expected: {one_line(e)}); legacy pre-1.6 files must be "
                   "re-saved with a current torch") from e
  except CORRUPT_FILE_ERRORS as e:
    raise PthError(f"{path}: not a readable torch checkpoint "
                   f"({one_line(repr(e))})") from e
  try:
    with archive:
      return _read(path, archive)
  except PthError:
    raise
  except CORRUPT_FILE_ERRORS as e:
    raise PthError(f"{path}: truncated or corrupt checkpoint "
                   f"({one_line(repr(e))})") from e


def write_state_dict(state: dict[str, np.ndarray], path) -> None:
  """torch.save's `state` (needs the `torch` extra) to a path or binary file."""
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise PthError(f"{path}: writing .pth needs torch; install the extra "
                   "`pip install dada-jax[torch]` or write .npz") from e
  out = collections.OrderedDict(
      (k, torch.from_numpy(np.array(v, copy=True))) for k, v in state.items())
  torch.save(out, path if hasattr(path, "write") else os.fspath(path))
