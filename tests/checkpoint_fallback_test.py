"""Resuming and restoring past damaged newest checkpoints; resume refusals.

One short run (checkpoints of steps 2, 4 and 6) is trained once and copied
per test.
"""

import fcntl
import os
import pathlib
import re
import shutil

import jax
import numpy as np
import pytest

from conftest import RUNLOCAL
from conftest import cached_config
from conftest import restored_params
from dada_jax import checkpoint
from dada_jax import cli
from dada_jax import metric_writer
from dada_jax import train
from dada_jax import weights

# One device: Orbax saves of arrays split over 8 simulated devices are slow.
FLAGS = ("--config.mesh=(('data', 1),)", "--config.data.patch_size=16",
         "--config.train.log_every=1", "--config.train.ckpt_every=2",
         "--config.train.eval_every=0", "--config.train.keep_ckpts=3",
         "--config.train.async_ckpt=False", "--config.train.tensorboard=False")
TOTAL = 6


def _config(*extra):
  flags = [*FLAGS, f"--config.train.total_steps={TOTAL}", *extra]
  return cached_config(overrides=[f[len("--config."):] for f in flags])


def _train_cli(workdir, *extra):
  return cli.main(["train", "--config", RUNLOCAL, "--workdir", str(workdir),
                   *FLAGS, f"--config.train.total_steps={TOTAL}", *extra])


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
  """The run every test copies, trained once even with xdist: the workers'
  temporary folders share this session's folder; the first to lock trains."""
  shared = tmp_path_factory.getbasetemp()
  if os.environ.get("PYTEST_XDIST_WORKER"):
    shared = shared.parent
  workdir = shared / "checkpoint_fallback_run"
  with open(shared / "checkpoint_fallback_run.lock", "w") as lock:
    fcntl.flock(lock, fcntl.LOCK_EX)
    if not (workdir / "done").exists():
      shutil.rmtree(workdir, ignore_errors=True)
      train.train_and_evaluate(_config(), str(workdir))
      (workdir / "done").touch()
  assert _steps(workdir) == [2, 4, 6]
  return workdir


@pytest.fixture
def workdir(trained, tmp_path):
  return pathlib.Path(shutil.copytree(trained, tmp_path / "w"))


def _steps(workdir):
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True)
  try:
    return ckpt.all_steps()
  finally:
    ckpt.close()


def _state(workdir, step):
  return (restored_params(workdir, step),
          restored_params(workdir, step, use_ema=True))


def _truncate_state(step_dir):
  files = [p for p in (step_dir / "state").rglob("*") if p.is_file()]
  biggest = max(files, key=lambda p: p.stat().st_size)
  os.truncate(biggest, biggest.stat().st_size // 2)


def _empty_meta(step_dir):
  (step_dir / "meta" / "metadata").write_text("")


def _listing(root):
  """{path: (size, mtime)} of everything under root, root included."""
  paths = [root, *root.rglob("*")]
  return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns)
          for p in paths}


def _one_line(text):
  assert text.endswith("\n") and text.count("\n") == 1, text
  return text.rstrip("\n")


def test_train_resumes_from_the_newest_step_that_restores(workdir, trained,
                                                          capsys):
  _truncate_state(workdir / "checkpoints" / "6")
  _empty_meta(workdir / "checkpoints" / "4")
  broken = {s: _listing(workdir / "checkpoints" / str(s)) for s in (4, 6)}
  capsys.readouterr()

  # log_every may change on resume: the earlier config.json is kept.
  train.train_and_evaluate(_config("--config.train.log_every=2"),
                           str(workdir))

  skips = [line for line in capsys.readouterr().err.splitlines()
           if "skipping" in line]
  assert len(skips) == 2
  for line, step, item in zip(skips, (6, 4), ("state", "meta")):
    moved = workdir / checkpoint.UNREADABLE / str(step)
    assert re.fullmatch(
        rf"dada-jax: skipping {re.escape(str(workdir))}/checkpoints/{step}: "
        rf"unreadable \({item}: [^\n]+\); moved to "
        rf"{re.escape(str(moved))}; using step 2", line), line
    assert _listing(moved) == broken[step]  # whole, not deleted or changed
  assert _steps(workdir) == [2, 4, 6]
  # Steps 3 to 6 again from step 2: exactly the uninterrupted run's.
  for a, b in zip(jax.tree.leaves(_state(trained, 6)),
                  jax.tree.leaves(_state(workdir, 6))):
    np.testing.assert_array_equal(a, b)
  assert [r["step"] for r in metric_writer.read_metrics(str(workdir))] == [
      1, 2, 4, 6]
  assert (workdir / "config.step_2.json").read_text() == (
      trained / "config.json").read_text()
  assert '"log_every": 2' in (workdir / "config.json").read_text()


