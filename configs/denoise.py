"""Real-world denoising: DFWB clean images with online AWGN (synthetic) and
SIDD noisy crops (real), validated on the SIDD validation blocks.

Paper settings: images in [0, 1]; restorer depth 4 / width 64; critic inner
64, mults 1-2-4-8, attention in the middle block; linear β 1e-6..1e-2 over
1000 steps; Adam lr 1e-4; patch 128; global batch 192 (the official script's
24 per GPU on 8 GPUs); α = 0.2·tanh(2.5·min(epoch/300, 1)); EMA 0.9999.

Expected (the paper's Table 1, this U-Net trained with DDA on DFWB + SIDD's
noisy images, no SIDD ground truth): PSNR 34.71 dB, SSIM 0.9202 (LPIPS
0.0903) on the 1280 SIDD validation blocks, MATLAB-style RGB metrics (preset
sidd_matlab). The same U-Net trained on the synthetic set alone
(`:mode=vanilla`) scores 26.58 dB / 0.6132. The paper does not give its
number of training steps (α saturates at epoch 300). Training's periodic
evaluation scores the blocks of the first 4 images only; the second command
scores all of them:

  dada-jax train --config configs/denoise.py --workdir runs/denoise \\
      --config.data.syn.path=flist_name/denoise/DFWB.flist \\
      --config.data.real.path=flist_name/denoise/SIDD_train_input.flist \\
      --config.eval.path=ValidationNoisyBlocksSrgb.mat \\
      --config.eval.gt_path=ValidationGtBlocksSrgb.mat
  dada-jax evaluate --config configs/denoise.py --checkpoint runs/denoise \\
      --sidd-noisy ValidationNoisyBlocksSrgb.mat \\
      --sidd-gt ValidationGtBlocksSrgb.mat

`:size=T|S|B` picks the paper's Fig. 7 U-Net sizes (S, width 64, is the
default; see `backbones.UNET_SIZES`).

A few CPU steps on synthetic images (no dataset):

  dada-jax train --config configs/denoise.py:runlocal --workdir /tmp/dada
"""

from dada_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, mode="dda", size="S")
  config = config_lib.base_config("denoise")
  config.restorer.update(config_lib.unet_size(arg.size))
  config.objective.mode = arg.mode
  config.data.value_range = "zero_one"
  config.optim.lr = 1e-4
  config.data.syn.kind = "flist"    # clean images; AWGN σ~U[0,75] online
  config.data.real.kind = "flist"   # SIDD noisy crops
  config.data.ref.kind = "flist" if arg.mode == "dda_ex" else "none"
  config.eval.update(kind="sidd_mat", preset="sidd_matlab", max_images=4)
  config.train.update(eval_every=5000, ckpt_every=5000)
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
