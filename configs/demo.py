"""A CPU-sized demo on the built-in photos: no dataset to download.

Trains a small restorer for `task` (denoise | derain | deblur) on the clean
photos that ship inside the scikit-image and sporco wheels
(`dada_jax.data.builtin`, train split, shrunk to at most 256 pixels a side):

  syn   denoise: the clean photos with the paper's online, unclipped AWGN
        (σ ~ U[0, 75]/255); derain / deblur: simulated synthetic pairs (thin
        streaks / linear motion, `dada_jax.data.simulated`).
  real  the same train photos through the simulated *real* degradation
        (camera pipeline noise / layered rain / camera shake), unpaired, with
        its own seed.
  ref   (mode=dda_ex only) the clean train photos.
  eval  the held-out TEST photos through the real degradation, paired, with a
        fixed seed; RGB PSNR/SSIM of the EMA restorer every 500 steps.

So eval/psnr measures how well a restorer trained on synthetic degradations
transfers to the (simulated) real domain; mode=vanilla trains on the synthetic
pairs only (the baseline), mode=dda adds the diffusion critic on the real
stream, mode=dda_ex also a clean reference stream.

  dada-jax train --config configs/demo.py:task=denoise,mode=dda \\
      --workdir /tmp/demo_dda
  dada-jax train --config configs/demo.py:task=denoise,mode=vanilla \\
      --workdir /tmp/demo_vanilla
  dada-jax train --config configs/demo.py:runlocal --workdir /tmp/demo_local

Small networks (restorer depth 3 / width 16, starting as the identity;
critic inner 32, mults 1-2, no attention), patch 64, batch 8, 1500 steps,
EMA decay 0.995 (the paper's 0.9999 would barely move in 1500 steps).

Expected: no paper figure applies (the paper uses real datasets and its
full-size networks). The closest measured ones are the README's sim2real
benchmark, which trains these networks on these photos under its own
schedule (`dada-jax sim2real --task denoise`): on the simulated-real test
photos DDA 27.93 ± 0.11 dB against vanilla's 27.78 ± 0.14 (3 seeds, CPU).
Expect a gain of that order here, not the paper's +8 dB.
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

  max_side = 256
  c.data.update(batch_size=8, patch_size=64)
  if arg.task == "denoise":  # clean photos; online AWGN in the pipeline.
    c.data.syn.update(kind="builtin", split="train", size=max_side)
  else:
    c.data.syn.update(kind="simulated", task=arg.task, domain="synthetic",
                      split="train", size=max_side, seed=0, paired=True)
  c.data.real.update(kind="simulated", task=arg.task, domain="real",
                     split="train", size=max_side, seed=1, paired=False)
  c.data.ref.update(kind="builtin" if arg.mode == "dda_ex" else "none",
                    split="train", size=max_side)
  c.eval.update(kind="simulated", task=arg.task, domain="real", split="test",
                size=max_side, seed=1000, paired=True, preset="rgb",
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
  for stream in (c.data.syn, c.data.real, c.data.ref, c.eval):
    stream.size = 64
  c.eval.update(max_images=2, num_samples=2)
  c.objective.update(steps_per_epoch=0, ramp_steps=10)
  c.train.update(total_steps=4, log_every=2, ckpt_every=2, eval_every=4,
                 keep_ckpts=2, progress_bar=False)
