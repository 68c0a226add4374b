"""Training metrics as JSON lines (and TensorBoard), and a progress display.

`MetricWriter`, after big_vision's metric writer, appends on process 0 one
JSON object per `write_scalars` call to `WORKDIR/metrics.jsonl`, e.g.
`{"step": 1200, "loss/total": 0.0421, "lr": 0.0001}`, and sends the scalars to
TensorBoard (`WORKDIR/tb`) when tensorboardX imports. JSON has no NaN or
Infinity: a non-finite value is written as null and named with its kind in
the record's "nonfinite" field, `{"step": 7, "loss/total": null, "nonfinite":
{"loss/total": "nan"}}`; `read_metrics` turns it back into a float. A run
resumed from the checkpoint of step S passes `resume_step=S`, which drops the
interrupted run's lines after S, so each step is logged once.

Local files are appended to and flushed on every write. A bucket's objects
(gs://..., through etils.epath) cannot be appended to: there the file is kept
in memory and rewritten at most every REMOTE_SYNC_S seconds and on flush or
close, so a crash can lose that much of the log.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import sys
import time
from typing import Any, Mapping

from absl import logging
import numpy as np

METRICS_FILE = "metrics.jsonl"
CONFIG_FILE = "config.json"
TB_DIR = "tb"
REMOTE_SYNC_S = 60.0
_RESERVED = ("step", "nonfinite")


def _is_remote(path: str) -> bool:
  return "://" in path


def _path(path: str):
  """A pathlib.Path, or an etils.epath.Path (same API) for a bucket path."""
  if _is_remote(path):
    from etils import epath  # pylint: disable=g-import-not-at-top
    return epath.Path(path)
  return pathlib.Path(path)


def _write_text(path: str, text: str) -> None:
  """Replaces the file whole, so a reader never sees half of it."""
  p = _path(path)
  if _is_remote(path):  # An object upload is atomic already.
    p.write_text(text)
    return
  tmp = p.with_name(p.name + ".tmp")
  tmp.write_text(text)
  tmp.replace(p)


def _number(name: str, value: Any) -> int | float:
  """A Python int or float from a Python, NumPy or JAX scalar."""
  arr = np.asarray(value)
  if arr.size != 1:
    raise ValueError(f"scalar {name!r}: expected one value, got shape "
                     f"{arr.shape}")
  if arr.dtype.kind in "biu":
    return int(arr.reshape(()))
  return float(arr.reshape(()))


def _keep(line: str, max_step: int | None) -> bool:
  """Whether a logged line is whole and, if max_step is set, not after it."""
  try:
    record = json.loads(line)
  except ValueError:  # Torn by a crash in the middle of a write.
    return False
  step = record.get("step") if isinstance(record, dict) else None
  return isinstance(step, int) and (max_step is None or step <= max_step)


def read_metrics(workdir: str | os.PathLike) -> list[dict[str, Any]]:
  """The records of `workdir/metrics.jsonl`, non-finite values as floats."""
  path = _path(os.path.join(os.fspath(workdir), METRICS_FILE))
  lines = path.read_text().splitlines() if path.exists() else []
  records = [json.loads(line) for line in lines if _keep(line, None)]
  for record in records:
    for name, kind in record.pop("nonfinite", {}).items():
      record[name] = float(kind)
  return records


def _open_tensorboard(logdir: str, purge_step: int | None):
  try:
    import tensorboardX  # pylint: disable=g-import-not-at-top
    return tensorboardX.SummaryWriter(logdir=logdir, purge_step=purge_step)
  # A missing package, or a bucket path without google-cloud-storage.
  except Exception as e:  # pylint: disable=broad-except
    logging.warning("TensorBoard is off, metrics go to %s only: %r",
                    METRICS_FILE, e)
    return None


class MetricWriter:
  """Writes scalars to JSONL (and TensorBoard), config.json, TB images.

  Only process 0 writes; on the others every method does nothing.
  """

  def __init__(self, workdir: str | os.PathLike, *, tensorboard: bool = True,
               process_index: int | None = None,
               resume_step: int | None = None):
    """Opens the writer; `resume_step` drops logged steps after it."""
    self.workdir = os.fspath(workdir)
    if process_index is None:
      import jax  # pylint: disable=g-import-not-at-top
      process_index = jax.process_index()
    self.active = process_index == 0
    self._path = os.path.join(self.workdir, METRICS_FILE)
    self._file = None  # Local: the append handle.
    self._lines = None  # Remote: the whole file, kept in memory.
    self._dirty, self._last_sync = False, -math.inf
    self._tb, self._tb_dir = None, os.path.join(self.workdir, TB_DIR)
    self._closed = False
    if not self.active:
      return
    _path(self.workdir).mkdir(parents=True, exist_ok=True)
    self._load(resume_step)
    if tensorboard:
      self._tb = _open_tensorboard(
          self._tb_dir, None if resume_step is None else resume_step + 1)

  def _load(self, max_step: int | None) -> None:
    """Reads the existing log, rewriting it without torn or later lines."""
    path = _path(self._path)
    text = path.read_text() if path.exists() else ""
    lines = text.splitlines()
    kept = [line for line in lines if _keep(line, max_step)]
    if len(kept) != len(lines) or (text and not text.endswith("\n")):
      if len(kept) != len(lines):
        logging.warning("%s: dropped %d lines (torn, or steps after %s)",
                        self._path, len(lines) - len(kept), max_step)
      _write_text(self._path, "".join(line + "\n" for line in kept))
    if _is_remote(self._path):
      self._lines = kept
    else:
      self._file = open(self._path, "a", encoding="utf-8")

  def truncate_after(self, step: int) -> None:
    """Drops logged lines of steps after `step` (a resumed run's start)."""
    if not self.active:
      return
    if self._lines is not None:
      self._lines = [line for line in self._lines if _keep(line, step)]
      self._sync()
    else:
      self._file.close()
      self._load(step)
    if self._tb is not None:  # Hides the later TB events too.
      self._tb.close()
      self._tb = _open_tensorboard(self._tb_dir, step + 1)

  def write_config(self, config: Any, *, resume_step: int | None = None
                   ) -> None:
    """Writes the resolved config as `workdir/config.json`, keys sorted.

    A different config.json already there (a run resumed with, e.g., another
    total_steps) is kept, as `config.step_<resume_step>.json`.
    """
    if not self.active:
      return
    if hasattr(config, "to_json"):
      text = config.to_json(indent=1, sort_keys=True)
    else:
      text = json.dumps(dict(config), indent=1, sort_keys=True, default=str)
    path = _path(os.path.join(self.workdir, CONFIG_FILE))
    if path.exists():
      if path.read_text() == text + "\n":
        return
      stem, n = f"config.step_{resume_step or 0}", 1
      kept = path.with_name(f"{stem}.json")
      while kept.exists():
        n += 1
        kept = path.with_name(f"{stem}.{n}.json")
      path.rename(kept)
    _write_text(os.fspath(path), text + "\n")

  def write_scalars(self, step: int, scalars: Mapping[str, Any]) -> None:
    """Logs one record: `step` and each scalar (Python, NumPy or JAX)."""
    if not self.active:
      return
    step = int(step)
    record, values, nonfinite = {"step": step}, {}, {}
    for name, value in scalars.items():
      if name in _RESERVED:
        raise ValueError(f"scalar name {name!r} is reserved")
      v = record[name] = values[name] = _number(name, value)
      if not math.isfinite(v):
        record[name], nonfinite[name] = None, str(v)  # 'nan', 'inf', '-inf'
    if nonfinite:
      record["nonfinite"] = nonfinite
    line = json.dumps(record, allow_nan=False)
    if self._lines is not None:
      self._lines.append(line)
      self._dirty = True
      if time.monotonic() - self._last_sync >= REMOTE_SYNC_S:
        self._sync()
    else:
      self._file.write(line + "\n")
      self._file.flush()
    if self._tb is not None:
      for name, v in values.items():
        self._tb.add_scalar(name, float(v), step)

  def write_images(self, step: int, images: Mapping[str, np.ndarray]) -> None:
    """Logs uint8 images (HWC, or NHWC for a grid) to TensorBoard only."""
    for name, image in images.items():
      image = np.asarray(image)
      if image.dtype != np.uint8 or image.ndim not in (3, 4):
        raise ValueError(f"image {name!r}: expected uint8 HWC or NHWC, got "
                         f"{image.dtype} of shape {image.shape}")
      if self._tb is not None:
        add = self._tb.add_image if image.ndim == 3 else self._tb.add_images
        add(name, image, step, dataformats="NHWC"[-image.ndim:])

  def _sync(self) -> None:
    _write_text(self._path, "".join(line + "\n" for line in self._lines))
    self._dirty, self._last_sync = False, time.monotonic()

  def flush(self) -> None:
    """Makes everything written so far visible in the files."""
    if self._dirty:
      self._sync()
    if self._file is not None:
      self._file.flush()
    if self._tb is not None:
      self._tb.flush()

  def close(self) -> None:
    """Flushes and closes; later calls do nothing."""
    if self._closed:
      return
    self.flush()
    if self._file is not None:
      self._file.close()
    if self._tb is not None:
      self._tb.close()
    self._closed = True

  def __enter__(self) -> MetricWriter:
    return self

  def __exit__(self, *exc) -> None:
    self.close()


def format_duration(seconds: float) -> str:
  """'45s', '2m05s', '2h13m' or '3d04h'; '?' when not finite."""
  if not math.isfinite(seconds) or seconds < 0:
    return "?"
  minutes, s = divmod(int(round(seconds)), 60)
  hours, m = divmod(minutes, 60)
  days, h = divmod(hours, 24)
  if days:
    return f"{days}d{h:02d}h"
  if hours:
    return f"{hours}h{m:02d}m"
  if minutes:
    return f"{minutes}m{s:02d}s"
  return f"{s}s"


class Progress:
  """Rates, ETA and a tqdm bar (on a TTY) or a plain line, on log steps.

  Call `update` on log steps only, after their metrics were fetched, so the
  device is not synced every step. Multi-host: `enabled=(process_index==0)`.
  """

  def __init__(self, total_steps: int, *, start_step: int = 0,
               global_batch_size: int, enabled: bool = True,
               bar: bool = True):
    self.total_steps = total_steps
    self.global_batch_size = global_batch_size
    self.enabled = enabled
    self._last_step = self._base_step = start_step
    self._last_t = self._base_t = time.perf_counter()
    self._updates = 0
    self._bar = None
    if enabled and bar and getattr(sys.stdout, "isatty", lambda: False)():
      try:
        import tqdm  # pylint: disable=g-import-not-at-top
        self._bar = tqdm.tqdm(total=total_steps, initial=start_step,
                              unit="step", dynamic_ncols=True)
      except ImportError:
        pass

  def update(self, step: int,
             scalars: Mapping[str, Any] | None = None) -> dict[str, float]:
    """Shows progress at `step`; returns steps_per_s, images_per_s, eta_s."""
    now = time.perf_counter()
    dt, dsteps = now - self._last_t, step - self._last_step
    steps_per_s = dsteps / dt if dt > 0 and dsteps > 0 else 0.0
    # The first interval holds compilation; later ETAs use the mean rate since.
    rate = steps_per_s
    if self._updates and now > self._base_t and step > self._base_step:
      rate = (step - self._base_step) / (now - self._base_t)
    if not self._updates:
      self._base_t, self._base_step = now, step
    remaining = max(self.total_steps - step, 0)
    eta_s = remaining / rate if rate > 0 else (math.inf if remaining else 0.0)
    self._updates += 1
    self._last_t, self._last_step = now, step
    figures = dict(steps_per_s=steps_per_s,
                   images_per_s=steps_per_s * self.global_batch_size,
                   eta_s=eta_s)
    if self.enabled:
      self._show(step, scalars or {}, figures)
    return figures

  def _show(self, step, scalars, figures) -> None:
    losses = " ".join(f"{k} {float(np.asarray(v)):.4g}"
                      for k, v in scalars.items())
    parts = [losses] * bool(losses) + [f"{figures['images_per_s']:.1f} img/s"]
    if self._bar is not None:
      self._bar.update(step - self._bar.n)
      self._bar.set_postfix_str(" | ".join(parts), refresh=True)
    else:
      line = " | ".join([f"step {step}/{self.total_steps}", *parts,
                         f"ETA {format_duration(figures['eta_s'])}"])
      print(line, flush=True)

  def close(self) -> None:
    if self._bar is not None:
      self._bar.close()
      self._bar = None
