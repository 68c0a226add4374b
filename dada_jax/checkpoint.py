"""Training checkpoints: a thin wrapper over Orbax's CheckpointManager.

Each step directory `WORKDIR/checkpoints/<step>/` holds three items:
  state     the train state (params, opt, ema, step), restored straight into
            its shardings
  data_iter the Grain iterator position, so a resumed run sees the same batches
  meta      JSON: the config and the dada-jax version

Orbax writes into a temporary directory and renames it when complete, so a
checkpoint being written when the process dies is never picked up.
"""

from __future__ import annotations

import json
import os

import grain
import jax
import orbax.checkpoint as ocp

import dada_jax

CHECKPOINTS = "checkpoints"


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


class Checkpointer:
  """Saves and restores (state, data iterator, meta) by step."""

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True):
    options = ocp.CheckpointManagerOptions(
        max_to_keep=keep, create=True,
        enable_async_checkpointing=async_save)
    self.manager = ocp.CheckpointManager(checkpoint_dir(workdir),
                                         options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def save(self, step: int, state, data_iter=None, config=None) -> bool:
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    meta = {"version": dada_jax.__version__, "step": int(step)}
    if config is not None:
      meta["config"] = json.loads(config.to_json())
    items["meta"] = ocp.args.JsonSave(meta)
    return self.manager.save(step, args=ocp.args.Composite(**items),
                             force=True)

  def restore(self, step: int, state_target, data_iter=None):
    """Restores `state` into `state_target`'s shapes, dtypes and shardings
    (a tree of jax.ShapeDtypeStruct); sets `data_iter`'s position in place."""
    items = {"state": ocp.args.StandardRestore(state_target)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointRestore(data_iter)
    restored = self.manager.restore(step, args=ocp.args.Composite(**items))
    return restored["state"]

  def restore_meta(self, step: int) -> dict:
    restored = self.manager.restore(
        step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
    return restored["meta"]

  def restore_params(self, step: int | None = None, *, use_ema: bool = True):
    """{role: params} (EMA by default) of `step` (default: the latest)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError("no checkpoint to restore")
    restored = self.manager.restore(
        step, args=ocp.args.Composite(state=ocp.args.StandardRestore()))
    return restored["state"]["ema" if use_ema else "params"]

  def wait(self) -> None:
    self.manager.wait_until_finished()

  def close(self) -> None:
    self.manager.wait_until_finished()
    self.manager.close()


def abstract_with_shardings(state_shape, shardings):
  """ShapeDtypeStructs carrying shardings: Orbax restores into place."""
  return jax.tree.map(
      lambda s, sh: jax.ShapeDtypeStruct(s.shape, s.dtype, sharding=sh),
      state_shape, shardings)
