"""The gradient-alignment probe: its split of the diffusion gradient is exact,
and its oracle is supervision on the real pair."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from conftest import DEMO_RUNLOCAL
from conftest import cached_config
from dada_jax.sim2real import alignment
from dada_jax import models
from dada_jax import objective


@pytest.fixture(scope="module")
def setup():
  c = cached_config(DEMO_RUNLOCAL)
  params = models.init_params(c, jax.random.key(0))
  rng = np.random.default_rng(0)
  shape = (2, 16, 16, 3)
  u = lambda: rng.uniform(0, 1, shape).astype(np.float32)
  syn_gt, real_gt = u(), u()
  batch = {"syn_gt": syn_gt, "syn_lq": syn_gt + 0.1 * (u() - 0.5),
           "real_gt": real_gt, "real_lq": real_gt + 0.2 * (u() - 0.5)}
  return c, params, batch


def _cos(a, b, biases=True):
  def flat(t):
    leaves = jax.tree_util.tree_flatten_with_path(t)[0]
    return np.concatenate([np.ravel(x) for path, x in leaves
                           if biases or path[-1].key != "bias"])
  a, b = flat(a), flat(b)
  return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def test_split_matches_the_objectives_gradient(setup):
  c, params, batch = setup
  rng = jax.random.key(3)
  got = alignment.make_alignment_fn(c)(params, batch, rng)
  # Independently: the objective's restorer gradient at α = 1 minus its pixel
  # part is the diffusion term's, and the oracle is Charbonnier on real pairs.
  draws = objective.sample_draws(rng, batch["syn_gt"].shape,
                                 c.diffusion.num_timesteps)
  loss = objective.make_objective(c, "dda")
  total = jax.grad(lambda p: loss(p, batch, rng, 1.0, draws=draws,
                                  train=False)[0])(params)["restorer"]
  pixel = jax.grad(lambda p: loss(p, batch, rng, 0.0, draws=draws,
                                  train=False)[0])(params)["restorer"]
  diff = jax.tree.map(jnp.subtract, total, pixel)
  restorer = models.make_restorer(c)
  oracle = jax.grad(lambda p: objective.charbonnier(
      batch["real_gt"], batch["real_lq"] + restorer.apply(
          {"params": p}, batch["real_lq"]),
      c.objective.charbonnier_eps))(params["restorer"])
  np.testing.assert_allclose(got["norm_diff"], optax.tree.norm(diff),
                             rtol=1e-4)
  np.testing.assert_allclose(got["norm_pixel"], optax.tree.norm(pixel),
                             rtol=1e-5)
  np.testing.assert_allclose(got["cos_diff"], _cos(diff, oracle), atol=1e-4)
  np.testing.assert_allclose(got["cos_pixel"], _cos(pixel, oracle), atol=1e-4)
  # Without the biases: the kernels' cosine, a different number.
  kernels = _cos(diff, oracle, biases=False)
  np.testing.assert_allclose(got["cos_diff_kernels"], kernels, atol=1e-4)
  assert abs(kernels - got["cos_diff"]) > 1e-3
  # Both paths carry gradient, and they are not the same direction.
  assert got["norm_diff_syn"] > 0 and got["norm_diff_real"] > 0
  assert abs(got["cos_diff_syn"] - got["cos_diff_real"]) > 1e-3


def test_identical_domains_make_pixel_the_oracle(setup):
  c, params, batch = setup
  same = dict(batch, real_lq=batch["syn_lq"], real_gt=batch["syn_gt"])
  fn = alignment.make_alignment_fn(c)
  got = alignment.mean_alignment(fn, params, [same, same], jax.random.key(1))
  assert got["cos_pixel"] == pytest.approx(1.0, abs=1e-5)
  assert got["norm_pixel"] == pytest.approx(got["norm_oracle"], rel=1e-5)
  assert -1 <= got["out_cos_real"] <= 1
