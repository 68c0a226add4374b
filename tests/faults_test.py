"""Training under faults: kill -9, SIGTERM, non-finite steps, bad workdirs,
failing saves, a checkpoint from another config."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import RUNLOCAL
from conftest import restored_params
from conftest import train_config
from dada_jax import checkpoint
from dada_jax import config_lib
from dada_jax import faults
from dada_jax import metric_writer
from dada_jax import train

FLAGS = ["--config.data.patch_size=16", "--config.train.log_every=1",
         "--config.train.eval_every=0", "--config.train.tensorboard=False"]
COMPARED = ("loss/total", "loss/pixel", "loss/diffusion", "grad_norm/restorer")


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """Subprocess environment and a compilation cache the runs share.

  One CPU device: these tests are about stopping and resuming, and Orbax
  saves of arrays split over 8 simulated devices cost seconds each here.
  """
  cache = tmp_path_factory.mktemp("xla_cache")
  e = dict(os.environ)
  e.update(XLA_FLAGS="--xla_force_host_platform_device_count=1",
           JAX_PLATFORMS="cpu", JAX_COMPILATION_CACHE_DIR=str(cache),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1",
           JAX_DISABLE_MOST_OPTIMIZATIONS="true", PYTHONUNBUFFERED="1")
  return e


def _cmd(workdir, total, *extra):
  return [sys.executable, "-m", "dada_jax.cli", "train", "--config", RUNLOCAL,
          "--workdir", str(workdir), f"--config.train.total_steps={total}",
          *FLAGS, *extra]


def _run(env, workdir, total, *extra):
  proc = subprocess.run(_cmd(workdir, total, *extra), env=env, cwd=REPO,
                        capture_output=True, text=True, timeout=600,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc


def _steps(workdir):
  d = pathlib.Path(workdir) / checkpoint.CHECKPOINTS
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit()) if (
      d.exists()) else []


def _final(workdir, step):
  params = restored_params(workdir, step)
  rows = [{k: r[k] for k in ("step",) + COMPARED}
          for r in metric_writer.read_metrics(str(workdir))]
  return params, rows


def _assert_same_run(a, b):
  for x, y in zip(jax.tree.leaves(a[0]), jax.tree.leaves(b[0])):
    np.testing.assert_array_equal(x, y)
  assert a[1] == b[1]


def test_kill_9_at_random_steps_resumes_exactly(tmp_path, env):
  """SIGKILL at seeded random points (async checkpoints in flight), restart
  the same command each time: the end state and every logged metric equal
  an uninterrupted run's."""
  total = 8
  extra = ("--config.train.ckpt_every=1",)
  _run(env, tmp_path / "ref", total, *extra)
  reference = _final(tmp_path / "ref", total)

  run = tmp_path / "killed"
  kills = []
  for seed, (lo, hi) in ((0, (1, 4)), (1, (4, 7))):
    target = int(np.random.default_rng(seed).integers(lo, hi))
    target = max(target, (max(_steps(run)) if _steps(run) else 0) + 1)
    proc = subprocess.Popen(_cmd(run, total, *extra), env=env, cwd=REPO,
                            stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
      if _steps(run) and max(_steps(run)) >= target:
        break
      time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    kills.append(max(_steps(run)) if _steps(run) else 0)
  assert kills[-1] < total, f"never killed before the end: {kills}"
  _run(env, run, total, *extra)
  _assert_same_run(_final(run, total), reference)


def test_sigterm_checkpoints_and_exits(tmp_path, env):
  run = tmp_path / "run"
  proc = subprocess.Popen(_cmd(run, 10_000, "--config.train.ckpt_every=1000"),
                          env=env, cwd=REPO, stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)
  metrics = run / metric_writer.METRICS_FILE
  deadline = time.time() + 300
  while time.time() < deadline and proc.poll() is None:
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 2:
      break
    time.sleep(0.1)
  sent = time.time()
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=60)
  assert time.time() - sent < 30
  assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
  stopped = _steps(run)[-1]
  assert f"stopped by SIGTERM at step {stopped}" in err
  assert stopped < 1000  # saved at the signal, not at a checkpoint step
  # Restarting continues from there.
  _run(env, run, stopped + 2, "--config.train.ckpt_every=1000")
  assert _steps(run)[-1] == stopped + 2
  assert [r["step"] for r in metric_writer.read_metrics(str(run))][-2:] == [
      stopped + 1, stopped + 2]


def _config(total=4, **train_fields):
  """One device (fast Orbax saves, see `env`), a checkpoint every step."""
  return train_config(total, one_device=True,
                      **{"ckpt_every": 1, **train_fields})


