"""Training checkpoints: a thin wrapper over Orbax's CheckpointManager.

Each step directory `WORKDIR/checkpoints/<step>/` holds three items:
  state     the train state (params, opt, ema, step), restored straight into
            its shardings
  data_iter the Grain iterator position, so a resumed run sees the same batches
  meta      JSON: the config and the dada-jax version

Orbax writes into a temporary directory and renames it when complete, so a
checkpoint being written when the process dies is never picked up. A complete
step can still be damaged later (a truncated file, an emptied JSON):
`Checkpointer.restore_newest` then falls back to the newest step that
restores, and a training run moves the damaged steps to
`WORKDIR/checkpoints_unreadable/` (never deleted, outside Orbax's view).
"""

from __future__ import annotations

import gc
import json
import logging as py_logging
import os
import sys
from typing import Any, Callable

from etils import epath
import grain
import jax
import orbax.checkpoint as ocp

import dada_jax
from dada_jax import config_lib
from dada_jax import models

CHECKPOINTS = "checkpoints"
UNREADABLE = "checkpoints_unreadable"
_REASON_CHARS = 200


def checkpoint_dir(workdir: str) -> str:
  return os.path.join(os.path.abspath(workdir), CHECKPOINTS)


class UnreadableStep(Exception):
  """One item of one step failed to restore; the message is one line."""

  def __init__(self, step: int, item: str, reason: str):
    super().__init__(f"{item}: {reason}")
    self.step = step


class UnreadableCheckpoint(config_lib.ConfigError):
  """No step of a workdir restores; the message lists each step and why."""


def short_reason(exc: BaseException, strip: str = "") -> str:
  """One line saying why `exc` happened, at most _REASON_CHARS long.

  The innermost cause is the most specific (Orbax wraps TensorStore's error in
  a generic one); `strip` (a directory) is removed from paths in the text.
  """
  while exc.__cause__ is not None:
    exc = exc.__cause__
  text = str(exc.args[0]) if isinstance(exc, KeyError) and exc.args else (
      str(exc))
  text = text.split(" [tensorstore_spec=")[0]
  if strip:
    text = text.replace(strip.rstrip("/") + "/", "")
  text = " ".join(text.split())
  text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
  if len(text) > _REASON_CHARS:  # the start says where, the end says what
    head = _REASON_CHARS * 2 // 5
    text = text[:head] + " ... " + text[-(_REASON_CHARS - head - 5):]
  return text


def _interrupted(exc: BaseException) -> bool:
  """Whether a Ctrl-C or exit hides in the chain (Orbax wraps even those)."""
  seen = set()
  while exc is not None and id(exc) not in seen:
    if isinstance(exc, (KeyboardInterrupt, SystemExit)):
      return True
    seen.add(id(exc))
    exc = exc.__cause__ or exc.__context__
  return False


class _QuietFailedReads(py_logging.Filter):
  """Drops the echoes of a failed Orbax restore.

  When one array read fails, Orbax closes its event loop with the other reads
  still in flight; each then reports 'Event loop is closed' through
  sys.unraisablehook, and the orphaned tasks log 'exception was never
  retrieved' when collected: thousands of lines for one truncated file, after
  the failure itself was handled. Both kinds are dropped; anything else goes
  on to the previous hook.
  """

  def __init__(self):
    super().__init__()
    self.previous_hook = sys.unraisablehook
    sys.unraisablehook = self.unraisablehook
    py_logging.getLogger("asyncio").addFilter(self)

  def filter(self, record):
    text = record.getMessage()
    return not ("exception was never retrieved" in text
                and ("orbax" in text or "TensorStore" in text))

  def unraisablehook(self, unraisable):
    exc, code = unraisable.exc_value, getattr(unraisable.object, "cr_code",
                                               None)
    if (isinstance(exc, RuntimeError) and str(exc) == "Event loop is closed"
        or code is not None and "orbax" in code.co_filename):
      return
    self.previous_hook(unraisable)

  def finish(self, reads_failed: bool) -> None:
    """Uninstalls, unless reads failed: those still in flight report later."""
    if reads_failed:
      gc.collect()  # the orphaned tasks report now, into the filter
      return
    if sys.unraisablehook == self.unraisablehook:
      sys.unraisablehook = self.previous_hook
    py_logging.getLogger("asyncio").removeFilter(self)


def warn(message: str) -> None:
  """A one-line warning on stderr (process 0 only)."""
  if jax.process_index() == 0:
    print(f"dada-jax: {message}", file=sys.stderr, flush=True)


