"""Loading and saving model weights in every form a user brings.

  DIR            a directory written by `dada-jax convert` (Orbax params
                 checkpoint + config.json), or a training workdir (its latest
                 checkpoint's EMA params)
  X.pth          a reference `Network.state_dict()` (official checkpoints,
                 raw or `_ema`), or a restorer-only state dict
  X.npz          the same keys as a .pth, saved with NumPy
"""

from __future__ import annotations

import json
import os

import jax
import ml_collections as mlc
import numpy as np
import orbax.checkpoint as ocp

from dada_jax import checkpoint
from dada_jax import convert_torch
from dada_jax import pth

PARAMS_DIR = "params"


def read_state_dict(path: str) -> dict[str, np.ndarray]:
  """{torch key: array} from a .pth or .npz file."""
  if path.endswith(".npz"):
    try:
      with np.load(path, allow_pickle=False) as data:
        return {k: data[k] for k in data.files}
    except (OSError, ValueError) as e:
      raise convert_torch.CheckpointMismatch(
          f"{path}: not a readable .npz state dict ({e})") from e
  return pth.read_state_dict(path)


def save_params(directory: str, params, config: mlc.ConfigDict,
                source: str | None = None) -> None:
  """Writes params ({role: tree}) as an Orbax checkpoint plus config.json."""
  directory = os.path.abspath(directory)
  target = os.path.join(directory, PARAMS_DIR)
  if os.path.exists(target):
    raise FileExistsError(f"{target} already exists; choose a new --output")
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
    raise convert_torch.CheckpointMismatch(
        f"{directory}: no {PARAMS_DIR}/ inside; expected a directory written "
        "by `dada-jax convert`, a .pth or a .npz")
  with ocp.StandardCheckpointer() as ckptr:
    try:
      meta = ckptr.metadata(target)
    except Exception as e:  # Orbax raises several types for a broken dir.
      raise convert_torch.CheckpointMismatch(
          f"{target}: unreadable Orbax checkpoint ({e})") from e
    meta_tree = getattr(meta, "item_metadata", meta)
    _check_tree(directory, dict(meta_tree), config, roles)
    restored = ckptr.restore(target)
  return {r: jax.tree.map(np.asarray, restored[r]) for r in roles}


def _check_tree(source, params, config, roles):
  want = _flat_shapes(convert_torch.params_shape(config, roles))
  have = _flat_shapes({r: params[r] for r in roles if r in params})
  problems = [f"missing {k} {s}" for k, s in want.items() if k not in have]
  problems += [f"shape of {k}: checkpoint {have[k]}, model expects {s}"
               for k, s in want.items() if k in have and have[k] != s]
  problems += [f"unexpected {k}" for k in have if k not in want]
  if problems:
    raise convert_torch.CheckpointMismatch(
        f"{source} does not fit the config ({len(problems)} problems): "
        + "; ".join(problems))


def _load_workdir(workdir: str, config, roles):
  ckpt = checkpoint.Checkpointer(workdir, async_save=False)
  try:
    step = ckpt.latest_step()
    if step is None:
      raise convert_torch.CheckpointMismatch(
          f"{workdir}: holds no complete checkpoint yet")
    params = ckpt.restore_params(step, use_ema=True)
  finally:
    ckpt.close()
  _check_tree(f"{workdir} (step {step})", params, config, roles)
  return {r: jax.tree.map(np.asarray, params[r]) for r in roles}


def load_params(path: str, config: mlc.ConfigDict, roles=("restorer",)):
  """{role: params} for `roles` from any supported checkpoint form.

  Raises:
    CheckpointMismatch or PthError with a message naming the file and every
    key that does not fit `config`.
  """
  if os.path.isdir(os.path.join(path, checkpoint.CHECKPOINTS)):
    return _load_workdir(path, config, tuple(roles))
  if os.path.isdir(path):
    return _load_orbax(path, config, tuple(roles))
  if not os.path.isfile(path):
    raise convert_torch.CheckpointMismatch(f"{path}: no such file or "
                                           "directory")
  state = read_state_dict(path)
  return convert_torch.params_from_state_dict(state, config, source=path,
                                              roles=tuple(roles))
