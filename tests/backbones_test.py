"""Networks other than the paper's, picked by config.restorer.name /
config.critic.name: they train, resume, restore and convert through the same
code as the paper's (their exactness: tests/models/<name>_test.py)."""

import math
import os
import shutil

import jax
import numpy as np
import pytest

from conftest import REPO
from conftest import cached_config
from conftest import random_batch
from conftest import restored_params
from conftest import train_config
from dada_jax import backbones
from dada_jax import checkpoint
from dada_jax import config_lib
from dada_jax import faults
from dada_jax import models
from dada_jax import predict
from dada_jax import sharding
from dada_jax import train
from dada_jax import train_step
from dada_jax.torch_io import convert

RESTORMER_SR3 = str(REPO / "configs/restormer.py") + ":runlocal,critic=sr3"
UFORMER = str(REPO / "configs/uformer.py") + ":runlocal"
DNCNN = str(REPO / "configs/dncnn.py") + ":runlocal"


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
    (str(REPO / "configs/nafnet.py") + ":runlocal", 32, 8),
    (DNCNN, 32, 8)])
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


def _train_twice(spec, tmp_path, use_ema=False):
  """Trains `spec` 2 steps (checkpoints at 1 and 2), then resumes a copy of
  the workdir without step 2 from step 1 to 2; asserts equal losses at step
  2 and returns both runs' restored step-2 weights."""
  def run(workdir):
    c = train_config(2, spec=spec, one_device=True, ckpt_every=1)
    c.data.patch_size = math.lcm(16, backbones.patch_multiple(c))
    return train.train_and_evaluate(c, str(workdir))
  losses = lambda m: {k: v for k, v in m.items() if k.startswith("loss/")}
  full, resumed = tmp_path / "full", tmp_path / "resumed"
  last = run(full)
  assert last and all(np.isfinite(v) for v in losses(last).values())
  shutil.copytree(full, resumed)
  shutil.rmtree(os.path.join(checkpoint.checkpoint_dir(str(resumed)), "2"))
  assert losses(run(resumed)) == losses(last)
  return (restored_params(full, 2, use_ema=use_ema),
          restored_params(resumed, 2, use_ema=use_ema))


@pytest.mark.parametrize("spec", [
    RESTORMER_SR3, UFORMER, str(REPO / "configs/swinir.py") + ":runlocal",
    str(REPO / "configs/nafnet.py") + ":runlocal"],
    ids=["restormer_sr3", "uformer", "swinir", "nafnet"])
def test_dda_trains_and_resumes_exactly(tmp_path, spec):
  """`train` with each network's runlocal config: 2 steps in one go == the
  same run resumed from its step-1 checkpoint (params bitwise; DnCNN:
  below)."""
  full, resumed = _train_twice(spec, tmp_path)
  jax.tree.map(np.testing.assert_array_equal, full, resumed)


@pytest.mark.parametrize("config_file", [
    "restormer.py", "uformer.py", "swinir.py", "nafnet.py", "dncnn.py"])
def test_fsdp_rules_place_every_network(config_file):
  """FSDP over 8 devices at each network's default size: every leaf of the
  train state is split over `data` along a dimension 8 divides, or
  replicated; no restorer weight matrix that 8 divides stays whole."""
  config = config_lib.load_config(str(REPO / "configs" / config_file),
                                  ["sharding=fsdp"])
  shape = jax.eval_shape(
      lambda: train_step.init_state(config, jax.random.key(0)))
  mesh = sharding.make_mesh(config)
  placed = sharding.state_shardings(shape, mesh, "fsdp")
  for leaf, where in zip(jax.tree.leaves(shape), jax.tree.leaves(placed)):
    split = [d for d, axis in enumerate(where.spec) if axis is not None]
    assert len(split) <= 1
    if split:
      assert leaf.shape[split[0]] % 8 == 0
    elif leaf.ndim >= 2:
      assert all(n % 8 for n in leaf.shape), leaf.shape


