"""Real-world deblurring (RealBlur-J), the paper's setting.

Images in [-1, 1] (x / 127.5 - 1, as the reference loads them); same restorer
and critic as denoising.

  dada-jax restore --config configs/deblur.py --checkpoint X.pth \
      --input blurry/ --output restored/
"""

from dada_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base_config("deblur")
  config.data.value_range = "minus_one_one"
  if arg.runlocal:
    config_lib.runlocal_models(config)
  return config
