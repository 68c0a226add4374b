"""config_lib.validate: the rules of every command, those a training run adds,
config.eval as a dataset; loaded configs are locked."""

import copy

import ml_collections as mlc
import pytest

from conftest import cached_config
from conftest import REPO
from dada_jax import config_lib
from dada_jax import data
from dada_jax.data import degrade
from dada_jax.data import simulated


def _set(config, field, value):
  *parents, leaf = field.split(".")
  node = config
  for p in parents:
    node = node[p]
  node[leaf] = value


@pytest.mark.parametrize("field,value,message", [
    ("data.batch_size", 12, "config.data.batch_size=12 is not divisible by "
     "the 8 devices of the data axis"),
    ("data.patch_size", 18, "config.data.patch_size=18 must be a multiple of "
     "4 (the restorer's and the critic's downsampling)"),
    ("data.ref.kind", "none", "config.objective.mode='dda_ex' needs a clean "
     "reference stream: set config.data.ref.kind"),
    ("train.log_every", 0, "config.train.log_every=0 must be positive"),
    ("data.syn.kind", "folder", "config.data.syn.path is empty (kind 'folder' "
     "needs it)"),
    ("data.real.kind", "paired_flists", "config.data.real.path is empty"),
    ("data.ref.kind", "tfds", "config.data.ref.path is empty"),
    ("data.syn.kind", "none", "config.data.syn and config.data.real need a "
     "kind"),
    ("data.real.kind", "video", "config.data.real.kind='video': expected one "
     "of ('synthetic',"),
    ("eval.kind", "sidd", "config.eval.kind='sidd': expected one of ('none',"),
    ("eval.noise_sigma", -1.0, "config.eval: kind synthetic is clean-only; "
     "set noise_sigma >= 0 (8-bit units)"),
])
def test_training_rules_only_with_num_devices(field, value, message):
  c = cached_config(overrides=["objective.mode='dda_ex'"])
  config_lib.validate(c, num_devices=8)
  _set(c, field, value)
  config_lib.validate(c)  # what every command checks: none of these
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c, num_devices=8)
  assert str(e.value).startswith(message)


def test_streams_a_mode_does_not_read_are_not_checked():
  c = cached_config(overrides=["objective.mode='vanilla'"])
  c.data.real.kind = "folder"
  c.data.ref.kind = "video"
  c.eval.kind = "sidd_mat"
  config_lib.validate(c, num_devices=8)
  c.objective.mode = "dda"
  with pytest.raises(config_lib.ConfigError, match="data.real.path is empty"):
    config_lib.validate(c, num_devices=8)


@pytest.mark.parametrize("task", ["denoise", "derain", "deblur"])
def test_paper_configs_load_without_data_paths(task):
  """Restore, convert and `evaluate --input` take the task configs as they
  are: their data paths are given on the training command line only."""
  c = config_lib.load_config(str(REPO / f"configs/{task}.py"))
  with pytest.raises(config_lib.ConfigError, match="path is empty"):
    config_lib.validate(c, num_devices=8)


def test_eval_source():
  c = cached_config()
  config_lib.validate(c, eval_source=True)  # synthetic with noise_sigma 25
  c.eval.update(kind="simulated", task="deblur", domain="real",
                noise_sigma=-1.0)
  config_lib.validate(c, eval_source=True)  # paired
  c.eval.paired = False
  with pytest.raises(config_lib.ConfigError, match="kind simulated is clean"):
    config_lib.validate(c, eval_source=True)
  c.eval.update(noise_sigma=0.0, domain="dry")
  with pytest.raises(config_lib.ConfigError, match="unknown degradation "
                     "deblur/dry; known: denoise/synthetic, denoise/real,"):
    config_lib.validate(c, eval_source=True)


@pytest.mark.parametrize("fields", [
    dict(kind="video"), dict(kind="flist"),
    dict(kind="paired_folders", path="a"), dict(kind="simulated"),
    dict(kind="simulated", task="denoise", domain="nope"),
])
def test_build_source_rejects_what_validate_rejects(fields):
  stream = copy.deepcopy(config_lib.base_config("denoise").data.real)
  stream.update(fields)
  problem = config_lib.stream_problem(stream, "config.data.real")
  assert problem and problem.startswith("config.data.real")
  with pytest.raises(data.DataError) as e:
    data.build_source(stream, "config.data.real")
  assert str(e.value) == problem


def test_simulated_tasks_and_domains_match_the_degradations():
  assert config_lib.TASKS == tuple(degrade.DEGRADATIONS)
  assert config_lib.DOMAINS == simulated.DOMAINS


def test_loaded_config_is_locked_and_copies_stay_locked():
  c = config_lib.load_config(str(REPO / "configs/denoise.py"),
                             ["train.total_steps=7"])
  c.train.total_steps = 8  # existing fields can change
  c.data.syn.update(kind="folder", path="x")
  for config in (c, copy.deepcopy(c), c.copy_and_resolve_references()):
    assert config.is_locked and config.data.syn.is_locked
    with pytest.raises(AttributeError, match="cannot be added"):
      config.train.totl_steps = 8
    with pytest.raises(KeyError, match="cannot be added"):
      config.data.update(batch=4)
  assert isinstance(copy.deepcopy(c), mlc.ConfigDict)


@pytest.mark.parametrize("remat,policy,message", [
    (True, "save_convs", "config.train.remat_policy='save_convs': expected "
     "one of ['', 'dots_saveable'"),
    (False, "dots_saveable", "config.train.remat_policy='dots_saveable' "
     "applies only with config.train.remat=True"),
])
def test_remat_policy_is_a_known_name_and_needs_remat(remat, policy, message):
  c = cached_config(overrides=["train.remat=True",
                               "train.remat_policy='dots_saveable'"])
  config_lib.validate(c)
  c.train.update(remat=remat, remat_policy=policy)
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(c)
  assert str(e.value).startswith(message)
