"""GroupNorm, FiLM scale-shift and SiLU as one op with its own gradient.

The critic normalises every ResBlock's input and middle (then FiLM and SiLU),
its attention input and its output. Autodiff of that chain keeps every
intermediate and reduces each separately; `group_norm_act` saves only the
input and the group statistics, and its backward makes one reduction pass
(two per-channel sums) and one elementwise pass.
"""

from __future__ import annotations

import functools

import flax.linen as nn
import jax
import jax.numpy as jnp

from dada_jax.models import layers


def _grouped(x: jax.Array, num_groups: int) -> jax.Array:
  """[B, ..., C] -> [B, P, G, C // G] (P: every position)."""
  return x.reshape(x.shape[0], -1, num_groups, x.shape[-1] // num_groups)


def _statistics(x, num_groups, epsilon):
  """Mean and 1/std ([B, 1, G, 1], float32) per sample and group; the
  variance in two passes, as torch computes it."""
  g = _grouped(x.astype(jnp.float32), num_groups)
  mean = g.mean(axis=(1, 3), keepdims=True)
  return mean, jax.lax.rsqrt(
      jnp.square(g - mean).mean(axis=(1, 3), keepdims=True) + epsilon)


def _normalised(x, mean, rstd):
  """x̂ = (x - mean)·(1/std), float32, x's shape."""
  g = _grouped(x.astype(jnp.float32), mean.shape[2])
  return ((g - mean) * rstd).reshape(x.shape)


def _film(xhat, scale, bias, film_scale, film_shift):
  return (xhat * scale + bias) * (1 + film_scale) + film_shift


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6, 7))
def group_norm_act(x, scale, bias, film_scale, film_shift, num_groups: int,
                   epsilon: float, silu: bool):
  """silu?((GroupNorm(x)·scale + bias)·(1 + film_scale) + film_shift).

  Forward and backward on [6, 128, 128, 128] take 89 ms on 2 CPU cores,
  autodiff of the same formula 300 ms (launch/BENCHMARKS.md).

  Args:
    x: [B, ..., C], any float dtype; statistics and arithmetic in float32.
    scale, bias: [C] float32, the norm's affine parameters.
    film_scale, film_shift: [B, 1.., C] (x's rank; zeros: no FiLM).
    num_groups, epsilon: GroupNorm's; silu: apply SiLU last.

  Returns:
    x's shape and dtype.
  """
  return _group_norm_act_fwd(x, scale, bias, film_scale, film_shift,
                             num_groups, epsilon, silu)[0]


def _named(fn):
  """Runs fn under the op-name scope `group_norm` (bench --profile classes
  the ops under it as normalisation)."""
  @functools.wraps(fn)
  def wrapped(*args):
    with jax.named_scope("group_norm"):
      return fn(*args)
  return wrapped


@_named
def _group_norm_act_fwd(x, scale, bias, film_scale, film_shift, num_groups,
                        epsilon, silu):
  mean, rstd = _statistics(x, num_groups, epsilon)
  xhat = _normalised(x, mean, rstd)
  y = _film(xhat, scale, bias, film_scale, film_shift)
  if silu:
    y = jax.nn.silu(y)
  return y.astype(x.dtype), (x, mean, rstd, scale, bias, film_scale,
                             film_shift)


@_named
def _group_norm_act_bwd(num_groups, epsilon, silu, saved, dy):
  del epsilon  # 1/std is saved
  x, mean, rstd, scale, bias, film_scale, film_shift = saved
  b, c = x.shape[0], x.shape[-1]
  cg = c // num_groups
  xhat = _normalised(x, mean, rstd)
  du = dy.astype(jnp.float32)
  if silu:
    u = _film(xhat, scale, bias, film_scale, film_shift)
    sig = jax.nn.sigmoid(u)
    du = du * sig * (1 + u * (1 - sig))
  # Everything else follows from two per-(sample, channel) sums over
  # positions.
  positions = tuple(range(1, x.ndim - 1))
  sum_du, sum_du_xhat = layers.sum_rows_first((du, du * xhat),
                                              (0, x.ndim - 1))
  one_plus = 1 + film_scale.astype(jnp.float32)
  d_shift = sum_du
  d_film = scale * sum_du_xhat + bias * sum_du
  d_bias = (one_plus * sum_du).sum(axis=(0,) + positions)
  d_scale = (one_plus * sum_du_xhat).sum(axis=(0,) + positions)
  # d x̂ = du·k; dx = 1/std·(d x̂ - mean_g(d x̂) - x̂·mean_g(d x̂·x̂)).
  k = jnp.broadcast_to(one_plus * scale, sum_du.shape)
  per_group = lambda t: t.reshape(b, num_groups, cg).sum(-1, keepdims=True)
  n = x.size // (b * num_groups)
  rstd_g = rstd.reshape(b, num_groups, 1)
  chan = lambda t: jnp.broadcast_to(t, (b, num_groups, cg)).reshape(
      sum_du.shape)
  a = chan(k.reshape(b, num_groups, cg) * rstd_g)
  m1 = chan(rstd_g * per_group(k * sum_du) / n)
  m2 = chan(rstd_g * per_group(k * sum_du_xhat) / n)
  dx = du * a - m1 - xhat * m2
  return (dx.astype(x.dtype), d_scale, d_bias,
          d_film.astype(film_scale.dtype), d_shift.astype(film_shift.dtype))


group_norm_act.defvjp(_group_norm_act_fwd, _group_norm_act_bwd)


class GroupNorm32(nn.Module):
  """GroupNorm over 32 groups, statistics computed in float32 (torch eps 1e-5),
  optionally followed by FiLM and SiLU (see `group_norm_act`).

  The output is cast back to the input dtype, as the reference's GroupNorm32;
  FiLM and SiLU run in float32 before that cast.
  """
  num_groups: int = 32
  epsilon: float = 1e-5

  @nn.compact
  def __call__(self, x, film=None, silu: bool = False):
    """x [B, ..., C]; film: optional (scale, shift), broadcastable to x."""
    c = x.shape[-1]
    if c % self.num_groups:
      raise ValueError(f"GroupNorm32: {c} channels are not divisible by "
                       f"{self.num_groups} groups")
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    per_sample = (x.shape[0],) + (1,) * (x.ndim - 2) + (c,)
    if film is None:
      film = (jnp.zeros(per_sample, jnp.float32),) * 2
    film = [jnp.broadcast_to(f, per_sample) for f in film]
    return group_norm_act(x, scale, bias, *film, self.num_groups,
                          self.epsilon, silu)
