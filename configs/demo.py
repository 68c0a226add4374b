"""A CPU-sized demo on the built-in photos: no dataset to download.

Trains a small restorer for `task` (denoise | derain | deblur) on native-
resolution windows of the clean photos that ship inside the scikit-image and
sporco wheels (`dada_jax.data.builtin`, train split), rendered so that the
degradation is the only gap between the domains (`dada_jax.data.rendered`):

  syn   denoise: windows photographed by a random camera with the sensor
        noise off (the clean target), plus the paper's online, unclipped
        AWGN (σ ~ U[0, 75]/255); derain / deblur: synthetic pairs (thin
        streaks / linear motion) on the windows themselves.
  real  the same train photos under the simulated *real* degradation (raw
        shot/read noise before the demosaic and ISP / layered rain / camera
        shake), unpaired, a fresh window, camera and draw per patch.
  ref   (mode=dda_ex only) clean renders of the train photos.
  eval  the held-out TEST photos, 8 fixed blocks of 128 px each under 2
        fixed draws of the real degradation; RGB PSNR/SSIM of the EMA
        restorer every 500 steps.

mode=vanilla trains on the synthetic pairs only (the baseline), mode=dda adds
the diffusion critic on the real stream, mode=dda_ex also a clean reference
stream. `dada-jax demo` / `dada-jax sim2real` run these configs as a
benchmark with an oracle and a control (see README, "Does it work?").

  dada-jax train --config configs/demo.py:task=denoise,mode=dda \\
      --workdir /tmp/demo_dda
  dada-jax train --config configs/demo.py:runlocal --workdir /tmp/demo_local

Small networks (restorer depth 3 / width 16, starting as the identity;
critic inner 32, mults 1-2, no attention), patch 64, batch 8, 1500 steps,
EMA decay 0.995 (the paper's 0.9999 would barely move in 1500 steps).
No paper figure applies: the paper uses real datasets and full-size networks.
"""

from dada_jax import config_lib

TASKS = ("denoise", "derain", "deblur")


def get_config(arg=None):
  arg = config_lib.parse_arg(arg, runlocal=False, task="denoise", mode="dda")
  if arg.task not in TASKS:
    raise config_lib.ConfigError(f"configs/demo.py: task={arg.task!r}: "
                                 f"expected one of {TASKS}")
  c = config_lib.base_config(arg.task)
  c.objective.mode = arg.mode
  c.data.value_range = "zero_one" if arg.task == "denoise" else (
      "minus_one_one")
  c.optim.update(lr=1e-4 if arg.task == "denoise" else 5e-5, ema_decay=0.995)
  c.restorer.update(depth=3, wf=16, last_init="zeros")
  c.critic.update(inner_channels=32, channel_mults=(1, 2), res_blocks=1,
                  attn_res=(), num_head_channels=32)

  # Native-resolution windows of the photos; the clean targets are the same
  # renders in every stream, so the degradation is the only domain gap
  # (dada_jax.data.rendered).
  c.data.update(batch_size=8, patch_size=64)
  rendered = dict(kind="rendered", task=arg.task, split="train", size=0)
  if arg.task == "denoise":  # noiseless renders; online AWGN in the pipeline
    c.data.syn.update(**rendered, domain="clean", seed=0, paired=False)
  else:
    c.data.syn.update(**rendered, domain="synthetic", seed=0, paired=True)
  c.data.real.update(**rendered, domain="real", seed=1, paired=False)
  c.data.ref.update(**rendered, seed=2, paired=False)
  c.data.ref.update(domain="clean", kind="rendered" if arg.mode == "dda_ex"
                    else "none")
  # The test set: 8 blocks of 128 px of each held-out photo, 2 draws each.
  c.eval.update(**(rendered | dict(split="test")), domain="real", seed=1000,
                paired=True, block_size=128, draws=2, blocks_per_photo=8, preset="rgb",
                max_images=0, num_samples=3)

  total = 1500
  c.objective.update(steps_per_epoch=0, ramp_steps=total // 3)
  c.train.update(total_steps=total, log_every=50, eval_every=500,
                 ckpt_every=500)
  if arg.runlocal:
    runlocal(c)
  return c


def runlocal(c):
  """A few tiny steps: test-size models, 32x32 patches of 64-pixel photos."""
  config_lib.runlocal_models(c)
  c.data.patch_size = 32
  c.eval.update(block_size=32, blocks_per_photo=2, draws=1, max_images=2,
                num_samples=2)
  c.objective.update(steps_per_epoch=0, ramp_steps=10)
  c.train.update(total_steps=4, log_every=2, ckpt_every=2, eval_every=4,
                 keep_ckpts=2, progress_bar=False)
