"""What the trainer needs to survive faults: signals, a workdir check, the
comparison of a checkpoint's config with the current one.
"""

from __future__ import annotations

import os
import shutil
import signal
import tempfile

from dada_jax import backbones
from dada_jax import config_lib

# Fields that change the shapes or meaning of the saved state; a checkpoint
# written under other values cannot be resumed with this config.
MODEL_FIELDS = ("restorer", "critic", "objective.mode", "optim.weight_decay",
                "optim.grad_clip")
# Fields a resumed run must keep for its batches and random streams to
# continue where the checkpoint left them (the Grain iterator position counts
# batches of this size and patch size; every stream is derived from the seed).
RESUME_FIELDS = ("data.batch_size", "data.patch_size", "seed")
# Keys older checkpoints' configs hold under a compared field that no longer
# belong there; they do not change the saved state, so they are not compared.
LEGACY_KEYS = frozenset({"critic.remat"})  # now train.remat


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

  def __init__(self, signals=None):
    self.signals = (signal.SIGTERM, signal.SIGINT) if signals is None else (
        signals)
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


def _network(field: str, block):
  """The part of a restorer or critic block that shapes the network: its
  name (configs before names existed have none: the default) and the named
  network's fields, not the other networks' blocks."""
  default = {"restorer": backbones.DEFAULT_RESTORER,
             "critic": backbones.DEFAULT_CRITIC}.get(field)
  if default is None or not isinstance(block, dict):
    return block
  name = block.get("name", default)
  if name != default:
    return {"name": name, **block.get(name, {})}
  return {"name": name, **{k: v for k, v in block.items()
                           if k != "name" and not isinstance(v, dict)}}


def config_mismatches(saved: dict, current: dict,
                      fields=MODEL_FIELDS) -> list[str]:
  """'field: checkpoint X, config Y' for every model field that differs
  (LEGACY_KEYS aside)."""
  out = []
  for field in fields:
    a = _flatten(field, _network(field, _get(saved, field)))
    b = _flatten(field, _network(field, _get(current, field)))
    for key in sorted((set(a) | set(b)) - LEGACY_KEYS):
      if a.get(key) != b.get(key):
        out.append(f"{key}: checkpoint {a.get(key)!r}, config {b.get(key)!r}")
  return out


def summarize_mismatches(problems: list[str], shown: int = 3) -> str:
  """`config_mismatches`' output as one line of readable length.

  The count, the count per config section and the first `shown`
  differences: '35 fields differ (critic: 30, restorer: 5), e.g.
  restorer.depth: checkpoint 4, config 3; ...; and 32 more'.
  """
  sections = {}
  for p in problems:
    section = p.split(":", 1)[0].split(".", 1)[0]
    sections[section] = sections.get(section, 0) + 1
  counts = ", ".join(f"{k}: {v}" for k, v in sorted(
      sections.items(), key=lambda kv: (-kv[1], kv[0])))
  n = len(problems)
  head = f"{n} field{' differs' if n == 1 else 's differ'} ({counts})"
  examples = [p if len(p) <= 100 else p[:97] + "..." for p in problems[:shown]]
  if n <= shown:
    return f"{head}: {'; '.join(examples)}"
  return f"{head}, e.g. {'; '.join(examples)}; and {n - shown} more"


def resume_problem(saved: dict, current: dict, where: str) -> str | None:
  """Why the checkpoint at `where`, written under config `saved`, cannot be
  continued under `current` (one line), or None when it can."""
  diff = config_mismatches(saved, current)
  if diff:
    return (f"{where} was written with another model config: "
            f"{summarize_mismatches(diff)}; use a new --workdir or the "
            "matching --config.* values")
  diff = config_mismatches(saved, current, RESUME_FIELDS)
  if diff:
    flags = " ".join(f"--config.{f}={_get(saved, f)}" for f in RESUME_FIELDS
                     if _get(saved, f) != _get(current, f))
    return (f"{where} was written with other data or seed settings "
            f"({'; '.join(diff)}); a resumed run's batches and random "
            f"streams depend on them: resume with {flags}, or use a new "
            "--workdir")
  return None
