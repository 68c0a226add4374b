"""What the trainer needs to survive faults: signals, a workdir check, the
comparison of a checkpoint's config with the current one.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from dada_jax import config_lib

# Fields that change the shapes or meaning of the saved state; a checkpoint
# written under other values cannot be resumed with this config.
MODEL_FIELDS = ("restorer", "critic", "objective.mode", "optim.weight_decay",
                "optim.grad_clip")


class TrainingStopped(RuntimeError):
  """Training ended early; the message says why and where to resume from."""

  def __init__(self, message: str, exit_code: int = 1):
    super().__init__(message)
    self.exit_code = exit_code


class SignalCatcher:
  """Records SIGTERM/SIGINT instead of dying, so the loop can checkpoint.

  A second signal of the same kind restores the default behaviour (a user
  pressing Ctrl-C twice really stops). Only installable in the main thread;
  elsewhere it is inert.
  """

  def __init__(self, signals=(signal.SIGTERM, signal.SIGINT)):
    self.signals = signals
    self.received: int | None = None
    self._previous = {}

  def _handle(self, signum, frame):
    del frame
    if self.received == signum:
      signal.signal(signum, self._previous.get(signum, signal.SIG_DFL))
      signal.raise_signal(signum)
    self.received = signum

  def __enter__(self):
    try:
      for s in self.signals:
        self._previous[s] = signal.signal(s, self._handle)
    except ValueError:  # not the main thread
      self._previous = {}
    return self

  def __exit__(self, *exc):
    for s, handler in self._previous.items():
      signal.signal(s, handler)
    return False


def check_workdir(workdir: str, need_bytes: int) -> None:
  """Fails early, with the path, if `workdir` cannot hold the checkpoints.

  Local paths only (a gs:// workdir is checked by its first save).
  """
  if "://" in workdir:
    return
  try:
    os.makedirs(workdir, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=workdir, prefix=".write_test_"):
      pass
  except OSError as e:
    raise config_lib.ConfigError(
        f"--workdir {workdir}: not writable ({e.strerror or e})") from e
  free = shutil.disk_usage(workdir).free
  if free < need_bytes:
    raise config_lib.ConfigError(
        f"--workdir {workdir}: {free / 2**20:.0f} MiB free, checkpoints need "
        f"about {need_bytes / 2**20:.0f} MiB (config.train.keep_ckpts + 1 "
        "copies of the train state)")


def _get(config: dict, dotted: str):
  node = config
  for part in dotted.split("."):
    if not isinstance(node, dict) or part not in node:
      return None
    node = node[part]
  return node


def _flatten(prefix: str, value):
  if isinstance(value, dict):
    out = {}
    for k, v in value.items():
      out.update(_flatten(f"{prefix}.{k}", v))
    return out
  return {prefix: list(value) if isinstance(value, tuple) else value}


def config_mismatches(saved: dict, current: dict,
                      fields=MODEL_FIELDS) -> list[str]:
  """'field: checkpoint X, config Y' for every model field that differs."""
  out = []
  for field in fields:
    a = _flatten(field, _get(saved, field))
    b = _flatten(field, _get(current, field))
    for key in sorted(set(a) | set(b)):
      if a.get(key) != b.get(key):
        out.append(f"{key}: checkpoint {a.get(key)!r}, config {b.get(key)!r}")
  return out
