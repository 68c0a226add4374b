"""Paired block statistics: a method's gain over another with its interval.

Every method restores the same blocks under the same seeds, so a comparison
is a paired difference d[s, b] = PSNR_m[s, b] - PSNR_base[s, b] (seed s,
block b). Its interval comes from a bootstrap that resamples both sources of
variation: blocks (shared by all seeds, since the test set is fixed) and,
for the pooled figure, seeds. With one seed only blocks are resampled, and
the interval says nothing about training noise; the report says so.

`fraction_recovered` is (m - base) / (oracle - base): the share of the
oracle's gain a method recovers, with its interval from the same resamples.
"""

from __future__ import annotations

import numpy as np

RESAMPLES = 4000
LEVEL = 0.95


def _resample_means(d: np.ndarray, rng: np.random.Generator,
                    resample_seeds: bool,
                    n: int = RESAMPLES) -> np.ndarray:
  """[n] means of d [S, B] with blocks (and seeds) drawn with replacement."""
  s, b = d.shape
  blocks = rng.integers(0, b, (n, b))
  seeds = (rng.integers(0, s, (n, s)) if resample_seeds and s > 1
           else np.broadcast_to(np.arange(s), (n, s)))
  # mean over the drawn seeds of the mean over the drawn blocks
  per_seed = d[:, blocks].mean(axis=-1)  # [S, n]
  return np.take_along_axis(per_seed.T, seeds, axis=1).mean(axis=1)


def interval(samples: np.ndarray, level: float = LEVEL) -> tuple[float, float]:
  """The percentile interval of bootstrap samples."""
  lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)])
  return float(lo), float(hi)


def paired(m: np.ndarray, base: np.ndarray, *, seed: int = 0) -> dict:
  """m - base on [S, B] PSNRs: pooled and per-seed means with intervals.

  Returns:
    {"mean", "ci": (lo, hi), "per_seed": [{"mean", "ci"}], "seeds",
     "blocks", "blocks_positive": fraction of d > 0}.
  """
  d = np.asarray(m, np.float64) - np.asarray(base, np.float64)
  rng = np.random.default_rng(seed)
  pooled = _resample_means(d, rng, resample_seeds=True)
  per_seed = []
  for row in d:
    samples = _resample_means(row[None], rng, resample_seeds=False)
    per_seed.append({"mean": float(row.mean()), "ci": interval(samples)})
  return {"mean": float(d.mean()), "ci": interval(pooled),
          "per_seed": per_seed, "seeds": d.shape[0], "blocks": d.shape[1],
          "blocks_positive": float(np.mean(d > 0))}


def fraction_recovered(m: np.ndarray, base: np.ndarray, oracle: np.ndarray,
                       *, seed: int = 0) -> dict:
  """(m - base) / (oracle - base), pooled over [S, B], with its interval.

  Numerator and denominator are resampled together (the same blocks and
  seeds), so the interval carries their correlation. NaN when the oracle
  does not beat the base in a resample's denominator.
  """
  m, base, oracle = (np.asarray(x, np.float64) for x in (m, base, oracle))
  gain, full = m - base, oracle - base
  s, b = gain.shape
  rng = np.random.default_rng(seed)
  blocks = rng.integers(0, b, (RESAMPLES, b))
  seeds = (rng.integers(0, s, (RESAMPLES, s)) if s > 1
           else np.zeros((RESAMPLES, 1), int))

  def means(d):
    per_seed = d[:, blocks].mean(axis=-1).T  # [n, S]
    return np.take_along_axis(per_seed, seeds, axis=1).mean(axis=1)

  num, den = means(gain), means(full)
  ratio = np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)
  point = float(gain.mean() / full.mean()) if full.mean() > 0 else float("nan")
  ok = ratio[np.isfinite(ratio)]
  ci = interval(ok) if len(ok) > 0.9 * RESAMPLES else (float("nan"),) * 2
  return {"mean": point, "ci": ci}
