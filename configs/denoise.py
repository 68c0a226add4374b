"""Real-world denoising (SIDD), the paper's setting.

Images in [0, 1]; restorer depth 4 / width 64; critic inner 64, mults 1-2-4-8,
attention in the middle block; linear β 1e-6..1e-2 over 1000 steps.

  dada-jax restore --config configs/denoise.py --checkpoint X.pth \
      --input noisy/ --output restored/
  dada-jax restore --config configs/denoise.py:runlocal ...   # tiny models
"""

from dada_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False)
  config = config_lib.base_config("denoise")
  config.data.value_range = "zero_one"
  if arg.runlocal:
    config_lib.runlocal_models(config)
  return config
