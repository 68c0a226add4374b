"""Simulated degraded/clean pairs over a clean source, as a random-access source.

`SimulatedPairs` degrades each clean image of a base source with
`degrade.degrade(task, domain, ...)` on the fly, so the built-in photos (or
any clean folder) can stand in for a real dataset:

  * the *real* domain of every task (camera noise, layered rain, camera shake):
    paired for evaluation, unpaired (`paired=False`) for the real training
    stream, with a different seed and split than the evaluation;
  * the *synthetic* domain of derain and deblur (thin streaks, linear motion).

Synthetic denoising should NOT use it: the paper's AWGN is unclipped and
drawn online (a fresh σ and noise every time a patch is seen), which the
pipeline already does for a clean-only synthetic stream. SimulatedPairs
quantises its degraded image to uint8 (rounded, clipped to [0, 255]) and
draws it once per (seed, index), so it would clip the noise and fix it per
image.

Element i is a pure function of (base[i], task, domain, seed, i): its
generator is `np.random.default_rng([seed, i])`, so items do not depend on
the order or the number of reads. A camera-pipeline degradation of a 256-pixel
image takes tens of milliseconds, so the first `cache_size` degraded images are
kept in memory (per process): a small training set is degraded once, not once
per patch.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from dada_jax.data import degrade as degrade_lib
from dada_jax.data.common import Problem

DOMAINS = ("synthetic", "real")


class SimulatedPairs:
  """Degraded copies of a clean source's images.

  Elements, all [H, W, 3] uint8 in [0, 255] of the base image's size:
    paired=True:  {"lq": degraded, "gt": clean}
    paired=False: {"image": degraded}

  Args:
    base: clean random-access source with elements {"image": uint8}.
    task: "denoise", "derain" or "deblur" (`degrade.DEGRADATIONS`).
    domain: "synthetic" or "real".
    seed: degradation seed; item i uses `np.random.default_rng([seed, i])`.
    paired: whether elements carry the clean ground truth.
    cache_size: degraded images kept in memory (0: none).
    **params: extra keyword arguments of the degradation function.

  Raises:
    ValueError: unknown task/domain, or a base source that is paired.
  """

  def __init__(self, base: Any, task: str, domain: str, seed: int = 0, *,
               paired: bool = True, cache_size: int = 64, **params):
    if task not in degrade_lib.DEGRADATIONS or domain not in DOMAINS:
      known = [f"{t}/{d}" for t in degrade_lib.DEGRADATIONS for d in DOMAINS]
      raise ValueError(f"unknown degradation {task}/{domain}; known: "
                       f"{', '.join(known)}")
    if getattr(base, "paired", False):
      raise ValueError(f"base source {base!r} is paired; SimulatedPairs "
                       "needs clean images ({'image': uint8})")
    self.base, self.task, self.domain = base, task, domain
    self.seed, self.paired, self.params = int(seed), bool(paired), params
    self._cache: dict[int, np.ndarray] = {}
    self._cache_size = int(cache_size)
    self.problems: list[Problem] = list(getattr(base, "problems", []))
    extra = "".join(f", {k}={v!r}" for k, v in sorted(params.items()))
    self.name = (f"SimulatedPairs({base!r}, task={task!r}, domain={domain!r}, "
                 f"seed={self.seed}, paired={self.paired}{extra})")

  def __len__(self) -> int:
    return len(self.base)

  def degraded(self, clean: np.ndarray, index: int) -> np.ndarray:
    """[H, W, 3] uint8 degraded version of uint8 `clean`, for item `index`."""
    clean01 = np.asarray(clean, np.float32) / 255.0
    rng = np.random.default_rng([self.seed, index])
    out = degrade_lib.degrade(self.task, self.domain, clean01, rng,
                              **self.params)
    return np.clip(np.round(out * 255.0), 0, 255).astype(np.uint8)

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    lq = self._cache.get(index)
    if lq is not None and not self.paired:
      return {"image": lq}
    clean = np.asarray(self.base[index]["image"])
    if clean.dtype != np.uint8:
      raise ValueError(f"{self.base!r}[{index}]: expected uint8, got "
                       f"{clean.dtype}")
    if lq is None:
      lq = self.degraded(clean, index)
      if len(self._cache) < self._cache_size:
        self._cache[index] = lq
    return {"lq": lq, "gt": clean} if self.paired else {"image": lq}

  def __repr__(self) -> str:
    return self.name

  def check_item(self, index: int, min_size: int) -> list[Problem]:
    """The base image's problems (degradations keep the size; not run here,
    which keeps `check_sources` cheap)."""
    check = getattr(self.base, "check_item", None)
    return check(index, min_size) if check is not None else []
