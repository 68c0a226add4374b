"""Networks other than the paper's, picked by config.restorer.name /
config.critic.name: they train, resume, restore and convert through the same
code as the paper's (their exactness: tests/models/<name>_test.py)."""

import math

import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import cached_config
from conftest import restored_params
from conftest import train_config
from dada_jax import backbones
from dada_jax import config_lib
from dada_jax import faults
from dada_jax import models
from dada_jax import predict
from dada_jax import train
from dada_jax.torch_io import convert

RESTORMER_SR3 = str(REPO / "configs/restormer.py") + ":runlocal,critic=sr3"
UFORMER = str(REPO / "configs/uformer.py") + ":runlocal"


@pytest.fixture(scope="module")
def config():
  return cached_config(RESTORMER_SR3)


@pytest.fixture(scope="module")
def params(config):
  return jax.device_get(jax.jit(lambda k: models.init_params(config, k))(
      jax.random.key(0)))


def test_config_names_pick_the_networks(config):
  assert type(models.make_restorer(config)).__name__ == "Restormer"
  assert type(models.make_critic(config)).__name__ == "SR3UNet"
  assert models.pad_multiple(config) == 8
  assert backbones.patch_multiple(config) == 8
  with pytest.raises(config_lib.ConfigError,
                     match=r"config.restorer.name='swin': expected one of "
                     r"\['unet', 'restormer'"):
    config_lib.load_config(RESTORMER_SR3, ["restorer.name=swin"])


def test_reference_state_dict_round_trip(config, params):
  """Export gives the reference Network's keys for both networks (each
  network's own keys under RestorationNet. / denoise_fn.); import gives the
  params back bitwise, also from a restorer-only .pth."""
  state = convert.state_dict_from_params(params, config)
  _, r_attrs = models.network_attributes(config, "restorer")
  _, c_attrs = models.network_attributes(config, "critic")
  restorer_keys = models.RESTORER_MODULES["restormer"].params_to_torch(
      {"params": params["restorer"]}, **r_attrs)
  critic_keys = models.CRITIC_MODULES["sr3"].params_to_torch(
      {"params": params["critic"]}, **c_attrs)
  assert {k for k in state if k.startswith("RestorationNet.")} == {
      "RestorationNet." + k for k in restorer_keys}
  assert {k for k in state if k.startswith("denoise_fn.")} == {
      "denoise_fn." + k for k in critic_keys}
  back = convert.params_from_state_dict(state, config)
  jax.tree.map(np.testing.assert_array_equal, back, params)
  only = {k: v for k, v in state.items() if k.startswith("RestorationNet.")}
  back = convert.params_from_state_dict(only, config)
  assert set(back) == {"restorer"}
  jax.tree.map(np.testing.assert_array_equal, back["restorer"],
               params["restorer"])
  del only[next(iter(only))]
  with pytest.raises(convert.CheckpointMismatch,
                     match="does not fit the config.*RestorationNet: .*missing"):
    convert.params_from_state_dict(only, config)


@pytest.mark.parametrize("spec,tile,overlap", [
    (RESTORMER_SR3, 32, 8), (UFORMER, 64, 0),
    (str(REPO / "configs/swinir.py") + ":runlocal", 32, 8),
    (str(REPO / "configs/nafnet.py") + ":runlocal", 32, 8)])
def test_restore_and_convert_at_odd_sizes(spec, tile, overlap):
  """Odd sizes pad to the network's multiple (Uformer: its windows at every
  level); tiles are multiples of it; the restorer alone converts both
  ways."""
  config = cached_config(spec)
  size = math.lcm(models.pad_multiple(config), 32)
  restorer = jax.device_get(jax.jit(lambda k: models.init_params(
      config, k, size=size, roles=("restorer",)))(jax.random.key(1)))[
          "restorer"]
  image = np.random.default_rng(0).uniform(0, 1, (37, 45, 3)).astype(
      np.float32)
  whole = predict.restore_array(config, restorer, image, tile=0)
  assert whole.shape == image.shape and np.isfinite(whole).all()
  tiled = predict.restore_array(config, restorer, image, tile=tile,
                                overlap=overlap)
  assert tiled.shape == image.shape and np.isfinite(tiled).all()
  state = convert.state_dict_from_params({"restorer": restorer}, config)
  back = convert.params_from_state_dict(state, config)["restorer"]
  jax.tree.map(np.testing.assert_array_equal, back, restorer)


