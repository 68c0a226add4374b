"""MetricWriter (JSONL, config.json, TensorBoard, resume) and Progress."""

import json
import math
import sys
import time

import jax.numpy as jnp
import numpy as np
import pytest

from dada_jax import config_lib
from dada_jax import metric_writer as mw


def _lines(workdir):
  return (workdir / mw.METRICS_FILE).read_text().splitlines()


def _writer(workdir, **kw):
  return mw.MetricWriter(workdir, tensorboard=False, process_index=0, **kw)


def test_one_line_per_call_flushed_before_close(tmp_path):
  w = _writer(tmp_path)
  w.write_scalars(1, {"loss/total": np.float32(0.5), "lr": jnp.asarray(1e-4),
                      "images_per_s": 3, "grad_norm/restorer": 2.5})
  assert len(_lines(tmp_path)) == 1  # On disk while the writer is open.
  w.write_scalars(np.int64(2), {"loss/total": jnp.float32(0.25)})
  lines = _lines(tmp_path)
  assert len(lines) == 2
  first = json.loads(lines[0])
  assert list(first) == ["step", "loss/total", "lr", "images_per_s",
                         "grad_norm/restorer"]
  assert first["step"] == 1 and first["loss/total"] == 0.5
  assert first["lr"] == pytest.approx(1e-4) and first["images_per_s"] == 3
  assert json.loads(lines[1]) == {"step": 2, "loss/total": 0.25}
  w.close()
  w.close()
  assert mw.read_metrics(tmp_path) == [first, {"step": 2, "loss/total": 0.25}]


def test_rejects_reserved_names_and_arrays(tmp_path):
  with _writer(tmp_path) as w:
    with pytest.raises(ValueError, match="reserved"):
      w.write_scalars(1, {"step": 1.0})
    with pytest.raises(ValueError, match="one value"):
      w.write_scalars(1, {"loss": np.zeros(2)})
    with pytest.raises(ValueError, match="uint8"):
      w.write_images(1, {"x": np.zeros((4, 4, 3), np.float32)})
  assert w._file.closed


def _tuples(x):
  if isinstance(x, dict):
    return {k: _tuples(v) for k, v in x.items()}
  return tuple(_tuples(v) for v in x) if isinstance(x, list) else x


def test_config_json_loads_back(tmp_path):
  config = config_lib.base_config("denoise")
  config.train.total_steps = 1234
  with _writer(tmp_path) as w:
    w.write_config(config)
  text = (tmp_path / mw.CONFIG_FILE).read_text()
  loaded = json.loads(text)
  assert _tuples(loaded) == config.to_dict()
  assert list(loaded) == sorted(loaded)
  assert loaded["train"]["total_steps"] == 1234
  assert sorted(p.name for p in tmp_path.iterdir()) == [
      mw.CONFIG_FILE, mw.METRICS_FILE]  # No temporary file left.


def test_nonfinite_values(tmp_path):
  with _writer(tmp_path) as w:
    w.write_scalars(7, {"a": float("nan"), "b": np.float32("inf"),
                        "c": jnp.asarray(-jnp.inf), "d": 1.5})
  text = _lines(tmp_path)[0]
  assert "NaN" not in text and "Infinity" not in text
  assert json.loads(text) == {
      "step": 7, "a": None, "b": None, "c": None, "d": 1.5,
      "nonfinite": {"a": "nan", "b": "inf", "c": "-inf"}}
  (record,) = mw.read_metrics(tmp_path)
  assert math.isnan(record["a"]) and record["b"] == math.inf
  assert record["c"] == -math.inf and record["d"] == 1.5
  assert "nonfinite" not in record


def test_resume_drops_later_and_torn_lines(tmp_path):
  with _writer(tmp_path) as w:
    for step in range(100, 600, 100):
      w.write_scalars(step, {"loss": step / 1000})
  with open(tmp_path / mw.METRICS_FILE, "a") as f:
    f.write('{"step": 600, "lo')  # A crash in the middle of a write.
  with _writer(tmp_path, resume_step=300) as w:
    assert [r["step"] for r in mw.read_metrics(tmp_path)] == [100, 200, 300]
    w.write_scalars(400, {"loss": 0.0})
  assert [r["step"] for r in mw.read_metrics(tmp_path)] == [100, 200, 300, 400]
  assert len(_lines(tmp_path)) == 4
  with _writer(tmp_path) as w:
    w.truncate_after(200)
    w.write_scalars(300, {"loss": 1.0})
  assert [json.loads(x)["step"] for x in _lines(tmp_path)] == [100, 200, 300]


def test_torn_last_line_repaired_without_resume(tmp_path):
  (tmp_path / mw.METRICS_FILE).write_text('{"step": 1}\n{"step": 2}')
  with _writer(tmp_path) as w:
    w.write_scalars(3, {"x": 1})
  assert [json.loads(x)["step"] for x in _lines(tmp_path)] == [1, 2, 3]


