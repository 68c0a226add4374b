"""Model construction from config, and parameter initialisation.

Every field of `config.restorer` / `config.critic` is the attribute of the
same name of `RestorationNet` / `CriticUNet`; the compute dtype comes from
`config.dtype`. Params are a plain pytree keyed by role:
{"restorer": ..., "critic": ...}.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc

from dada_jax.models.critic import CriticUNet
from dada_jax.models.restorer import RestorationNet


def compute_dtype(config: mlc.ConfigDict) -> jnp.dtype:
  return jnp.dtype(config.get("dtype", "float32"))


def _attributes(block: mlc.ConfigDict) -> dict:
  """A model config block as module attributes, named alike; lists become
  tuples, since a Flax module must be hashable."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()}


def make_restorer(config: mlc.ConfigDict) -> RestorationNet:
  return RestorationNet(**_attributes(config.restorer),
                        dtype=compute_dtype(config))


def make_critic(config: mlc.ConfigDict) -> CriticUNet:
  remat = config.train.get("remat", False)
  return CriticUNet(**_attributes(config.critic), dtype=compute_dtype(config),
                    remat_policy=(config.train.get("remat_policy", "")
                                  if remat else None))


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