def test_restore_path_falls_back_and_changes_nothing(workdir, trained,
                                                     capsys):
  _truncate_state(workdir / "checkpoints" / "6")
  before = _listing(workdir)
  capsys.readouterr()

  params = weights.load_params(str(workdir), _config())

  assert _listing(workdir) == before
  line = _one_line(capsys.readouterr().err)
  assert re.fullmatch(
      rf"dada-jax: skipping {re.escape(str(workdir))}/checkpoints/6: "
      r"unreadable \(state: [^\n]{20,220}\); using step 4", line), line
  ema = _state(trained, 4)[1]["restorer"]
  for a, b in zip(jax.tree.leaves(ema), jax.tree.leaves(params["restorer"])):
    np.testing.assert_array_equal(a, b)


def test_no_step_restores_one_line_listing_each(workdir, capsys):
  _truncate_state(workdir / "checkpoints" / "6")
  _empty_meta(workdir / "checkpoints" / "4")
  shutil.rmtree(workdir / "checkpoints" / "2" / "state")
  before = _listing(workdir / "checkpoints")
  capsys.readouterr()

  assert _train_cli(workdir, "--config.train.total_steps=8") == 2
  line = _one_line(capsys.readouterr().err)
  assert line.startswith(f"dada-jax train: error: {workdir}/checkpoints: no "
                         "checkpoint restores (step 6: state: ")
  assert line.endswith(
      "; step 4: meta: JSONDecodeError: Expecting value: line 1 column 1 "
      "(char 0); step 2: state: KeyError: Item \"state\" was not found in "
      "the checkpoint. Available items: ['data_iter', 'meta']); nothing was "
      "moved or deleted")
  assert _listing(workdir / "checkpoints") == before
  assert not (workdir / checkpoint.UNREADABLE).exists()

  with pytest.raises(checkpoint.UnreadableCheckpoint) as e:
    weights.load_params(str(workdir), _config())
  assert "\n" not in str(e.value) and "step 6: state: " in str(e.value)
  assert _listing(workdir / "checkpoints") == before


def test_model_config_mismatch_is_one_line(workdir, capsys):
  code = _train_cli(workdir, "--config.restorer.depth=2",
                    "--config.restorer.wf=16", "--config.critic.res_blocks=2",
                    "--config.critic.inner_channels=64")
  line = _one_line(capsys.readouterr().err)
  assert code == 2
  assert line == (
      f"dada-jax train: error: {workdir}/checkpoints/6 was written with "
      "another model config: 4 fields differ (critic: 2, restorer: 2), e.g. "
      "restorer.depth: checkpoint 3, config 2; restorer.wf: checkpoint 8, "
      "config 16; critic.inner_channels: checkpoint 32, config 64; and 1 "
      "more; use a new --workdir or the matching --config.* values")


@pytest.mark.parametrize("field,value,saved", [("data.batch_size", 16, 8),
                                               ("data.patch_size", 32, 16),
                                               ("seed", 1, 0)])
def test_resume_refuses_another_data_order(workdir, trained, capsys, field,
                                           value, saved):
  assert _train_cli(workdir, f"--config.{field}={value}") == 2
  line = _one_line(capsys.readouterr().err)
  assert line == (
      f"dada-jax train: error: {workdir}/checkpoints/6 was written with other "
      f"data or seed settings ({field}: checkpoint {saved}, config {value}); "
      "a resumed run's batches and random streams depend on them: resume "
      f"with --config.{field}={saved}, or use a new --workdir")
  assert (workdir / "config.json").read_text() == (
      trained / "config.json").read_text()
  assert not list(workdir.glob("config.step_*"))
