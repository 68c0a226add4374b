"""Model construction from config, and parameter initialisation.

Params are a plain pytree keyed by role: {"restorer": ..., "critic": ...}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc

from dada_jax.models.critic import CriticUNet
from dada_jax.models.restorer import RestorationNet


def compute_dtype(config: mlc.ConfigDict):
  return jnp.dtype(config.get("dtype", "float32"))


def make_restorer(config: mlc.ConfigDict) -> RestorationNet:
  r = config.restorer
  return RestorationNet(out_channels=3, depth=r.depth, wf=r.wf, slope=r.slope,
                        last_init=r.last_init, dtype=compute_dtype(config))


def make_critic(config: mlc.ConfigDict) -> CriticUNet:
  c = config.critic
  return CriticUNet(
      in_channels=c.in_channels, out_channels=c.out_channels,
      inner_channels=c.inner_channels, channel_mults=tuple(c.channel_mults),
      res_blocks=c.res_blocks, attn_res=tuple(c.attn_res),
      num_head_channels=c.num_head_channels, dropout=c.dropout,
      use_scale_shift_norm=c.use_scale_shift_norm,
      resblock_updown=c.resblock_updown, conv_resample=c.conv_resample,
      zero_init_outputs=c.zero_init_outputs, dtype=compute_dtype(config))


def pad_multiple(config: mlc.ConfigDict) -> int:
  """Spatial sizes the restorer takes without padding are multiples of this."""
  return 2 ** (config.restorer.depth - 1)


def init_params(config: mlc.ConfigDict, rng: jax.Array, size: int = 32,
                roles=("restorer", "critic")):
  """Initialises {"restorer", "critic"} params (float32) on a size x size input.

  Parameter shapes do not depend on `size`; it only has to be a multiple of
  the networks' total downsampling.
  """
  r_rng, c_rng = jax.random.split(rng)
  params = {}
  if "restorer" in roles:
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    params["restorer"] = make_restorer(config).init(r_rng, x)["params"]
  if "critic" in roles:
    x = jnp.zeros((1, size, size, config.critic.in_channels), jnp.float32)
    g = jnp.zeros((1,), jnp.float32)
    params["critic"] = make_critic(config).init(c_rng, x, g)["params"]
  return params


def count_params(tree) -> int:
  return sum(int(x.size) for x in jax.tree.leaves(tree))
