"""Model structure: parameter counts, the reference's full key listing, init."""

import dataclasses
import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import FIXTURES, REPO
from conftest import cached_config
from dada_jax import backbones
from dada_jax import config_lib
from dada_jax.torch_io import convert
from dada_jax import models


@pytest.fixture(scope="module")
def paper():
  return cached_config(str(REPO / "configs/denoise.py"))


def test_paper_parameter_counts(paper):
  shapes = convert.params_shape(paper)
  assert models.count_params(shapes["restorer"]) == 8_559_171
  assert models.count_params(shapes["critic"]) == 62_643_075


def test_full_reference_key_listing_maps_to_our_tree(paper):
  """Every key of the paper config's Network.state_dict() has a place in our
  params with the right shape, and nothing is left over either way."""
  listing = json.loads((FIXTURES / "noise_da_full_state_keys.json").read_text())
  entries = listing["keys"]
  assert len(entries) == listing["num_keys"] == 368
  state = {e["key"]: np.zeros(e["shape"], np.dtype(e["dtype"]))
           for e in entries if not e["is_buffer"]}
  converted = jax.eval_shape(
      lambda: convert.params_from_state_dict(state, paper,
                                                   source="listing"))
  expected = convert.params_shape(paper)
  assert jax.tree.structure(converted) == jax.tree.structure(expected)
  for a, b in zip(jax.tree.leaves(converted), jax.tree.leaves(expected)):
    assert a.shape == b.shape
  # And back: our export names exactly the listed keys, shapes and dtypes.
  exported = convert.state_dict_from_params(
      jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), expected), paper)
  assert {k: (list(v.shape), str(v.dtype)) for k, v in exported.items()} == {
      e["key"]: (e["shape"], e["dtype"]) for e in entries}


def test_only_middle_attention_at_paper_config(paper):
  """attn_res=[16] never matches a downsample rate of 1..8 (as in the ref)."""
  critic = convert.params_shape(paper)["critic"]
  attn = sorted(k for k, v in critic.items() if "qkv" in v)
  assert attn == ["middle_block_1"]


def test_model_config_blocks_are_module_attributes():
  """config.restorer / config.critic build their modules field for field and
  hold no run switches (those live elsewhere, e.g. train.remat), whichever
  network the block names."""
  c = config_lib.base_config("denoise")
  names = {"restorer": [backbones.DEFAULT_RESTORER, *backbones.RESTORERS],
           "critic": [backbones.DEFAULT_CRITIC, *backbones.CRITICS]}
  for role, make in (("restorer", models.make_restorer),
                     ("critic", models.make_critic)):
    for name in names[role]:
      c[role].name = name
      module = make(c)
      block = (c[role] if name in (backbones.DEFAULT_RESTORER,
                                   backbones.DEFAULT_CRITIC) else c[role][name])
      fields = {k: v for k, v in block.items()
                if k != "name" and not isinstance(v, type(c))}
      attributes = {f.name for f in dataclasses.fields(module)}
      assert set(fields) <= attributes - {"dtype", "parent", "name"}, name
      for key, value in fields.items():
        assert getattr(module, key) == value, f"{role}.{name}.{key}"
    c[role].name = names[role][0]
  # A block replaced by one holding lists (as JSON gives) still builds a
  # hashable module.
  c.critic = dict(c.critic.to_dict(), channel_mults=[1, 2], attn_res=[2])
  critic = models.make_critic(c)
  assert critic.channel_mults == (1, 2) and critic.attn_res == (2,)
  hash(critic)


def test_restorer_output_shape_and_residual_init():
  c = cached_config()  # RUNLOCAL: the test-size networks
  x = jax.random.uniform(jax.random.key(1), (2, 24, 40, 3))
  r = models.make_restorer(c)
  kaiming = jax.jit(r.apply)(jax.jit(r.init)(jax.random.key(0), x), x)
  assert kaiming.shape == x.shape and kaiming.dtype == jnp.float32
  assert float(jnp.std(kaiming)) > 0.1  # the paper's init: a large residual
  c.restorer.last_init = "zeros"
  r = models.make_restorer(c)
  zero = jax.jit(r.apply)(jax.jit(r.init)(jax.random.key(0), x), x)
  assert float(jnp.abs(zero).max()) == 0


def test_critic_zero_init_outputs_and_dropout():
  c = cached_config()  # RUNLOCAL: the test-size networks
  c.critic.zero_init_outputs = True
  critic = models.make_critic(c)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 9))
  g = jnp.array([0.3, 0.9])
  variables = jax.jit(critic.init)(jax.random.key(1), x, g)
  assert float(jnp.abs(jax.jit(critic.apply)(variables, x, g)).max()) == 0
  # With random weights, dropout is active in training and off in eval.
  c.critic.zero_init_outputs = False
  critic = models.make_critic(c)
  variables = jax.jit(critic.init)(jax.random.key(1), x, g)
  apply = jax.jit(critic.apply, static_argnames="train")
  ev1 = apply(variables, x, g)
  ev2 = apply(variables, x, g, train=False)
  tr = apply(variables, x, g, train=True, rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(ev1, ev2)
  assert float(jnp.abs(tr - ev1).max()) > 1e-3


def test_bfloat16_compute_keeps_float32_params():
  c = cached_config()  # RUNLOCAL: the test-size networks
  c.dtype = "bfloat16"
  params = jax.jit(lambda k: models.init_params(c, k))(jax.random.key(0))
  assert {p.dtype for p in jax.tree.leaves(params)} == {jnp.dtype("float32")}
  x = jnp.ones((1, 16, 16, 3))
  out = jax.jit(models.make_restorer(c).apply)({"params": params["restorer"]},
                                              x)
  assert out.dtype == jnp.float32
