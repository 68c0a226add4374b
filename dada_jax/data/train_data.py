"""The training input of one host, built from a config's streams."""

from __future__ import annotations

import ml_collections as mlc

from dada_jax.data import build
from dada_jax.data import common
from dada_jax.data import pipeline


def make_train_data(config: mlc.ConfigDict):
  """(infinite iterator of this host's batches, synthetic set size).

  The streams used follow `config.objective.mode`: `vanilla` reads only
  `config.data.syn`, `dda` also `config.data.real`, `dda_ex` also
  `config.data.ref`. Batches are dicts of [B, P, P, 3] float32 (see
  `pipeline.make_train_dataset`); the order depends on `config.seed` alone.
  """
  d, mode = config.data, config.objective.mode
  source = lambda s, name: build.build_source(s, name, d.patch_size)
  syn = source(d.syn, "config.data.syn")
  real = source(d.real, "config.data.real") if mode != "vanilla" else None
  ref = source(d.ref, "config.data.ref") if mode == "dda_ex" else None
  if syn is None or (mode != "vanilla" and real is None):
    raise common.DataError("config.data.syn and config.data.real need a kind")
  ds = pipeline.make_train_dataset(
      syn, real, ref, patch_size=d.patch_size, global_batch_size=d.batch_size,
      seed=config.seed, value_range=d.value_range, augment=d.augment,
      sigma_range=tuple(d.sigma_range), num_workers=d.num_workers,
      real_awgn=bool(d.real.get("awgn", False)),
      check_files=d.check_files)
  return iter(ds), len(syn)
