"""Loading and saving model weights in every form a user brings.

  DIR            a directory written by `dada-jax convert` (Orbax params
                 checkpoint + config.json), or a training workdir (the EMA
                 params of its newest checkpoint that restores)
  X.pth          a reference `Network.state_dict()` (official checkpoints,
                 raw or `_ema`), or a restorer-only state dict
  X.npz          the same keys as a .pth, saved with NumPy
"""

from __future__ import annotations

import json
import math
import os
import zipfile

import jax
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp

from dada_jax import checkpoint
from dada_jax import outputs
from dada_jax.torch_io import convert
from dada_jax.torch_io import pth

PARAMS_DIR = "params"


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{torch key: array} from a .pth or .npz file.

  Raises:
    CheckpointMismatch (.npz) or PthError (.pth): a file that is not a
      readable state dict of numeric arrays; one line naming the file.
  """
  if not path.endswith(".npz"):
    return pth.read_state_dict(path)

  def refuse(reason):
    return convert.CheckpointMismatch(
        f"{path}: not a readable .npz state dict ({pth.one_line(reason)})")

  try:
    with open(path, "rb") as f:
      magic = f.read(4)
  except OSError as e:
    raise refuse(e.strerror or e) from e
  # np.load would take anything else for a .npy or a pickle.
  if magic not in (b"PK\x03\x04", b"PK\x05\x06"):
    raise refuse("not a zip archive")
  out = {}
  try:
    with zipfile.ZipFile(path) as archive:
      for info in archive.infolist():
        name = info.filename
        if not name.endswith(".npy"):
          raise refuse(f"member {name!r} is not a .npy array")
        with archive.open(info) as f:
          version = np.lib.format.read_magic(f)
          if version not in ((1, 0), (2, 0)):
            raise refuse(f"{name}: .npy format {version} (numeric arrays "
                         "are 1.0 or 2.0)")
          shape, fortran, dtype = (
              np.lib.format.read_array_header_1_0(f) if version == (1, 0)
              else np.lib.format.read_array_header_2_0(f))
          if dtype.kind not in ("b", "i", "u", "f", "c"):
            raise refuse(f"{name}: {dtype} is not a numeric dtype")
          count = math.prod(shape)
          nbytes = count * dtype.itemsize
          # Checked before reading: a header may claim any shape.
          if min(shape, default=0) < 0 or count > pth.MAX_ELEMENTS or (
              nbytes > info.file_size):
            raise refuse(f"{name}: header claims shape {shape} of {dtype} "
                         f"but the member holds {info.file_size} bytes")
          raw = f.read(nbytes)
          if len(raw) < nbytes:
            raise refuse(f"{name}: truncated ({len(raw)} of {nbytes} bytes)")
        arr = np.frombuffer(raw, dtype, count)
        arr = arr.reshape(shape[::-1]).T if fortran else arr.reshape(shape)
        out[name[:-len(".npy")]] = arr.copy(order="K")
  except convert.CheckpointMismatch:
    raise
  except pth.CORRUPT_FILE_ERRORS as e:
    raise refuse(repr(e)) from e
  return out


def save_params(directory: str, params, config: mlc.ConfigDict,
                source: str | None = None) -> None:
  """Writes params ({role: tree}) as an Orbax checkpoint plus config.json."""
  directory = os.path.abspath(directory)
  target = os.path.join(directory, PARAMS_DIR)
  if os.path.exists(target):
    raise outputs.OutputExists(f"{target} already exists; choose a new "
                              "--output")
  os.makedirs(directory, exist_ok=True)
  with ocp.StandardCheckpointer() as ckptr:
    ckptr.save(target, jax.tree.map(np.asarray, params))
    ckptr.wait_until_finished()
  meta = {"config": json.loads(config.to_json()), "source": source,
          "roles": sorted(params)}
  with open(os.path.join(directory, "config.json"), "w") as f:
    json.dump(meta, f, indent=1)


def _flat_shapes(tree, prefix=""):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flat_shapes(v, f"{prefix}{k}/"))
    else:
      out[f"{prefix}{k}"] = tuple(v.shape)
  return out


def _load_orbax(directory: str, config, roles):
  target = os.path.join(os.path.abspath(directory), PARAMS_DIR)
  if not os.path.isdir(target):
    raise convert.CheckpointMismatch(
        f"{directory}: no {PARAMS_DIR}/ inside; expected a directory written "
        "by `dada-jax convert`, a .pth or a .npz")
  with ocp.StandardCheckpointer() as ckptr:
    try:
      meta = ckptr.metadata(target)
    except Exception as e:  # Orbax raises several types for a broken dir.
      raise convert.CheckpointMismatch(
          f"{target}: unreadable Orbax checkpoint ({e})") from e
    meta_tree = getattr(meta, "item_metadata", meta)
    _check_tree(directory, dict(meta_tree), config, roles)
    restored = ckptr.restore(target)
  return {r: jax.tree.map(np.asarray, restored[r]) for r in roles}


def _check_tree(source, params, config, roles):
  want = _flat_shapes(convert.params_shape(config, roles))
  have = _flat_shapes({r: params[r] for r in roles if r in params})
  problems = [f"missing {k} {s}" for k, s in want.items() if k not in have]
  problems += [f"shape of {k}: checkpoint {have[k]}, model expects {s}"
               for k, s in want.items() if k in have and have[k] != s]
  problems += [f"unexpected {k}" for k in have if k not in want]
  if problems:
    raise convert.CheckpointMismatch(
        f"{source} does not fit the config ({len(problems)} problems): "
        + "; ".join(problems))


def _load_workdir(workdir: str, config, roles):
  """EMA params of the newest step that restores; changes nothing on disk."""
  ckpt = checkpoint.Checkpointer(workdir, read_only=True)

  def restore(step):
    ckpt.restore_meta(step)  # a step counts only if all of it reads
    return ckpt.restore_params(step, use_ema=True)

  try:
    step, params = ckpt.restore_newest(restore)
    if step is None:
      raise convert.CheckpointMismatch(
          f"{workdir}: holds no complete checkpoint yet")
  finally:
    ckpt.close()
  _check_tree(f"{workdir} (step {step})", params, config, roles)
  return {r: jax.tree.map(np.asarray, params[r]) for r in roles}


def load_params(path: str, config: mlc.ConfigDict, roles=("restorer",)):
  """{role: params} for `roles` from any supported checkpoint form.

  A training workdir gives its newest step that restores; newer ones that do
  not are named in a warning line each on stderr, and left as they are.

  Raises:
    CheckpointMismatch or PthError with a message naming the file and every
    key that does not fit `config`; checkpoint.UnreadableCheckpoint (one
    line, each step tried and why) when no step of a workdir restores.
  """
  if os.path.isdir(os.path.join(path, checkpoint.CHECKPOINTS)):
    return _load_workdir(path, config, tuple(roles))
  if os.path.isdir(path):
    return _load_orbax(path, config, tuple(roles))
  if not os.path.isfile(path):
    raise convert.CheckpointMismatch(f"{path}: no such file or "
                                           "directory")
  state = read_state_dict(path)
  return convert.params_from_state_dict(state, config, source=path,
                                              roles=tuple(roles))