def test_dda_trains_and_resumes_exactly(tmp_path):
  """Restormer restorer + SR3 critic: 2 steps in one go == 1 step, stop,
  resume to 2 (params bitwise)."""
  def run(total, workdir):
    c = train_config(total, spec=RESTORMER_SR3, one_device=True, ckpt_every=1)
    return train.train_and_evaluate(c, str(workdir))
  losses = lambda m: {k: v for k, v in m.items() if k.startswith("loss/")}
  last = run(2, tmp_path / "full")
  run(1, tmp_path / "split")
  assert losses(run(2, tmp_path / "split")) == losses(last)
  for a, b in zip(jax.tree.leaves(restored_params(tmp_path / "full", 2)),
                  jax.tree.leaves(restored_params(tmp_path / "split", 2))):
    np.testing.assert_array_equal(a, b)


def test_resume_compares_only_the_named_network():
  old = {"restorer": {"depth": 4, "wf": 64, "slope": 0.2,
                      "last_init": "kaiming"}}  # before names existed
  new = {"restorer": {"name": "unet", "depth": 4, "wf": 64, "slope": 0.2,
                      "last_init": "kaiming", "restormer": {"dim": 48}}}
  assert not faults.config_mismatches(old, new, ("restorer",))
  other = {"restorer": {**new["restorer"], "restormer": {"dim": 24}}}
  assert not faults.config_mismatches(new, other, ("restorer",))
  switched = {"restorer": {**other["restorer"], "name": "restormer"}}
  assert faults.config_mismatches(new, switched, ("restorer",)) == [
      "restorer.depth: checkpoint 4, config None",
      "restorer.dim: checkpoint None, config 24",
      "restorer.last_init: checkpoint 'kaiming', config None",
      "restorer.name: checkpoint 'unet', config 'restormer'",
      "restorer.slope: checkpoint 0.2, config None",
      "restorer.wf: checkpoint 64, config None"]


def test_unet_sizes_match_the_papers_macs():
  """Fig. 7's U-Net-T/S/B GMACs at 128² (3.14 / 12.48 / 17.58) over XLA's
  count of ours: one ratio for all three sizes."""
  paper = {"T": 3.14, "S": 12.48, "B": 17.58}
  ratios = {}
  for size, gmacs in paper.items():
    config = config_lib.load_config(str(REPO / "configs/denoise.py") +
                                    f":size={size}")
    restorer = models.make_restorer(config)
    x = jax.ShapeDtypeStruct((1, 128, 128, 3), np.float32)
    variables = jax.eval_shape(restorer.init, jax.random.key(0), x)
    flops = jax.jit(restorer.apply).lower(variables, x).cost_analysis()[
        "flops"]
    ratios[size] = gmacs / (flops / 2e9)
  assert max(ratios.values()) / min(ratios.values()) < 1.005, ratios
  assert models.count_params(jax.eval_shape(
      lambda: models.init_params(cached_config(str(REPO / "configs/denoise.py")
                                               + ":size=S"),
                                 jax.random.key(0), roles=("restorer",)))) == (
                                     8_559_171)  # the paper's 8.56M


def test_published_nafnet_checkpoint_initialises_training(tmp_path):
  """A BasicSR-style {"params": state_dict} file of the published NAFNet
  layout (no prefix) loads as the restorer, as train.init_from reads it."""
  torch = pytest.importorskip("torch")
  from dada_jax import weights  # pylint: disable=g-import-not-at-top
  config = cached_config(str(REPO / "configs/nafnet.py") + ":runlocal")
  restorer = jax.device_get(jax.jit(lambda k: models.init_params(
      config, k, roles=("restorer",)))(jax.random.key(2)))["restorer"]
  _, attrs = models.network_attributes(config, "restorer")
  state = models.RESTORER_MODULES["nafnet"].params_to_torch(
      {"params": restorer}, **attrs)
  path = tmp_path / "NAFNet-SIDD-width4.pth"
  torch.save({"params": {k: torch.from_numpy(v) for k, v in state.items()}},
             path)
  loaded = weights.load_params(str(path), config)
  jax.tree.map(np.testing.assert_array_equal, loaded["restorer"], restorer)


@pytest.mark.parametrize("config_file,params", [
    ("restormer.py", 26_111_668), ("uformer.py", 21_713_757),
    ("swinir.py", 11_504_163), ("nafnet.py", 29_159_715)])
def test_train_state_initialises_at_default_sizes(config_file, params):
  """The trainer's init at each network's default size (Uformer needs inputs
  of 128 there), with the reference's parameter counts."""
  from dada_jax import train_step  # pylint: disable=g-import-not-at-top
  config = config_lib.load_config(str(REPO / "configs" / config_file))
  state = jax.eval_shape(
      lambda: train_step.init_state(config, jax.random.key(0)))
  assert models.count_params(state["params"]["restorer"]) == params
