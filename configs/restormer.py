"""Real-world denoising (configs/denoise.py) with Restormer as the restorer.

Restormer at the reference constructor's size (dim 48, blocks 4-6-6-8, 4
refinement blocks, heads 1-2-4-8, BiasFree LayerNorm; 26.1M parameters),
exact to the reference's models/net/restormer.py; critic, data, schedule and
optimiser are denoise.py's. Arguments: `runlocal` (denoise.py's runlocal,
with a tiny Restormer), `mode=...`, `critic=sr3` (the SR3 critic).

  dada-jax train --config configs/restormer.py:runlocal --workdir /tmp/rest
"""

import os

from dada_jax import config_lib


def get_config(arg=None):
  return config_lib.with_restorer(
      os.path.join(os.path.dirname(__file__), "denoise.py"), "restormer", arg)
