"""Writes crafted torch.save-format (.pth) files, without torch.

A helper for tests, not a test module. `write_numel_overflow` and
`write_offset_past_end` describe a small restorer-like state dict whose tensor
records point outside their storages: the two cases a reader that trusts the
records turns into a segfault or a silent read of foreign memory.

`dumps` is a tiny protocol-2 pickler for the handful of shapes a torch state
dict pickle has (dicts, tuples, str, int, globals, REDUCE and persistent
ids), so records can carry any value, including ones torch never writes.
"""

from __future__ import annotations

import dataclasses
import io
import os
import struct
import zipfile
from typing import Any, Callable

import numpy as np

PREFIX = "archive/"
REBUILD_TENSOR = ("torch._utils", "_rebuild_tensor_v2")


@dataclasses.dataclass(frozen=True)
class Global:
  """Pickles as GLOBAL `module name`."""
  module: str
  name: str


@dataclasses.dataclass(frozen=True)
class Reduce:
  """Pickles as `func(*args)` (REDUCE)."""
  func: Any
  args: tuple


@dataclasses.dataclass(frozen=True)
class PersistentId:
  """Pickles as BINPERSID of `pid`."""
  pid: Any


def tensor_record(key: str, numel: int, offset, size, stride,
                  storage_type: str = "FloatStorage") -> Reduce:
  """A `_rebuild_tensor_v2` call, as torch.save writes it."""
  pid = PersistentId(("storage", Global("torch", storage_type), key, "cpu",
                      numel))
  return Reduce(Global(*REBUILD_TENSOR),
                (pid, offset, size, stride, False,
                 Reduce(Global("collections", "OrderedDict"), ())))


def dumps(obj) -> bytes:
  """Protocol-2 pickle of `obj` (see the module docstring for what fits)."""
  out = io.BytesIO()
  out.write(b"\x80\x02")

  def emit(x):
    if isinstance(x, Global):
      out.write(b"c" + f"{x.module}\n{x.name}\n".encode())
    elif isinstance(x, Reduce):
      emit(x.func)
      emit(tuple(x.args))
      out.write(b"R")
    elif isinstance(x, PersistentId):
      emit(x.pid)
      out.write(b"Q")
    elif x is None:
      out.write(b"N")
    elif isinstance(x, bool):
      out.write(b"\x88" if x else b"\x89")
    elif isinstance(x, int):
      if -2**31 <= x < 2**31:
        out.write(b"J" + struct.pack("<i", x))
      else:  # LONG1: little-endian two's complement of any length
        raw = x.to_bytes((x.bit_length() + 8) // 8, "little", signed=True)
        out.write(b"\x8a" + bytes([len(raw)]) + raw)
    elif isinstance(x, float):
      out.write(b"G" + struct.pack(">d", x))
    elif isinstance(x, str):
      raw = x.encode("utf-8", "surrogatepass")
      out.write(b"X" + struct.pack("<I", len(raw)) + raw)
    elif isinstance(x, tuple):
      if not x:
        out.write(b")")
        return
      out.write(b"(")
      for item in x:
        emit(item)
      out.write(b"t")
    elif isinstance(x, list):
      out.write(b"](")
      for item in x:
        emit(item)
      out.write(b"e")
    elif isinstance(x, dict):
      out.write(b"}(")
      for k, v in x.items():
        emit(k)
        emit(v)
      out.write(b"u")
    else:
      raise TypeError(f"cannot pickle {type(x).__name__}")

  emit(obj)
  out.write(b".")
  return out.getvalue()


def write_members(path, members: dict[str, bytes],
                  compression: int = zipfile.ZIP_STORED) -> None:
  """A zip of `members`, in order (torch.save stores them uncompressed)."""
  with zipfile.ZipFile(path, "w", compression) as z:
    for name, data in members.items():
      z.writestr(name, data)


def write_pth(path, state, storages: dict[str, bytes],
              byteorder: str | None = "little") -> None:
  """A torch.save-layout archive: `state` pickled, one member per storage."""
  members = {f"{PREFIX}data.pkl": dumps(state)}
  if byteorder is not None:
    members[f"{PREFIX}byteorder"] = byteorder.encode()
  for key, data in storages.items():
    members[f"{PREFIX}data/{key}"] = data
  members[f"{PREFIX}version"] = b"3\n"
  write_members(path, members)


def read_members(path) -> dict[str, bytes]:
  with zipfile.ZipFile(path) as z:
    return {n: z.read(n) for n in z.namelist()}


def rewrite(path_in, path_out,
            mutate_pickle: Callable[[bytes], bytes] | None = None,
            mutate_members: Callable[[dict[str, bytes]], dict[str, bytes]]
            | None = None,
            compression: int = zipfile.ZIP_STORED) -> None:
  """Copies a .pth with its data.pkl and/or members changed (CRCs redone)."""
  members = read_members(path_in)
  if mutate_pickle is not None:
    pkl = next(n for n in members if n.endswith("data.pkl"))
    members[pkl] = mutate_pickle(members[pkl])
  if mutate_members is not None:
    members = mutate_members(members)
  write_members(path_out, members, compression)


def _restorer_like(weight, bias) -> tuple[dict, dict[str, bytes]]:
  """A conv layer's state dict: 16x3x3x3 weights (432) + 16 biases."""
  rng = np.random.default_rng(0)
  storages = {
      "0": rng.standard_normal(432).astype("<f4").tobytes(),
      "1": rng.standard_normal(16).astype("<f4").tobytes(),
  }
  state = {"RestorationNet.conv.weight": weight,
           "RestorationNet.conv.bias": bias}
  return state, storages


def write_numel_overflow(path: str | os.PathLike) -> None:
  """The weight claims 1024x1024x3x3 elements; its storage holds 432."""
  state, storages = _restorer_like(
      tensor_record("0", 432, 0, (1024, 1024, 3, 3), (9216, 9, 3, 1)),
      tensor_record("1", 16, 0, (16,), (1,)))
  write_pth(path, state, storages)


def write_offset_past_end(path: str | os.PathLike) -> None:
  """The bias starts at element 12 of a 16-element storage but has 16."""
  state, storages = _restorer_like(
      tensor_record("0", 432, 0, (16, 3, 3, 3), (27, 9, 3, 1)),
      tensor_record("1", 16, 12, (16,), (1,)))
  write_pth(path, state, storages)
