"""Real-world deraining: Rain13K synthetic pairs and SPA real rainy images,
validated on SPA's real test pairs (Y-channel PSNR/SSIM, as the paper).

Images in [-1, 1] (x / 127.5 - 1, as the reference loads them); same networks
and schedule as denoising; Adam lr 5e-5; patch 128; global batch 192.

Expected (the paper's Table 2, this U-Net trained with DDA on Rain13K + SPA's
rainy images, no SPA ground truth): PSNR 34.39 dB, SSIM 0.9571 (LPIPS
0.0462) on the Y channel over SPA's 1000 real test pairs (preset y). The
same U-Net trained on Rain13K alone (`:mode=vanilla`) scores 33.04 dB /
0.9540. Training's periodic evaluation scores the first 100 pairs only; the
second command scores all of them:

  dada-jax train --config configs/derain.py --workdir runs/derain \\
      --config.data.syn.path=flist_name/derain/rain13k_input.flist \\
      --config.data.syn.gt_path=flist_name/derain/rain13k_gt.flist \\
      --config.data.real.path=flist_name/derain/SPA_train.flist \\
      --config.eval.path=flist_name/derain/real_test_1000_input.flist \\
      --config.eval.gt_path=flist_name/derain/real_test_1000_gt.flist
  dada-jax evaluate --config configs/derain.py --checkpoint runs/derain \\
      --input flist_name/derain/real_test_1000_input.flist \\
      --target flist_name/derain/real_test_1000_gt.flist

A few CPU steps on synthetic images (no dataset):

  dada-jax train --config configs/derain.py:runlocal --workdir /tmp/dada
"""

from dada_jax import config_lib


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, mode="dda")
  config = config_lib.base_config("derain")
  config.objective.mode = arg.mode
  config.data.value_range = "minus_one_one"
  config.optim.lr = 5e-5
  config.data.syn.kind = "paired_flists"
  config.data.real.kind = "flist"
  config.data.ref.kind = "flist" if arg.mode == "dda_ex" else "none"
  config.eval.update(kind="paired_flists", preset="y", max_images=100)
  config.train.update(eval_every=5000, ckpt_every=5000)
  if arg.runlocal:
    config_lib.runlocal(config)
  return config
