"""The networks a config can name, their settings and size rules.

`config.restorer.name` is "unet", the paper's U-Net, whose fields sit at the
top of `config.restorer`, or a key of RESTORERS, whose constructor arguments
sit in `config.restorer.<name>`. Likewise `config.critic.name`:
"guided_diffusion" (fields at the top of `config.critic`) or a key of
CRITICS (`config.critic.<name>`). Only the named network's settings matter;
the others' blocks are there so that `--config.restorer.restormer.dim=24`
works on any config.

Each block's defaults are the reference constructor's (what
`RestorationNet()` builds when models/network.py imports that file), except
where the DDA setting differs: the SR3 critic takes the 9 channels the
method feeds it (its constructor's default is 6).
"""

from __future__ import annotations

import math

RESTORERS = {
    "restormer": dict(inp_channels=3, out_channels=3, dim=48,
                      num_blocks=(4, 6, 6, 8), num_refinement_blocks=4,
                      heads=(1, 2, 4, 8), ffn_expansion_factor=2.66,
                      bias=False, LayerNorm_type="BiasFree",
                      dual_pixel_task=False),
    "uformer": dict(img_size=256, in_chans=3, dd_in=3, embed_dim=32,
                    depths=(2, 2, 2, 2, 2, 2, 2, 2, 2),
                    num_heads=(1, 2, 4, 8, 16, 16, 8, 4, 2), win_size=8,
                    mlp_ratio=4.0, qkv_bias=True, qk_scale=None,
                    drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                    use_checkpoint=False, token_projection="linear",
                    token_mlp="leff", shift_flag=True, modulator=False,
                    cross_modulator=False),
    # Not the reference constructor's defaults, which do not build (window 7
    # does not tile img_size 64): SwinIR's published colour-denoising model.
    "swinir": dict(img_size=128, patch_size=1, in_chans=3, embed_dim=180,
                   depths=(6, 6, 6, 6, 6, 6), num_heads=(6, 6, 6, 6, 6, 6),
                   window_size=8, mlp_ratio=2.0, qkv_bias=True, qk_scale=None,
                   drop_rate=0.0, attn_drop_rate=0.0, drop_path_rate=0.1,
                   ape=False, patch_norm=True, use_checkpoint=False,
                   upscale=1, img_range=1.0, upsampler="",
                   resi_connection="1conv"),
    # Its 64 features are fixed in the reference; 17 layers is DnCNN-S.
    "dncnn": dict(channels=3, num_of_layers=17),
    # The reference has only the block: the network as its authors publish
    # it, at their SIDD denoising size (NAFNet-SIDD-width32).
    "nafnet": dict(img_channel=3, width=32, middle_blk_num=12,
                   enc_blk_nums=(2, 2, 4, 8), dec_blk_nums=(2, 2, 2, 2),
                   dilation=1, drop_out_rate=0.0, beta_gamma_init=0.0),
}
CRITICS = {
    "sr3": dict(in_channel=9, out_channel=3, inner_channel=32, norm_groups=32,
                channel_mults=(1, 2, 4, 8, 8), attn_res=(8,), res_blocks=3,
                dropout=0.0, with_noise_level_emb=True, image_size=128),
}
# Test sizes (`config_lib.runlocal`).
RUNLOCAL = {
    "restormer": dict(dim=4, num_blocks=(1, 1, 1, 1), num_refinement_blocks=1,
                      heads=(1, 2, 2, 4)),
    "uformer": dict(img_size=32, embed_dim=4, win_size=4, mlp_ratio=2.0,
                    depths=(2, 1, 1, 1, 1, 1, 1, 1, 2),
                    num_heads=(1, 1, 2, 2, 4, 4, 2, 2, 1), modulator=True),
    "swinir": dict(img_size=16, embed_dim=8, depths=(2, 2), num_heads=(2, 2),
                   window_size=4, mlp_ratio=2.0),
    "nafnet": dict(width=4, middle_blk_num=1, enc_blk_nums=(1, 1),
                   dec_blk_nums=(1, 1)),
    "dncnn": dict(num_of_layers=3),
    "sr3": dict(inner_channel=16, norm_groups=8, channel_mults=(1, 2),
                attn_res=(16,), res_blocks=1, image_size=32),
}
DEFAULT_RESTORER, DEFAULT_CRITIC = "unet", "guided_diffusion"

# The paper's Fig. 7 U-Nets. It gives their GMACs at 128² (3.14 / 12.48 /
# 17.58), not their shapes; S is the default (width 64, 8.56M parameters).
# At depth 4, XLA's count for our U-Net is 3.05 / 12.11 / 17.06 G at widths
# 32 / 64 / 76: each the paper's figure / 1.03, the same ratio for all three
# (the paper's count includes something ours leaves out), and no other width
# comes within 1%. So T and B are taken to be widths 32 and 76.
UNET_SIZES = {"T": dict(depth=4, wf=32), "S": dict(depth=4, wf=64),
              "B": dict(depth=4, wf=76)}


def restorer_name(config) -> str:
  return config.restorer.get("name", DEFAULT_RESTORER)


def critic_name(config) -> str:
  return config.critic.get("name", DEFAULT_CRITIC)


def restorer_multiple(config) -> int:
  """Input sides the restorer takes without padding are multiples of this."""
  name = restorer_name(config)
  if name == DEFAULT_RESTORER:
    return 2 ** (config.restorer.depth - 1)
  if name == "restormer":
    return 8  # three 2x downsamplings
  if name == "uformer":
    block = config.restorer.uformer
    return uformer_multiple(block.img_size, block.win_size)
  if name in ("swinir", "nafnet"):
    return 1  # they pad inputs themselves, as published
  if name == "dncnn":
    return 1  # stride-1 convolutions only
  raise KeyError(name)


def uformer_multiple(img_size: int, win_size: int, levels: int = 4) -> int:
  """Uformer's input sides: multiples of 2**levels whose every level's
  windows tile it (level i is 1/2**i of the input; its window is win_size,
  or the level's resolution at img_size where that is smaller)."""
  m = 2 ** levels
  for i in range(levels + 1):
    m = math.lcm(m, 2 ** i * min(win_size, img_size // 2 ** i))
  return m


def critic_multiple(config) -> int:
  """Training patch sides must be multiples of this."""
  name = critic_name(config)
  mults = (config.critic.channel_mults if name == DEFAULT_CRITIC
           else config.critic[name].channel_mults)
  return 2 ** (len(mults) - 1)


def patch_multiple(config) -> int:
  return math.lcm(restorer_multiple(config), critic_multiple(config))
