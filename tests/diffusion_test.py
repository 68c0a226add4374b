"""Diffusion math: closed forms against NumPy float64, draws, the sampler."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from dada_jax import diffusion
from dada_jax import objective


@pytest.fixture(scope="module")
def schedule():
  return diffusion.make_schedule("linear", 1000, 1e-6, 1e-2)


def test_tables_are_float32_casts_of_float64_math(schedule):
  betas = np.linspace(1e-6, 1e-2, 1000)
  gammas = np.cumprod(1 - betas)
  assert schedule.gammas.dtype == jnp.float32
  np.testing.assert_array_equal(schedule.gammas, gammas.astype(np.float32))
  assert np.all(np.diff(np.asarray(schedule.gammas)) < 0)  # monotone


def test_unknown_schedule_is_named():
  with pytest.raises(ValueError, match="unknown beta schedule 'sigmoid'"):
    diffusion.make_betas("sigmoid", 10)


def test_draws_ranges_and_determinism(schedule):
  draws = objective.sample_draws(jax.random.key(3), (4096, 2, 2, 3), 1000)
  t = np.asarray(draws.t)
  assert t.min() >= 1 and t.max() <= 999 and t.dtype == np.int32
  gammas = np.asarray(diffusion.continuous_gammas(schedule, draws.t, draws.u))
  lo = np.asarray(schedule.gammas)[t]       # ᾱ[t] < ᾱ[t-1]
  hi = np.asarray(schedule.gammas)[t - 1]
  assert np.all((gammas >= lo - 1e-7) & (gammas <= hi + 1e-7))
  # Each shuffle mask picks about half the batch, independently.
  swap, neg = np.asarray(draws.swap), np.asarray(draws.negswap)
  assert 0.45 < swap.mean() < 0.55 and 0.45 < neg.mean() < 0.55
  assert 0.2 < (swap & neg).mean() < 0.3
  again = objective.sample_draws(jax.random.key(3), (4096, 2, 2, 3), 1000)
  for a, b in zip(jax.tree.leaves(draws), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)


def test_q_sample_moments_and_inverse(schedule):
  y0 = jnp.full((2, 64, 64, 3), 0.5)
  gammas = jnp.array([0.9, 0.2])
  noise = jax.random.normal(jax.random.key(0), y0.shape)
  y = np.asarray(diffusion.q_sample(y0, gammas, noise))
  for i, g in enumerate((0.9, 0.2)):
    assert abs(y[i].mean() - np.sqrt(g) * 0.5) < 0.02
    assert abs(y[i].std() - np.sqrt(1 - g)) < 0.02
  t = jnp.array([10, 500])
  y_t = diffusion.q_sample(y0, schedule.gammas[t], noise)
  x0 = diffusion.predict_start_from_noise(schedule, y_t, t, noise)
  np.testing.assert_allclose(x0, y0, atol=1e-4)


def test_posterior_matches_float64_formula(schedule):
  betas = schedule.betas
  g = np.cumprod(1 - betas)
  g_prev = np.append(1.0, g[:-1])
  t = jnp.array([1, 400, 999])
  y0, yt = jnp.ones((3, 1, 1, 1)), 2 * jnp.ones((3, 1, 1, 1))
  mean, log_var = diffusion.q_posterior(schedule, y0, yt, t)
  tn = np.asarray(t)
  want = (betas[tn] * np.sqrt(g_prev[tn]) / (1 - g[tn])
          + 2 * (1 - g_prev[tn]) * np.sqrt(1 - betas[tn]) / (1 - g[tn]))
  np.testing.assert_allclose(np.asarray(mean).ravel(), want, rtol=1e-5)
  var = betas[tn] * (1 - g_prev[tn]) / (1 - g[tn])
  np.testing.assert_allclose(np.asarray(log_var).ravel(),
                             np.log(np.maximum(var, 1e-20)), rtol=1e-5)


def test_sampler_recovers_a_point_mass(schedule):
  """With the exact ε-predictor for data = a single image x0, ancestral
  sampling from noise ends at x0."""
  x0 = jnp.linspace(-0.8, 0.8, 2 * 4 * 4 * 3).reshape(2, 4, 4, 3)

  def eps_fn(y_t, gammas):
    g = gammas.reshape(-1, 1, 1, 1)
    return (y_t - jnp.sqrt(g) * x0) / jnp.sqrt(1 - g)

  small = diffusion.make_schedule("linear", 100, 1e-4, 0.2)
  out = jax.jit(lambda k: diffusion.p_sample_loop(eps_fn, small, x0.shape, k))(
      jax.random.key(0))
  np.testing.assert_allclose(out, x0, atol=1e-4)
