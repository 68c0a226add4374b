"""Real-world deblurring: GoPro synthetic pairs and RealBlur-J real blurry
images, validated on RealBlur-J test pairs (skimage-style RGB PSNR/SSIM, as
the official evaluation script; no alignment).

Images in [-1, 1] (x / 127.5 - 1, as the reference loads them); same networks
and schedule as denoising; Adam lr 5e-5; patch 128; global batch 192.

Expected (the paper's Table 3, this U-Net trained with DDA on GoPro +
RealBlur-J's blurry images, no RealBlur-J ground truth): PSNR 26.46 dB, SSIM
0.8048 (LPIPS 0.1363) in RGB over RealBlur-J's 980 test pairs (preset
skimage_rgb). The same U-Net trained on GoPro alone (`:mode=vanilla`) scores
26.27 dB / 0.8012. Training's periodic evaluation scores the first 100 pairs
only; the second command scores all of them:

  dada-jax train --config configs/deblur.py --workdir runs/deblur \\
      --config.data.syn.path=flist_name/deblur/gopro_train_patch_input.flist \\
      --config.data.syn.gt_path=flist_name/deblur/gopro_train_patch_gt.flist \\
      --config.data.real.path=flist_name/deblur/RealBlur_J_train_input.flist \\
      --config.eval.path=flist_name/deblur/RealBlur_J_test_input.flist \\
      --config.eval.gt_path=flist_name/deblur/RealBlur_J_test_gt.flist
  dada-jax evaluate --config configs/deblur.py --checkpoint runs/deblur \\
      --input flist_name/deblur/RealBlur_J_test_input.flist \\
      --target flist_name/deblur/RealBlur_J_test_gt.flist

A few CPU steps on synthetic images (no dataset):

  dada-jax train --config configs/deblur.py:runlocal --workdir /tmp/dada
"""

from dada_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, mode="dda")
  config = config_lib.base_config("deblur")
  config.objective.mode = arg.mode
  config.data.value_range = "minus_one_one"
  config.optim.lr = 5e-5
  config.data.syn.kind = "paired_flists"
  config.data.real.kind = "flist"
  config.data.ref.kind = "flist" if arg.mode == "dda_ex" else "none"
  config.eval.update(kind="paired_flists", preset="skimage_rgb",
                     max_images=100)
  config.train.update(eval_every=5000, ckpt_every=5000)
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
