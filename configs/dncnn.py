"""Real-world denoising (configs/denoise.py) with DnCNN as the restorer.

DnCNN exact to the reference's models/net/dncnn.py: 64 features (fixed
there), 17 layers with BatchNorm (DnCNN-S, the constructor's default;
`size=dncnn_b` gives the blind model's 20). Its BatchNorm runs in train mode
during training, on the synthetic and the real batch separately as the
reference calls it, and its running statistics are part of the train state
and checkpoints (see dada_jax/objective.py). Critic, data, schedule and
optimiser are denoise.py's. Other arguments: `runlocal` (3 layers),
`mode=...`, `critic=sr3`.

  dada-jax train --config configs/dncnn.py:runlocal --workdir /tmp/dncnn
"""

import os

from dada_jax import config_lib
from dada_jax.models import dncnn


def get_config(arg=None):
  return config_lib.with_restorer(
      os.path.join(os.path.dirname(__file__), "denoise.py"), "dncnn", arg,
      {"dncnn_s": dncnn.PRESETS["dncnn_s"],
       "dncnn_b": dncnn.PRESETS["dncnn_b"]})
