"""Real-world denoising (configs/denoise.py) with SwinIR as the restorer.

SwinIR exact to the reference's models/net/swinir.py, at SwinIR's published
colour-denoising size (embed 180, six stages of 6 blocks with 6 heads,
window 8, mlp ratio 2, `1conv`; 11.5M parameters): the reference
constructor's own defaults do not build. Critic, data, schedule and optimiser
are denoise.py's. Arguments: `runlocal` (tiny SwinIR), `mode=...`,
`critic=sr3`.

  dada-jax train --config configs/swinir.py:runlocal --workdir /tmp/swinir
"""

import os

from dada_jax import config_lib


def get_config(arg=None):
  return config_lib.with_restorer(
      os.path.join(os.path.dirname(__file__), "denoise.py"), "swinir", arg)
