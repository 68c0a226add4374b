"""Real-world denoising (configs/denoise.py) with NAFNet as the restorer.

The reference ships only NAFNet's block; the network is built as its authors
publish it (megvii-research/NAFNet), at their SIDD denoising size
NAFNet-SIDD-width32 (29.2M parameters), or `size=width64` (116.0M), so their
released checkpoints load with `train.init_from` (see
dada_jax/models/nafnet.py). Critic, data, schedule and optimiser are
denoise.py's. Other arguments: `runlocal` (tiny NAFNet), `mode=...`,
`critic=sr3`.

  dada-jax train --config configs/nafnet.py:runlocal --workdir /tmp/nafnet
"""

import os

from dada_jax import config_lib
from dada_jax.models import nafnet


def get_config(arg=None):
  return config_lib.with_restorer(
      os.path.join(os.path.dirname(__file__), "denoise.py"), "nafnet", arg,
      {"width32": nafnet.PRESETS["width32"],
       "width64": nafnet.PRESETS["width64"]})
