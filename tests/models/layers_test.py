"""The hand-written gradients in dada_jax.models.layers equal autodiff's."""

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dada_jax.models import group_norm
from dada_jax.models import layers


def _plain_group_norm_act(x, scale, bias, film_scale, film_shift, groups,
                          eps, silu):
  """The formula `group_norm_act` computes, left to autodiff."""
  g = x.reshape(x.shape[0], -1, groups, x.shape[-1] // groups)
  mean = g.mean(axis=(1, 3), keepdims=True)
  var = jnp.square(g - mean).mean(axis=(1, 3), keepdims=True)
  y = ((g - mean) / jnp.sqrt(var + eps)).reshape(x.shape) * scale + bias
  y = y * (1 + film_scale) + film_shift
  return jax.nn.silu(y) if silu else y


def _rel(a, b):
  return float(jnp.abs(a - b).max() / jnp.abs(b).max())


@pytest.mark.parametrize("shape,groups,film,silu", [
    ((2, 6, 5, 64), 32, True, True),    # a ResBlock's out_layers_0
    ((2, 6, 5, 32), 32, False, True),   # one channel per group (out_0)
    ((3, 20, 64), 16, False, False),    # attention's norm, [B, T, C]
])
def test_group_norm_act_gradient_equals_autodiff(shape, groups, film, silu):
  k = jax.random.split(jax.random.key(0), 6)
  c, per_sample = shape[-1], (shape[0],) + (1,) * (len(shape) - 2) + (shape[-1],)
  x = 3 * jax.random.normal(k[0], shape) + 1
  scale = 1 + 0.3 * jax.random.normal(k[1], (c,))
  bias = 0.3 * jax.random.normal(k[2], (c,))
  film_scale, film_shift = (
      (0.3 * jax.random.normal(k[3], per_sample),
       0.3 * jax.random.normal(k[4], per_sample)) if film
      else (jnp.zeros(per_sample),) * 2)
  dy = jax.random.normal(k[5], shape)
  args = (x, scale, bias, film_scale, film_shift)
  ours = jax.vjp(lambda *a: group_norm.group_norm_act(*a, groups, 1e-5, silu),
                 *args)
  plain = jax.vjp(
      lambda *a: _plain_group_norm_act(*a, groups, 1e-5, silu), *args)
  assert _rel(ours[0], plain[0]) < 1e-5
  for name, a, b in zip(("x", "scale", "bias", "film_scale", "film_shift"),
                        ours[1](dy), plain[1](dy)):
    if film or name not in ("film_scale", "film_shift"):
      assert _rel(a, b) < 1e-5, name


def test_group_norm_act_keeps_bfloat16_activations():
  x = jax.random.normal(jax.random.key(0), (2, 4, 4, 64), jnp.bfloat16)
  zero = jnp.zeros((2, 1, 1, 64), jnp.bfloat16)
  f = lambda x: group_norm.group_norm_act(x, jnp.ones(64), jnp.zeros(64), zero,
                                      zero, 32, 1e-5, True)
  y, pull = jax.vjp(f, x)
  assert y.dtype == pull(jnp.ones_like(y))[0].dtype == jnp.bfloat16


@pytest.mark.parametrize("make,ours,shape", [
    (lambda: nn.Conv(8, (3, 3), padding=((1, 1), (1, 1))),
     lambda: layers.Conv(8, (3, 3), padding=1), (2, 9, 7, 5)),
    (lambda: nn.Conv(8, (3, 3), strides=(2, 2), padding=((1, 1), (1, 1))),
     lambda: layers.Conv(8, (3, 3), strides=2, padding=1), (2, 9, 7, 5)),
    (lambda: nn.Conv(6, (1,)), lambda: layers.Conv(6, (1,)), (2, 11, 4)),
])
def test_conv_is_nn_conv_with_the_same_parameters(make, ours, shape):
  """Same parameter tree, output and gradients as flax's nn.Conv."""
  x = jax.random.normal(jax.random.key(0), shape)
  params = jax.tree.map(
      lambda p: p + 0.1, make().init(jax.random.key(1), x))  # bias != 0
  assert (jax.tree.map(jnp.shape, params)
          == jax.tree.map(jnp.shape, ours().init(jax.random.key(1), x)))
  loss = lambda module: lambda p, x: jnp.sum(jnp.sin(module.apply(p, x)))
  ref_grads = jax.grad(loss(make()), argnums=(0, 1))(params, x)
  our_grads = jax.grad(loss(ours()), argnums=(0, 1))(params, x)
  assert _rel(ours().apply(params, x), make().apply(params, x)) < 1e-6
  for a, b in zip(jax.tree.leaves(our_grads), jax.tree.leaves(ref_grads)):
    assert _rel(a, b) < 1e-5


def test_bias_gradient_sums_over_every_position():
  dy = np.random.default_rng(0).normal(size=(3, 40, 33, 7)).astype(np.float32)
  _, pull = jax.vjp(layers.add_bias, jnp.zeros_like(dy), jnp.zeros(7))
  d_y, d_bias = pull(jnp.asarray(dy))
  np.testing.assert_array_equal(d_y, dy)
  np.testing.assert_allclose(d_bias, dy.astype(np.float64).sum((0, 1, 2)),
                             rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dilation,dtype", [(1, jnp.float32), (2, jnp.float32),
                                            (1, jnp.bfloat16)])
def test_depthwise_conv_on_cpu_is_the_grouped_convolution(dilation, dtype):
  """The CPU form (k² shifted products) equals XLA's grouped convolution,
  values and gradients, at odd sizes; both run here, the first through
  `depthwise_conv`."""
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal((2, 9, 13, 6)), dtype)
  kernel = jnp.asarray(rng.standard_normal((3, 3, 1, 6)), dtype)
  grouped = functools.partial(
      layers._depthwise_grouped, dilation=dilation)  # pylint: disable=protected-access
  assert jax.default_backend() == "cpu"
  tol = 1e-5 if dtype == jnp.float32 else 2e-2
  for fn in (lambda x, k: layers.depthwise_conv(x, k, dilation), grouped):
    assert fn(x, kernel).dtype == dtype
  ours = jax.jit(lambda x, k: layers.depthwise_conv(x, k, dilation))
  np.testing.assert_allclose(np.float32(ours(x, kernel)),
                             np.float32(grouped(x, kernel)), rtol=tol,
                             atol=tol)
  if dtype == jnp.float32:
    loss = lambda f: lambda x, k: jnp.sum(jnp.sin(f(x, k)))
    for a, b in zip(jax.grad(loss(ours), (0, 1))(x, kernel),
                    jax.grad(loss(grouped), (0, 1))(x, kernel)):
      np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
