"""Real-world deraining (SPA), the paper's setting.

Images in [-1, 1] (x / 127.5 - 1, as the reference loads them); same restorer
and critic as denoising.

  dada-jax restore --config configs/derain.py --checkpoint X.pth \
      --input rainy/ --output restored/
"""

from dada_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base_config("derain")
  config.data.value_range = "minus_one_one"
  if arg.runlocal:
    config_lib.runlocal_models(config)
  return config