def test_dncnn_statistics_train_checkpoint_and_resume(tmp_path):
  """DnCNN's BatchNorm statistics: two updates a step (the syn and the real
  call), in the checkpoint, restored exactly on resume, and what `restore`
  normalises with."""
  full, resumed = _train_twice(DNCNN, tmp_path, use_ema=True)
  stats = full["restorer"][models.STATS]["dncnn_3"]
  assert int(stats["num_batches_tracked"]) == 4
  assert not np.allclose(stats["mean"], 0)
  jax.tree.map(np.testing.assert_array_equal, full, resumed)
  config = cached_config(DNCNN)
  image = np.random.default_rng(0).uniform(0, 1, (9, 11, 3)).astype(
      np.float32)
  restored = predict.restore_array(config, full["restorer"], image, tile=0)
  expected = image + models.make_restorer(config).apply(
      models.as_variables(full["restorer"]), image[None])[0]
  np.testing.assert_allclose(restored, expected, rtol=1e-6, atol=1e-6)


def test_dncnn_accumulation_updates_statistics_per_microbatch():
  """grad_accum_steps=2: the statistics pass through both microbatches
  (2 updates in vanilla mode, against 1), and differ from one call on the
  whole batch."""
  def stats_after(k):
    c = train_config(1, spec=DNCNN)
    c.objective.mode = "vanilla"  # one call a microbatch; no critic to build
    c.optim.grad_accum_steps = k
    state = train_step.init_state(c, jax.random.key(0))
    grad_fn = jax.jit(train_step.make_grad_fn(c))
    return jax.device_get(grad_fn(state["params"], random_batch(c),
                                  jax.random.key(1), 0.1,
                                  state["batch_stats"])[2])["restorer"]
  one, two = stats_after(1)["dncnn_3"], stats_after(2)["dncnn_3"]
  assert int(one["num_batches_tracked"]) == 1
  assert int(two["num_batches_tracked"]) == 2
  assert not np.allclose(one["var"], two["var"])


def test_dncnn_step_normalises_over_the_global_batch():
  """One step with the batch split over 8 devices (FSDP) equals the step on
  one device: BatchNorm's statistics are the whole batch's (per-device
  statistics of one image each would change the loss and the running
  statistics entirely; the order of the sums moves metrics by ~3e-5).
  Params after Adam's first step (±lr, lr 1e-4, where a gradient is not
  round-off) to 1e-5."""
  def one_step(mesh_size, strategy):
    c = train_config(1, spec=DNCNN)
    c.mesh, c.sharding = (("data", mesh_size),), strategy
    mesh = sharding.make_mesh(c, jax.devices()[:mesh_size])
    state, shardings = train.init_state(c, mesh, jax.random.key(0))
    logged = {}
    state = train.run_steps(
        c, mesh, state, shardings, iter([random_batch(c)]), jax.random.key(1),
        stop=1, on_step=lambda _, __, m: logged.update(jax.device_get(m)))
    return jax.device_get(state["batch_stats"]), logged, jax.device_get(
        state["params"])
  (stats1, metrics1, params1), (stats8, metrics8, params8) = (
      one_step(1, "replicate"), one_step(8, "fsdp"))
  close = lambda rtol, atol: lambda a, b: np.testing.assert_allclose(
      a, b, rtol=rtol, atol=atol)
  jax.tree.map(close(1e-5, 1e-7), stats1, stats8)
  jax.tree.map(close(1e-4, 1e-7), metrics1, metrics8)
  jax.tree.map(close(0, 1e-5), params1, params8)


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
  torch = pytest.importorskip(
      "torch", reason="torch (the [test] extra) runs the torch cross-checks")
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
    ("swinir.py", 11_504_163), ("nafnet.py", 29_159_715),
    ("dncnn.py", 558_336)])
def test_train_state_initialises_at_default_sizes(config_file, params):
  """The trainer's init at each network's default size (Uformer needs inputs
  of 128 there), with the reference's parameter counts."""
  config = config_lib.load_config(str(REPO / "configs" / config_file))
  state = jax.eval_shape(
      lambda: train_step.init_state(config, jax.random.key(0)))
  assert models.count_params(state["params"]["restorer"]) == params
