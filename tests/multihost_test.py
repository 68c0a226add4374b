"""A pod on one machine: `dada-jax train --multihost` as 2 processes x 4 CPU
devices, started by the SLURM recipe `launch/slurm.sh` (srun faked: it sets
the variables srun sets), against one process with 8 devices.

One run, in stages: two processes train until SIGTERM reaches one of them
(both stop after the same step, checkpointed), restart and are killed with
kill -9 (one, then the other), restart and finish. Its every logged metric
and its final params equal one uninterrupted 8-device process's to fp32
round-off (the collectives run through gloo instead of in-process), and only
process 0 wrote metrics, TensorBoard events and the sample grid. A process
whose coordinator never answers stops with one line.
"""

import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import RUNLOCAL
from conftest import restored_params
from dada_jax import checkpoint
from dada_jax import metric_writer
from dada_jax import multihost

FLAGS = ["--config.data.patch_size=16", "--config.train.log_every=1",
         "--config.train.ckpt_every=1000", "--config.train.eval_every=1000"]
COMPARED = ("loss/total", "loss/pixel", "loss/diffusion", "loss/mse",
            "loss/triplet", "grad_norm/restorer", "grad_norm/critic",
            "eval/psnr")
TIMEOUT_S = 300


@pytest.fixture(scope="module")
def env(tmp_path_factory):
  """The processes' environment: a compilation cache they share, quick
  compiles (as the other tests), unbuffered output."""
  e = dict(os.environ)
  e.update(JAX_PLATFORMS="cpu", PYTHONUNBUFFERED="1",
           JAX_COMPILATION_CACHE_DIR=str(tmp_path_factory.mktemp("xla")),
           JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="1",
           JAX_DISABLE_MOST_OPTIMIZATIONS="true")
  return e


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _cmd(workdir, total, *extra):
  return [sys.executable, "-m", "dada_jax.cli", "train", "--config", RUNLOCAL,
          "--workdir", str(workdir), f"--config.train.total_steps={total}",
          *FLAGS, *extra]


def _slurm_env(env, rank, port, devices=4, ntasks=2):
  e = dict(env)
  e.update(XLA_FLAGS=f"--xla_force_host_platform_device_count={devices}",
           SLURM_JOB_ID="4242", SLURM_STEP_NODELIST="localhost",
           SLURM_NTASKS=str(ntasks), SLURM_PROCID=str(rank),
           SLURM_LOCALID=str(rank),
           JAX_COORDINATOR_ADDRESS=f"127.0.0.1:{port}")
  return e


# Stands in for srun on one machine: starts SLURM_NTASKS copies of the
# command with the per-task variables srun sets, each one's pid, stderr and
# exit status in $TASKS/<rank>.{pid,log,rc}.
FAKE_SRUN = """#!/bin/bash
while [[ "$1" == --* ]]; do shift; done
for ((i = 0; i < SLURM_NTASKS; i++)); do
  (SLURM_PROCID=$i SLURM_LOCALID=$i exec "$@" 2> "$TASKS/$i.log") &
  echo $! > "$TASKS/$i.pid"
  pids[i]=$!
done
for ((i = 0; i < SLURM_NTASKS; i++)); do
  wait "${pids[i]}"; echo $? > "$TASKS/$i.rc"
done
"""


