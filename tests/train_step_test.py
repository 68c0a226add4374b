"""The sharded train step: mesh invariance, shardings, one compile, learning."""

import jax
import numpy as np
import pytest

from conftest import compiled_step
from conftest import first_step
from conftest import random_batch
from conftest import tiny_config
from dada_jax import sharding
from dada_jax import train_step as step_lib


@pytest.mark.parametrize("mode", ["dda", "vanilla"])
def test_eight_devices_equal_one(mode):
  config = tiny_config(mode)
  # Biases in front of a one-channel-per-group GroupNorm get exactly-zero
  # gradients, i.e. round-off that differs with the device count; Adam's
  # default eps would turn it into ±lr steps. A larger eps keeps the
  # comparison about the computation, not about amplified round-off.
  config.optim.eps = 1e-3
  batch = random_batch(config)
  results = []
  for devices in (jax.devices()[:1], jax.devices()):
    results.append(first_step(config, sharding.make_mesh(config, devices),
                              batch))
  (s1, m1), (s8, m8) = results
  assert len(jax.devices()) == 8
  for k in m1:
    np.testing.assert_allclose(m8[k], m1[k], rtol=2e-5, atol=1e-7, err_msg=k)
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s8)):
    np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6)
  assert m1["loss/total"] > 0
  if mode == "vanilla":
    assert set(s1["params"]) == {"restorer"}
  else:
    assert m1["loss/diffusion"] > 0 and m1["grad_norm/critic"] > 0


@pytest.mark.parametrize("strategy", ["replicate", "fsdp"])
def test_output_shardings_and_a_single_compile(strategy):
  config = tiny_config()
  config.sharding = strategy
  mesh = sharding.make_mesh(config)
  state, step, state_sh, batch_sh = compiled_step(config, mesh)
  traces = []
  with jax.set_mesh(mesh):
    for i in range(3):
      state, metrics = step(state, sharding.put_batch(random_batch(config, i),
                                                      batch_sh),
                            jax.random.key(0))
      traces.append(step._cache_size())  # pylint: disable=protected-access
  assert traces == [1, 1, 1]
  for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_sh)):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim)
  for v in metrics.values():
    assert v.sharding.is_fully_replicated
  assert int(state["step"]) == 3
  kernel = state["params"]["critic"]["middle_block_0"]["in_layers_2"]["kernel"]
  per_device = kernel.addressable_shards[0].data.size
  assert per_device == (kernel.size // 8 if strategy == "fsdp"
                        else kernel.size)


def test_alpha_ramps_with_steps():
  config = tiny_config()
  config.objective.ramp_steps = 300
  alphas = [float(step_lib.alpha_at(config, s)) for s in (0, 149, 299, 900)]
  np.testing.assert_allclose(alphas[0], 0.2 * np.tanh(2.5 / 300), rtol=1e-5)
  np.testing.assert_allclose(alphas[1], 0.2 * np.tanh(1.25), rtol=1e-5)
  np.testing.assert_allclose(alphas[2], 0.2 * np.tanh(2.5), rtol=1e-6)
  assert alphas[2] == alphas[3]


def test_alpha_per_epoch_matches_the_reference_schedule():
  """Reference: α = 0.2·tanh(2.5·min(epoch/300, 1)), epochs from 1, constant
  within an epoch of E steps."""
  config = tiny_config()
  config.objective.steps_per_epoch = 7
  config.objective.ramp_steps = 300 * 7
  for step in (0, 6, 7, 700, 300 * 7 - 1, 400 * 7):
    epoch = step // 7 + 1
    want = 0.2 * (2 / (1 + np.exp(-5 * min(epoch / 300, 1))) - 1)
    np.testing.assert_allclose(float(step_lib.alpha_at(config, step)), want,
                               rtol=1e-5)


def test_ema_follows_params():
  config = tiny_config()
  config.optim.ema_decay = 0.5
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  state, step, _, batch_sh = compiled_step(config, mesh)
  before = jax.device_get(state)
  with jax.set_mesh(mesh):
    after, _ = step(state, sharding.put_batch(random_batch(config), batch_sh),
                    jax.random.key(0))
  after = jax.device_get(after)
  for e0, p1, e1 in zip(jax.tree.leaves(before["ema"]),
                        jax.tree.leaves(after["params"]),
                        jax.tree.leaves(after["ema"])):
    np.testing.assert_allclose(e1, 0.5 * e0 + 0.5 * p1, rtol=1e-6, atol=1e-7)


def test_tiny_model_overfits_one_batch():
  """The DDA objective trains: the pixel loss on one batch falls 10x."""
  config = tiny_config()
  config.restorer.last_init = "zeros"
  config.optim.lr = 3e-3
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  state, step, _, batch_sh = compiled_step(config, mesh)
  rng = np.random.default_rng(0)
  gt = rng.uniform(0.2, 0.8, (8, 1, 1, 3)).astype(np.float32)
  gt = np.broadcast_to(gt, (8, 8, 8, 3)).copy()
  yy, xx = np.mgrid[0:8, 0:8]
  stripes = 0.2 * np.sin(xx + 2 * yy)[None, ..., None].astype(np.float32)
  batch = sharding.put_batch({"syn_gt": gt, "syn_lq": gt + stripes,
                              "real_lq": gt - stripes, "ref_clean": gt},
                             batch_sh)
  losses = []
  with jax.set_mesh(mesh):
    for _ in range(100):
      state, metrics = step(state, batch, jax.random.key(0))
      losses.append(float(metrics["loss/pixel"]))
  assert losses[-1] < losses[0] / 10, (losses[0], losses[-1])
  assert np.isfinite(float(metrics["loss/diffusion"]))


def test_frozen_role_keeps_its_params_while_the_other_learns():
  config = tiny_config()
  config.optim.update(frozen=("restorer",), lr=1e-2)
  mesh = sharding.make_mesh(config, jax.devices()[:1])
  state, step, _, batch_sh = compiled_step(config, mesh)
  before = jax.device_get(state)
  with jax.set_mesh(mesh):
    for i in range(2):
      state, metrics = step(state, sharding.put_batch(random_batch(config),
                                                      batch_sh),
                            jax.random.key(i))
  after = jax.device_get(state)
  assert float(metrics["grad_norm/restorer"]) > 0  # it had gradients
  for a, b, e in zip(jax.tree.leaves(before["params"]["restorer"]),
                     jax.tree.leaves(after["params"]["restorer"]),
                     jax.tree.leaves(after["ema"]["restorer"])):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_allclose(e, a, rtol=1e-6, atol=1e-7)  # EMA rounding
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(before["params"]["critic"]),
                 jax.tree.leaves(after["params"]["critic"])))