def test_other_processes_write_nothing(tmp_path):
  workdir = tmp_path / "w"
  with mw.MetricWriter(workdir, process_index=1) as w:
    w.write_config(config_lib.base_config("denoise"))
    w.write_scalars(1, {"loss": 1.0})
    w.write_images(1, {"x": np.zeros((4, 4, 3), np.uint8)})
    w.truncate_after(0)
  assert not workdir.exists()


def test_tensorboard_event_file(tmp_path):
  with mw.MetricWriter(tmp_path, process_index=0) as w:
    w.write_scalars(5, {"loss/total": 0.5, "alpha": float("nan")})
    w.write_images(5, {"sample": np.full((8, 6, 3), 200, np.uint8),
                       "grid": np.zeros((2, 8, 6, 3), np.uint8)})
  events = list((tmp_path / mw.TB_DIR).glob("events.out.tfevents*"))
  assert len(events) == 1
  content = events[0].read_bytes()
  for tag in (b"loss/total", b"alpha", b"sample", b"grid"):
    assert tag in content
  assert len(mw.read_metrics(tmp_path)) == 1


def test_without_tensorboardx_jsonl_only(tmp_path, monkeypatch):
  monkeypatch.setitem(sys.modules, "tensorboardX", None)  # Import fails.
  with mw.MetricWriter(tmp_path, process_index=0) as w:
    w.write_scalars(1, {"loss": 1.0})
    w.write_images(1, {"x": np.zeros((4, 4, 3), np.uint8)})
  assert not (tmp_path / mw.TB_DIR).exists()
  assert mw.read_metrics(tmp_path) == [{"step": 1, "loss": 1.0}]


def test_bucket_path_rewrites_whole_file(tmp_path, monkeypatch):
  monkeypatch.setattr(mw, "_is_remote", lambda path: True)  # epath, locally.
  w = _writer(tmp_path)
  assert w._file is None
  w.write_scalars(1, {"loss": 1.0})  # The first write goes out at once,
  w.write_scalars(2, {"loss": 2.0})  # later ones every REMOTE_SYNC_S.
  assert [r["step"] for r in mw.read_metrics(tmp_path)] == [1]
  w.flush()
  assert [r["step"] for r in mw.read_metrics(tmp_path)] == [1, 2]
  w.close()
  with _writer(tmp_path, resume_step=1) as w:
    w.write_scalars(2, {"loss": 3.0})
  assert mw.read_metrics(tmp_path) == [{"step": 1, "loss": 1.0},
                                       {"step": 2, "loss": 3.0}]


@pytest.fixture
def clock(monkeypatch):
  now = [100.0]
  monkeypatch.setattr(time, "perf_counter", lambda: now[0])
  return now


def test_progress_rates_eta_and_line(clock, capsys):
  p = mw.Progress(1000, start_step=0, global_batch_size=8)  # Not a TTY.
  clock[0] += 10.0
  figures = p.update(100, {"loss/total": jnp.float32(0.04213),
                           "loss/pixel": 0.0312})
  assert figures == pytest.approx(
      dict(steps_per_s=10.0, images_per_s=80.0, eta_s=90.0))
  assert capsys.readouterr().out == (
      "step 100/1000 | loss/total 0.04213 loss/pixel 0.0312 | 80.0 img/s | "
      "ETA 1m30s\n")
  clock[0] += 10.0
  assert p.update(300) == pytest.approx(
      dict(steps_per_s=20.0, images_per_s=160.0, eta_s=35.0))
  clock[0] += 20.0  # ETA from the mean rate after the first interval: 10/s.
  assert p.update(400)["eta_s"] == pytest.approx(60.0)
  assert capsys.readouterr().out.splitlines() == [
      "step 300/1000 | 160.0 img/s | ETA 35s",
      "step 400/1000 | 40.0 img/s | ETA 1m00s"]
  p.close()


def test_progress_resumed_and_disabled(clock, capsys):
  p = mw.Progress(3000, start_step=2000, global_batch_size=4, enabled=False)
  clock[0] += 4.0
  assert p.update(2200) == pytest.approx(
      dict(steps_per_s=50.0, images_per_s=200.0, eta_s=16.0))
  assert p.update(2200)["steps_per_s"] == 0.0  # No time, no steps.
  assert capsys.readouterr().out == ""


def test_progress_bar_on_a_tty(clock, capsys, monkeypatch):
  monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
  p = mw.Progress(100, global_batch_size=2)
  clock[0] += 1.0
  p.update(10, {"loss/total": 0.5})
  p.close()
  captured = capsys.readouterr()
  assert "10/100" in captured.err and "loss/total 0.5 | 20.0 img/s" in (
      captured.err)
  assert captured.out == ""


@pytest.mark.parametrize("seconds,text", [
    (0, "0s"), (45.2, "45s"), (59.6, "1m00s"), (125, "2m05s"),
    (2 * 3600 + 13 * 60 + 40, "2h13m"), (26 * 3600, "1d02h"),
    (math.inf, "?"), (float("nan"), "?"), (-1, "?")])
def test_format_duration(seconds, text):
  assert mw.format_duration(seconds) == text
