"""End to end: `train_and_evaluate` on the runlocal config, resume, errors."""

import functools
import json

import jax
import numpy as np
import pytest

from conftest import RUNLOCAL
from conftest import restored_params
from conftest import train_config
from dada_jax import checkpoint
from dada_jax import cli
from dada_jax import metric_writer
from dada_jax import train

LOSSES = ("loss/total", "loss/pixel", "loss/diffusion", "loss/triplet",
          "grad_norm/restorer", "grad_norm/critic", "alpha")


runlocal = functools.partial(train_config, ckpt_every=2)


def test_resumed_run_equals_uninterrupted_run(tmp_path):
  """4 steps in one go == 2 steps, stop, restart the same command to 4:
  identical params and identical metrics at every step (CPU, fp32)."""
  full, split = tmp_path / "full", tmp_path / "split"
  train.train_and_evaluate(runlocal(4), str(full))
  train.train_and_evaluate(runlocal(2), str(split))
  assert checkpoint.Checkpointer(str(split)).latest_step() == 2
  train.train_and_evaluate(runlocal(4), str(split))  # resumes at step 2

  for a, b in zip(jax.tree.leaves(restored_params(full, 4)),
                  jax.tree.leaves(restored_params(split, 4))):
    np.testing.assert_array_equal(a, b)
  rows = {d: [{k: r[k] for k in LOSSES} | {"step": r["step"]}
              for r in metric_writer.read_metrics(str(d))]
          for d in (full, split)}
  assert [r["step"] for r in rows[split]] == [1, 2, 3, 4]
  assert rows[full] == rows[split]
  config = json.loads((split / "config.json").read_text())
  assert config["objective"]["ramp_steps"] == 10


def test_runlocal_writes_everything_a_user_looks_at(tmp_path, capsys):
  c = runlocal(2, eval_every=2, tensorboard=True)
  final = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(final["loss/total"]) and final["loss/diffusion"] > 0
  rows = metric_writer.read_metrics(str(tmp_path))
  evals = [r for r in rows if "eval/psnr" in r]
  assert evals and evals[-1]["step"] == 2 and evals[-1]["eval/num_images"] == 4
  assert (tmp_path / "samples" / "step_0000002.png").exists()
  assert list((tmp_path / "tb").glob("events.out.tfevents*"))
  assert json.loads((tmp_path / "config.json").read_text())["seed"] == 0

  # The workdir is a checkpoint for `evaluate` and `restore` (EMA params).
  spec = RUNLOCAL
  assert cli.main(["evaluate", "--config", spec, "--checkpoint",
                   str(tmp_path)]) == 0
  table = capsys.readouterr().out
  assert f"{evals[-1]['eval/psnr']:.2f}" in table


@pytest.mark.parametrize("field,value,message", [
    ("data.batch_size", 12, "not divisible by the 8 devices"),
    ("data.patch_size", 18, "must be a multiple of 4"),
    ("objective.mode", "gan", "expected 'vanilla', 'dda' or 'dda_ex'"),
    ("data.syn.kind", "folder", "config.data.syn.path is empty"),
])
def test_bad_config_fails_before_training(tmp_path, field, value, message):
  c = runlocal(2)
  section, name = field.rsplit(".", 1)
  node = c
  for part in section.split("."):
    node = node[part]
  node[name] = value
  with pytest.raises(ValueError, match=message):
    train.train_and_evaluate(c, str(tmp_path))
  assert not (tmp_path / "checkpoints").exists()