def test_non_finite_steps_are_skipped_then_training_stops(tmp_path):
  c = _config(total=10, max_bad_steps=3)
  c.optim.lr = 1e30  # the first update blows the weights up; then NaN
  with pytest.raises(faults.TrainingStopped) as e:
    train.train_and_evaluate(c, str(tmp_path))
  msg = str(e.value)
  assert "non-finite loss or gradients" in msg and "max_bad_steps=3" in msg
  rows = metric_writer.read_metrics(str(tmp_path))
  skipped = [r["step"] for r in rows if r["skipped"]]
  assert skipped and skipped == list(range(skipped[0], rows[-1]["step"] + 1))
  last_good = skipped[0] - 1
  assert f"last good checkpoint: {tmp_path}/checkpoints/{last_good}" in msg
  assert _steps(tmp_path)[-1] == last_good  # nothing saved while skipping
  checkpoint.Checkpointer(str(tmp_path)).restore_params(last_good)


def test_unwritable_or_full_workdir_is_caught_first(tmp_path, monkeypatch):
  blocker = tmp_path / "a_file"
  blocker.write_text("x")
  with pytest.raises(config_lib.ConfigError, match="not writable"):
    train.train_and_evaluate(_config(), str(blocker / "workdir"))
  usage = shutil.disk_usage(tmp_path)
  monkeypatch.setattr(shutil, "disk_usage",
                      lambda p: usage._replace(free=1024))
  with pytest.raises(config_lib.ConfigError, match="MiB free"):
    train.train_and_evaluate(_config(), str(tmp_path / "full"))
  assert not (tmp_path / "full" / "checkpoints").exists()


def test_failing_save_keeps_earlier_checkpoints(tmp_path, monkeypatch):
  real_save = checkpoint.Checkpointer.save

  def flaky_save(self, step, *args, **kwargs):
    if step == 3:
      raise OSError(28, "No space left on device")
    return real_save(self, step, *args, **kwargs)

  monkeypatch.setattr(checkpoint.Checkpointer, "save", flaky_save)
  with pytest.raises(faults.TrainingStopped, match=r"step 3: saving .* \[1, 2\]"):
    train.train_and_evaluate(_config(), str(tmp_path))
  monkeypatch.setattr(checkpoint.Checkpointer, "save", real_save)
  assert _steps(tmp_path) == [1, 2]
  train.train_and_evaluate(_config(), str(tmp_path))  # resumes from 2
  assert _steps(tmp_path)[-1] == 4


def test_resuming_with_another_model_config_names_the_fields(tmp_path):
  train.train_and_evaluate(_config(total=1), str(tmp_path))
  other = _config(total=2)
  other.restorer.wf = 16
  other.critic.res_blocks = 2
  with pytest.raises(config_lib.ConfigError) as e:
    train.train_and_evaluate(other, str(tmp_path))
  msg = str(e.value)
  assert "restorer.wf: checkpoint 8, config 16" in msg
  assert "critic.res_blocks: checkpoint 1, config 2" in msg


def test_checkpoint_config_with_legacy_critic_remat_still_resumes():
  """Configs saved before `remat` moved to `train` hold `critic.remat`."""
  current = json.loads(_config().to_json())
  saved = json.loads(_config().to_json())
  del saved["train"]["remat"]
  saved["critic"]["remat"] = True
  assert faults.config_mismatches(saved, current) == []
  assert faults.resume_problem(saved, current, "W/checkpoints/6") is None
  saved["critic"]["res_blocks"] = 2
  assert faults.config_mismatches(saved, current) == [
      "critic.res_blocks: checkpoint 2, config 1"]


def test_resume_problem_is_one_line_and_allows_schedule_changes():
  saved = json.loads(_config().to_json())
  paper = json.loads(config_lib.base_config("denoise").to_json())
  msg = faults.resume_problem(saved, paper, "W/checkpoints/6")
  n = len(faults.config_mismatches(saved, paper))
  assert n > 3 and "\n" not in msg
  assert msg.startswith(f"W/checkpoints/6 was written with another model "
                        f"config: {n} fields differ (critic: ")
  assert msg.endswith(f"; and {n - 3} more; use a new --workdir or the "
                      "matching --config.* values")
  later = _config(total=100, log_every=7, eval_every=5, ckpt_every=3,
                  keep_ckpts=9, tensorboard=True, progress_bar=True)
  assert faults.resume_problem(saved, json.loads(later.to_json()), "W") is None
