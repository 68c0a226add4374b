"""Real-world denoising (configs/denoise.py) with Uformer as the restorer.

Uformer exact to the reference's models/net/uformer.py; by default at its
constructor's size (embed 32, depths 2 x 9, window 8, img_size 256; 21.7M
parameters), or `size=T|S|B`, the paper's Fig. 7 backbones as the Uformer
authors define them (embed 16 / 32 / 32; depths 2 x 9 for T and S,
1-2-8-8-2-8-8-2-1 for B; window 8, modulator, img_size 128; 5.6M / 21.8M /
52.0M parameters; see
dada_jax/models/uformer.py). Critic, data, schedule and optimiser are
denoise.py's. Other arguments: `runlocal` (tiny Uformer), `mode=...`,
`critic=sr3`.

  dada-jax train --config configs/uformer.py:size=B --workdir runs/uformer_b
  dada-jax train --config configs/uformer.py:runlocal --workdir /tmp/uf
"""

import os

from dada_jax import config_lib
from dada_jax.models import uformer


def get_config(arg=None):
  sizes = {k: v for k, v in uformer.PRESETS.items() if k in ("T", "S", "B")}
  return config_lib.with_restorer(
      os.path.join(os.path.dirname(__file__), "denoise.py"), "uformer", arg,
      sizes)
