"""Paired block statistics: the intervals a sim2real verdict rests on."""

import numpy as np
import pytest

from dada_jax.sim2real import stats


def test_a_constant_gain_has_a_point_interval():
  base = np.random.default_rng(0).normal(28, 2, (3, 40))
  g = stats.paired(base + 0.5, base)
  assert g["mean"] == pytest.approx(0.5)
  assert g["ci"] == pytest.approx((0.5, 0.5))
  assert [p["mean"] for p in g["per_seed"]] == pytest.approx([0.5] * 3)
  assert g["blocks_positive"] == 1.0 and (g["seeds"], g["blocks"]) == (3, 40)


def test_interval_covers_the_truth_and_excludes_zero_only_when_it_should():
  rng = np.random.default_rng(1)
  base = rng.normal(28, 2, (3, 200))
  clear = stats.paired(base + 0.4 + rng.normal(0, 0.3, base.shape), base)
  assert clear["ci"][0] > 0 and clear["ci"][0] < 0.4 < clear["ci"][1]
  null = stats.paired(base + rng.normal(0, 0.3, base.shape), base)
  assert null["ci"][0] < 0 < null["ci"][1]


def test_seed_disagreement_widens_the_pooled_interval():
  rng = np.random.default_rng(2)
  base = rng.normal(28, 2, (3, 100))
  noise = rng.normal(0, 0.1, base.shape)
  agree = stats.paired(base + 0.3 + noise, base)
  # Same pooled mean, but the seeds disagree: +0.9, +0.3, -0.3.
  spread = stats.paired(base + np.array([[0.9], [0.3], [-0.3]]) + noise, base)
  assert spread["mean"] == pytest.approx(agree["mean"])
  width = lambda g: g["ci"][1] - g["ci"][0]
  assert width(spread) > 5 * width(agree)
  assert spread["ci"][0] < 0  # three seeds, one negative: not decisive
  # Each seed's own interval is over its blocks only.
  assert spread["per_seed"][0]["ci"][0] > 0.7


def test_one_seed_resamples_blocks_only():
  rng = np.random.default_rng(3)
  base = rng.normal(28, 2, (1, 50))
  g = stats.paired(base + rng.normal(0.2, 0.2, base.shape), base)
  assert g["ci"] == pytest.approx(g["per_seed"][0]["ci"], abs=0.03)


def test_fraction_recovered():
  rng = np.random.default_rng(4)
  base = rng.normal(28, 2, (2, 80))
  oracle = base + 2.0 + rng.normal(0, 0.2, base.shape)
  half = base + 1.0 + rng.normal(0, 0.2, base.shape)
  f = stats.fraction_recovered(half, base, oracle)
  assert f["mean"] == pytest.approx(0.5, abs=0.03)
  assert f["ci"][0] < 0.5 < f["ci"][1] and f["ci"][1] - f["ci"][0] < 0.1
  # An oracle no better than the base: no fraction to speak of.
  assert np.isnan(stats.fraction_recovered(half, base, base)["mean"])


def test_deterministic_for_a_seed():
  rng = np.random.default_rng(5)
  a, b = rng.normal(size=(2, 30)), rng.normal(size=(2, 30))
  assert stats.paired(a, b) == stats.paired(a, b)
  assert stats.paired(a, b, seed=1)["ci"] != stats.paired(a, b)["ci"]
