"""Test and validation blocks, scored one PSNR per block.

The benchmark's unit of evidence is a block: a fixed window of a photo under
one draw of the degradation (`dada_jax.data.rendered`, blocks mode). Every
method restores the same blocks, so method differences are paired per block.

  test        the held-out photos (config.eval: split test), never trained
              on, never used to choose anything
  validation  the TRAIN photos under new draws (config.eval with split train
              and another seed): the go/no-go check and the choice of the
              figure's crops are made here
  syn_test    the held-out photos under the synthetic degradation
"""

from __future__ import annotations

import copy
import functools

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dada_jax import image_io
from dada_jax import models
from dada_jax.data import build

VALIDATION_SEED = 3000
SYN_TEST_SEED = 2000
BATCH = 16


def block_sets(config: mlc.ConfigDict) -> dict:
  """{"test", "validation", "syn_test"}: paired block sources (see above)."""
  e = config.eval
  if e.kind != "rendered" or not e.block_size:
    raise ValueError("the sim2real benchmark scores blocks: config.eval must "
                     "be kind 'rendered' with block_size > 0")
  val, syn = copy.deepcopy(e), copy.deepcopy(e)
  val.update(split="train", seed=VALIDATION_SEED)
  syn.update(domain="synthetic", seed=SYN_TEST_SEED)
  return {"test": build.build_source(e, "config.eval"),
          "validation": build.build_source(val, "config.eval (validation)"),
          "syn_test": build.build_source(syn, "config.eval (synthetic)")}


@functools.lru_cache(maxsize=8)
def _apply(restorer):
  return jax.jit(lambda p, x: x + restorer.apply(models.as_variables(p), x))


def load(source, value_range: str) -> tuple[np.ndarray, np.ndarray]:
  """(lq float [N, S, S, 3] in `value_range`, gt uint8 [N, S, S, 3])."""
  items = [source[i] for i in range(len(source))]
  lq = np.stack([image_io.to_float(it["lq"], value_range) for it in items])
  return lq, np.stack([it["gt"] for it in items])


def restore(config: mlc.ConfigDict, params, lq: np.ndarray) -> np.ndarray:
  """uint8 [N, S, S, 3] outputs of the restorer `params` on float blocks."""
  apply = _apply(models.make_restorer(config))
  out = [np.asarray(apply(params, jnp.asarray(lq[i:i + BATCH])))
         for i in range(0, len(lq), BATCH)]
  return image_io.to_uint8(np.concatenate(out), config.data.value_range)


def psnr(out: np.ndarray, gt: np.ndarray) -> np.ndarray:
  """[N] RGB PSNR (dB) of uint8 blocks, the MSE over each whole block."""
  err = out.astype(np.float64) - gt.astype(np.float64)
  mse = np.maximum(np.mean(err ** 2, axis=(1, 2, 3)), 1e-10)
  return 10.0 * np.log10(255.0 ** 2 / mse)


class Scorer:
  """Per-block PSNRs of restorers on a block set, its blocks loaded once."""

  def __init__(self, config: mlc.ConfigDict, source):
    self.config, self.source = config, source
    self.lq, self.gt = load(source, config.data.value_range)
    self.input_psnr = psnr(image_io.to_uint8(self.lq,
                                             config.data.value_range),
                           self.gt)

  def __call__(self, params) -> np.ndarray:
    return psnr(restore(self.config, params, self.lq), self.gt)
