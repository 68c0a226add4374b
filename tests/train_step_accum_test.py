"""Gradient accumulation (optim.grad_accum_steps): K microbatches in one step."""

import functools

import jax
import numpy as np
import pytest

from conftest import compiled_step
from conftest import first_step
from conftest import random_batch
from conftest import tiny_config
from dada_jax import config_lib
from dada_jax import models
from dada_jax import sharding
from dada_jax import train_step as step_lib


def _smaller(config):
  """Batches of 4 patches of 4x4, one critic level without attention, a
  two-level restorer: without XLA's optimizations (tests/conftest.py),
  XLA:CPU runs convolutions inside the scan's loop ~50x slower than outside
  one."""
  config.data.update(batch_size=4, patch_size=4)
  config.critic.update(channel_mults=(1,), attn_res=())
  config.restorer.depth = 2
  return config


def _grads(config, k, batch, rng):
  config.optim.grad_accum_steps = k
  init = functools.partial(models.init_params, config,
                           roles=step_lib.roles(config))
  params = jax.jit(init)(jax.random.key(config.seed))
  grad_fn = jax.jit(step_lib.make_grad_fn(config))
  return jax.device_get(grad_fn(params, batch, rng, 0.1)[:2])


@pytest.mark.parametrize("objective_fields", [
    dict(negatives=False),        # no hinge: L_noise alone
    dict(triplet_margin=10.0),    # the hinge active in every microbatch
], ids=["no_negatives", "hinge_always_active"])
def test_accumulated_gradient_equals_the_whole_batch_gradient(
    objective_fields):
  """With no dropout and the hinge in one state, the mean of the microbatch
  gradients is the whole batch's: the draws are the K = 1 step's."""
  config = _smaller(tiny_config())
  config.critic.dropout = 0.0
  config.objective.update(objective_fields)
  batch = random_batch(config)
  rng = jax.random.key(3)
  g1, t1 = _grads(config, 1, batch, rng)
  g2, t2 = _grads(config, 2, batch, rng)
  for name in t1._fields:
    np.testing.assert_allclose(getattr(t2, name), getattr(t1, name),
                               rtol=1e-5, atol=1e-7, err_msg=name)
  if objective_fields.get("negatives", True):
    assert t1.triplet > 0
  for role in g1:
    # Float32 summation order: relative to the role's largest gradient.
    scale = max(np.abs(x).max() for x in jax.tree.leaves(g1[role]))
    assert scale > 0
    for a, b in zip(jax.tree.leaves(g1[role]), jax.tree.leaves(g2[role])):
      np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-5 * scale,
                                 err_msg=role)


def test_vanilla_step_on_eight_devices_equals_one_batch_step():
  """The whole sharded step: each microbatch of 8 spread over 8 devices."""
  config = tiny_config("vanilla", batch_size=16)
  config.optim.eps = 1e-3  # see train_step_test.test_eight_devices_equal_one
  batch = random_batch(config)
  mesh = sharding.make_mesh(config)
  results = []
  for k in (1, 2):
    config.optim.grad_accum_steps = k
    results.append(first_step(config, mesh, batch))
  (s1, m1), (s2, m2) = results
  assert set(m1) == set(m2)
  for key in m1:
    np.testing.assert_allclose(m2[key], m1[key], rtol=1e-5, atol=1e-7,
                               err_msg=key)
  assert int(s2["step"]) == 1 and m2["grad_norm/restorer"] > 0
  # Adam's first moment after one step is 0.1·gradient: the state compares
  # the gradients themselves, not only the (nearly sign-like) first update.
  for a, b in zip(jax.tree.leaves(s1), jax.tree.leaves(s2)):
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)


def test_microbatches_are_strided_rows():
  x = np.arange(12)
  np.testing.assert_array_equal(step_lib.split_microbatches(x, 3),
                                [[0, 3, 6, 9], [1, 4, 7, 10], [2, 5, 8, 11]])


@pytest.mark.parametrize("batch_size,k,message", [
    (8, 3, "config.optim.grad_accum_steps=3: config.data.batch_size=8 does "
     "not split into 3 equal microbatches each divisible by the 8 devices of "
     "the data axis; batch_size must be a multiple of 3 x 8 = 24"),
    (8, 2, "config.optim.grad_accum_steps=2: config.data.batch_size=8 does "
     "not split into 2 equal microbatches each divisible by the 8 devices of "
     "the data axis; batch_size must be a multiple of 2 x 8 = 16"),
    (8, 0, "config.optim.grad_accum_steps=0: must be >= 1"),
])
def test_bad_grad_accum_steps_is_one_config_error(batch_size, k, message):
  config = tiny_config(batch_size=batch_size)
  config.optim.grad_accum_steps = k
  with pytest.raises(config_lib.ConfigError) as e:
    config_lib.validate(config, num_devices=8)
  assert str(e.value) == message
  config.data.batch_size = 48
  config.optim.grad_accum_steps = max(k, 1)
  config_lib.validate(config, num_devices=8)


def test_accumulated_dda_step_is_deterministic():
  """Dropout on, the hinge as configured: two runs from one seed agree
  bit for bit, and the step key changes the result."""
  config = _smaller(tiny_config())
  config.optim.grad_accum_steps = 2
  mesh = sharding.make_mesh(config, jax.devices()[:2])
  state, step, state_sh, batch_sh = compiled_step(config, mesh)
  initial = jax.device_get(state)
  batch = random_batch(config)
  runs = []
  with jax.set_mesh(mesh):
    for key in (5, 5, 6):
      state = jax.device_put(initial, state_sh)
      state, metrics = step(state, sharding.put_batch(batch, batch_sh),
                            jax.random.key(key))
      runs.append(jax.device_get((state, metrics)))
  assert int(runs[0][0]["step"]) == 1
  for a, b in zip(jax.tree.leaves(runs[0]), jax.tree.leaves(runs[1])):
    np.testing.assert_array_equal(a, b)
  assert runs[0][1]["loss/total"] != runs[2][1]["loss/total"]