class Checkpointer:
  """Saves and restores (state, data iterator, meta) by step.

  `read_only` opens an existing workdir for reading: nothing on disk is
  created, deleted or moved.
  """

  def __init__(self, workdir: str, *, keep: int = 3, async_save: bool = True,
               read_only: bool = False):
    self.directory = checkpoint_dir(workdir)
    self.read_only = read_only
    # Not Orbax's read_only option, which logs warnings on every open:
    # without create and max_to_keep, a manager that never saves writes
    # nothing.
    options = ocp.CheckpointManagerOptions(
        max_to_keep=None if read_only else keep, create=not read_only,
        enable_async_checkpointing=async_save and not read_only)
    self.manager = ocp.CheckpointManager(self.directory, options=options)

  def latest_step(self) -> int | None:
    return self.manager.latest_step()

  def all_steps(self) -> list[int]:
    return list(self.manager.all_steps())

  def step_dir(self, step: int) -> str:
    return os.path.join(self.directory, str(step))

  def save(self, step: int, state, data_iter=None, config=None) -> bool:
    if self.read_only:
      raise ValueError(f"{self.directory} was opened read-only")
    items = {"state": ocp.args.StandardSave(state)}
    if data_iter is not None:
      items["data_iter"] = grain.checkpoint.CheckpointSave(data_iter)
    meta = {"version": dada_jax.__version__, "step": int(step)}
    if config is not None:
      meta["config"] = json.loads(config.to_json())
    items["meta"] = ocp.args.JsonSave(meta)
    return self.manager.save(step, args=ocp.args.Composite(**items),
                             force=True)

  def _restore_item(self, step: int, item: str, args):
    """One item of `step`; any failure to read it becomes UnreadableStep."""
    try:
      return self.manager.restore(
          step, args=ocp.args.Composite(**{item: args}))[item]
    except Exception as e:  # Orbax and TensorStore raise many types.
      if _interrupted(e):
        raise
      raise UnreadableStep(step, item,
                           short_reason(e, self.step_dir(step))) from e

  def restore(self, step: int, state_target, data_iter=None):
    """Restores `state` into `state_target`'s shapes, dtypes and shardings
    (a tree of jax.ShapeDtypeStruct); sets `data_iter`'s position in place.

    Raises:
      UnreadableStep: naming the item that did not restore.
    """
    state = self._restore_item(step, "state",
                               ocp.args.StandardRestore(state_target))
    if data_iter is not None:
      self._restore_item(step, "data_iter",
                         grain.checkpoint.CheckpointRestore(data_iter))
    return state

  def restore_meta(self, step: int) -> dict:
    meta = self._restore_item(step, "meta", ocp.args.JsonRestore())
    if not isinstance(meta, dict):
      raise UnreadableStep(step, "meta", f"not a JSON object: {meta!r:.60}")
    return meta

  def restore_params(self, step: int | None = None, *, use_ema: bool = True):
    """{role: weights} (EMA by default) of `step` (default: the latest); a
    restorer's BatchNorm statistics, if it has them, are in its weights (see
    `models.split_stats`)."""
    step = self.latest_step() if step is None else step
    if step is None:
      raise FileNotFoundError("no checkpoint to restore")
    state = self._restore_item(step, "state",
                               ocp.args.StandardRestore(self._local(step)))
    weights = dict(state["ema" if use_ema else "params"])
    for role, stats in state.get("batch_stats", {}).items():
      weights[role] = models.with_stats(weights[role], stats)
    return weights

  def _local(self, step: int):
    """The saved state's shapes and dtypes, placed on this process's first
    device: a checkpoint saved by other devices (a pod, a GPU) then restores
    here."""
    try:
      saved = ocp.StandardCheckpointHandler().metadata(
          epath.Path(self.step_dir(step)) / "state")
    except Exception as e:  # pylint: disable=broad-exception-caught
      raise UnreadableStep(step, "state", short_reason(e, self.step_dir(step))
                           ) from e
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(
        lambda m: jax.ShapeDtypeStruct(m.shape, m.dtype, sharding=device),
        saved)

  def restore_newest(self, restore_step: Callable[[int], Any], *,
                     move_aside: bool = False) -> tuple[int | None, Any]:
    """(step, restore_step(step)) for the newest step that restores.

    Steps whose `restore_step` raises UnreadableStep are skipped, newest
    first, with one warning line each. With `move_aside` (a run that will
    write checkpoints) they are then moved to WORKDIR/checkpoints_unreadable/,
    so that Orbax neither lists, overwrites nor garbage-collects them; only
    once an older step restored, so nothing moves when all fail alike (a
    device out of memory, a bucket out of reach). Other exceptions (a config
    mismatch) propagate.

    Returns:
      (None, None) when the workdir holds no checkpoint.

    Raises:
      UnreadableCheckpoint: no step restores; nothing was moved.
    """
    skipped = []
    quiet = _QuietFailedReads()
    try:
      for step in sorted(self.all_steps(), reverse=True):
        try:
          value = restore_step(step)
        except UnreadableStep as e:
          skipped.append(e)
          continue
        except BaseException:
          self._warn_skipped(skipped)
          raise
        moved = [self._move_aside(e.step) if move_aside else None
                 for e in skipped]
        self._warn_skipped(skipped, moved, using=step)
        return step, value
    finally:
      quiet.finish(reads_failed=bool(skipped))
    if not skipped:
      return None, None
    tried = "; ".join(f"step {e.step}: {e}" for e in skipped)
    raise UnreadableCheckpoint(
        f"{self.directory}: no checkpoint restores ({tried}); nothing was "
        "moved or deleted")

  def _warn_skipped(self, skipped, moved=None, using=None):
    for e, where in zip(skipped, moved or [None] * len(skipped)):
      line = f"skipping {self.step_dir(e.step)}: unreadable ({e})"
      if where:
        line += f"; moved to {where}"
      if using is not None:
        line += f"; using step {using}"
      warn(line)

  def _move_aside(self, step: int) -> str:
    """Moves a step directory out of Orbax's view; returns where to."""
    if self.read_only:
      raise ValueError(f"{self.directory} was opened read-only")
    parent = os.path.join(os.path.dirname(self.directory), UNREADABLE)
    target, n = os.path.join(parent, str(step)), 1
    while os.path.exists(target):  # the same step broke again
      n += 1
      target = os.path.join(parent, f"{step}.{n}")
    # One process moves (the directory may be shared); all wait for it.
    if jax.process_index() == 0:
      try:
        os.makedirs(parent, exist_ok=True)
        os.rename(self.step_dir(step), target)
      except OSError as e:
        raise config_lib.ConfigError(
            f"{self.step_dir(step)} does not restore and could not be moved "
            f"to {target} ({e.strerror or e}); move it away by hand") from e
    if jax.process_count() > 1:
      from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
      multihost_utils.sync_global_devices(f"dada_jax_move_aside_{step}")
    self.manager.reload()
    return target

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