class Job:
  """`launch/slurm.sh CONFIG WORKDIR ...` in an allocation of two "hosts"
  (4 CPU devices each), srun faked by FAKE_SRUN."""

  def __init__(self, env, workdir, total, tmp):
    self.tasks = tmp / f"tasks.{time.time_ns()}"
    self.tasks.mkdir(parents=True)
    srun = tmp / "srun"
    srun.write_text(FAKE_SRUN)
    srun.chmod(0o755)
    e = _slurm_env(env, 0, _free_port())
    del e["SLURM_PROCID"], e["SLURM_LOCALID"]  # per task, from srun
    e.update(SRUN=str(srun), TASKS=str(self.tasks), VENV=sys.prefix)
    overrides = [f"--config.train.total_steps={total}", *FLAGS]
    self.srun = subprocess.Popen(
        ["bash", str(REPO / "launch/slurm.sh"), RUNLOCAL, str(workdir),
         *overrides], env=e, cwd=REPO, stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while not all((self.tasks / f"{r}.pid").exists() for r in range(2)):
      assert time.time() < deadline and self.srun.poll() is None
      time.sleep(0.05)
    self.pids = [int((self.tasks / f"{r}.pid").read_text()) for r in range(2)]

  def running(self):
    return self.srun.poll() is None

  def signal(self, rank, signum):
    os.kill(self.pids[rank], signum)

  def logs(self):
    return [(self.tasks / f"{r}.log").read_text() for r in range(2)]

  def wait(self, timeout=TIMEOUT_S):
    self.srun.wait(timeout=timeout)
    codes = [int((self.tasks / f"{r}.rc").read_text()) for r in range(2)]
    return codes, self.logs()

  def kill(self):
    for pid in self.pids:
      try:
        os.kill(pid, signal.SIGKILL)
      except ProcessLookupError:
        pass
    self.srun.wait(timeout=60)


def _logged_steps(workdir):
  return [r["step"] for r in metric_writer.read_metrics(str(workdir))
          if "loss/total" in r]


def _wait_for_step(job, workdir, step):
  deadline = time.time() + TIMEOUT_S
  while time.time() < deadline:
    if not job.running():
      job.kill()
      pytest.fail("the job ended early:\n" +
                  "\n".join(log[-2000:] for log in job.logs()))
    if max(_logged_steps(workdir), default=0) >= step:
      return
    time.sleep(0.05)
  job.kill()
  pytest.fail(f"step {step} not reached in {TIMEOUT_S} s")


def _ckpt_steps(workdir):
  d = pathlib.Path(workdir) / checkpoint.CHECKPOINTS
  return sorted(int(p.name) for p in d.iterdir() if p.name.isdigit())


def _metrics(workdir):
  """{step: {name: value}} of every logged row (train and eval rows merged);
  fails on a step logged twice."""
  rows = {}
  for r in metric_writer.read_metrics(str(workdir)):
    row = rows.setdefault(r["step"], {})
    assert not set(row) & set(r) - {"step"}, f"step {r['step']} logged twice"
    row.update(r)
  return rows


def test_two_processes_equal_one_and_survive_sigterm_and_kill_9(tmp_path,
                                                                  env):
  run = tmp_path / "pod"
  starts = 0

  # SIGTERM to process 1 only: both stop after one agreed step, checkpointed.
  job = Job(env, run, 10_000, tmp_path)
  starts += 1
  _wait_for_step(job, run, 2)
  job.signal(1, signal.SIGTERM)
  codes, errs = job.wait(timeout=120)
  assert codes == [128 + signal.SIGTERM] * 2, "\n".join(e[-2000:] for e in errs)
  stopped = _ckpt_steps(run)[-1]
  for err in errs:
    assert f"stopped by SIGTERM at step {stopped}" in err, err[-2000:]

  # Restart; kill -9 one process mid-run, then the other (a lost host).
  job = Job(env, run, 10_000, tmp_path)
  starts += 1
  _wait_for_step(job, run, stopped + 1)
  job.signal(1, signal.SIGKILL)
  job.kill()
  assert _ckpt_steps(run)[-1] == stopped

  # Restart both: they finish where an uninterrupted run would.
  total = stopped + 2
  job = Job(env, run, total, tmp_path)
  starts += 1
  codes, errs = job.wait()
  assert codes == [0, 0], "\n".join(e[-2000:] for e in errs)

  # The same run in one process with 8 devices, uninterrupted.
  one = tmp_path / "one"
  e = dict(env, XLA_FLAGS="--xla_force_host_platform_device_count=8")
  proc = subprocess.run(_cmd(one, total), env=e, cwd=REPO, check=False,
                        capture_output=True, text=True, timeout=TIMEOUT_S)
  assert proc.returncode == 0, proc.stderr[-3000:]

  pod_rows, one_rows = _metrics(run), _metrics(one)
  assert sorted(pod_rows) == sorted(one_rows) == list(range(1, total + 1))
  for step, row in one_rows.items():
    for name in COMPARED:
      if name in row:
        np.testing.assert_allclose(pod_rows[step][name], row[name],
                                   rtol=2e-5, atol=1e-6,
                                   err_msg=f"step {step} {name}")
  # The restorer equals to round-off. Some critic biases feed a GroupNorm
  # of one channel per group, which cancels them: their gradient is
  # round-off, which Adam (dividing by sqrt(v)) turns into steps of up to lr.
  # A different batch would move nearly every param.
  pod, ref = restored_params(run, total), restored_params(one, total)
  for (path, a), b in zip(
      jax.tree_util.tree_leaves_with_path(pod["restorer"]),
      jax.tree.leaves(ref["restorer"])):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6,
                               err_msg=jax.tree_util.keystr(path))
  diff = np.concatenate([np.abs(a - b).ravel() for a, b in zip(
      jax.tree.leaves(pod["critic"]), jax.tree.leaves(ref["critic"]))])
  assert np.mean(diff > 1e-6) < 1e-3, np.mean(diff > 1e-6)
  assert diff.max() <= total * 1e-4  # lr = 1e-4

  # Process 0 alone wrote the logs: one event file per start, one grid.
  events = list((run / "tb").rglob("events.out.tfevents.*"))
  assert len(events) == starts, events
  assert [p.name for p in (run / "samples").iterdir()] == [
      f"step_{total:07d}.png"]


@pytest.mark.parametrize("rank", [0, 1])
def test_missing_peer_or_coordinator_fails_in_bounded_time(tmp_path, env,
                                                           rank):
  """Process 1 with no coordinator, or process 0 whose peer never comes: one
  error line naming the coordinator, exit 2, no stack trace, no hang."""
  port = _free_port()
  started = time.time()
  proc = subprocess.run(
      _cmd(tmp_path / "run", 2, "--multihost", "--coordinator-timeout=5"),
      env=_slurm_env(env, rank, port), cwd=REPO, capture_output=True,
      text=True, timeout=120, check=False)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert time.time() - started < 60
  last = proc.stderr.strip().splitlines()[-1]
  assert last.startswith("dada-jax: error: --multihost: process "
                         f"{rank} of 2, coordinator 127.0.0.1:{port}"), last
  assert "within 5 s" in last
  assert "Check failure" not in proc.stderr and "Traceback" not in proc.stderr
  assert not (tmp_path / "run").exists()  # nothing written


@pytest.mark.parametrize("variables,problem", [
    ({"JAX_NUM_PROCESSES": "2"}, "set both JAX_NUM_PROCESSES and"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "two"},
     "JAX_PROCESS_ID='two' is not an integer"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     r"JAX_PROCESS_ID=2 is not in \[0, JAX_NUM_PROCESSES=2\)"),
    ({"JAX_COORDINATOR_ADDRESS": "localhost"}, "expected host:port"),
])
def test_malformed_job_variables_are_named(variables, problem):
  with pytest.raises(multihost.MultihostError, match=problem):
    multihost.job_from_env(variables)


def test_job_variables_reach_jax():
  assert multihost.job_from_env({
      "JAX_COORDINATOR_ADDRESS": "10.0.0.2:1234", "JAX_NUM_PROCESSES": "4",
      "JAX_PROCESS_ID": "3"}) == {"coordinator_address": "10.0.0.2:1234",
                                  "num_processes": 4, "process_id": 3}
  assert multihost.job_from_env({}) == {}  # auto-detection decides
