"""Model construction from config, and parameter initialisation.

`config.restorer.name` / `config.critic.name` pick the networks (see
dada_jax.backbones): by default the paper's `RestorationNet` /
`CriticUNet`, whose attributes are the fields of the same name at the top of
the block; another network takes its attributes from `config.<role>.<name>`.
The compute dtype comes from `config.dtype`. Params are a plain pytree keyed
by role: {"restorer": ..., "critic": ...}.

A network with BatchNorm (DnCNN) also has running statistics. Outside the
train state (which keeps them apart from the optimised params, as
`state["batch_stats"]`) a network's *weights* carry them under the key
STATS beside its modules, so that one tree per role holds everything its
state dict holds: `as_variables(weights)` gives what `Module.apply` takes,
`split_stats` / `with_stats` go between the two forms. For every other
network weights and params are the same tree.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import ml_collections as mlc

from dada_jax import backbones
from dada_jax.models import dncnn
from dada_jax.models import nafnet
from dada_jax.models import restormer
from dada_jax.models import sr3_critic
from dada_jax.models import swinir
from dada_jax.models import uformer
from dada_jax.models.critic import CriticUNet
from dada_jax.models.restorer import RestorationNet

# name -> the module defining the network (its class, pad rule, converters).
RESTORER_MODULES = {"restormer": restormer, "uformer": uformer,
                    "swinir": swinir, "nafnet": nafnet, "dncnn": dncnn}
CRITIC_MODULES = {"sr3": sr3_critic}
_CLASSES = {"restormer": restormer.Restormer, "uformer": uformer.Uformer,
            "swinir": swinir.SwinIR, "nafnet": nafnet.NAFNet,
            "dncnn": dncnn.DnCNN,
            "sr3": sr3_critic.SR3UNet}


STATS = "batch_stats"  # a network's BatchNorm statistics in its weights


def split_stats(weights):
  """(params, batch statistics or None) of one network's weights."""
  if STATS not in weights:
    return weights, None
  return {k: v for k, v in weights.items() if k != STATS}, weights[STATS]


def with_stats(params, stats):
  """One network's weights from its params and its statistics (or None)."""
  return params if stats is None else {**params, STATS: stats}


def as_variables(weights) -> dict:
  """The Flax variables `Module.apply` takes for one network's weights."""
  params, stats = split_stats(weights)
  return {"params": params} if stats is None else {"params": params,
                                                     STATS: stats}


def compute_dtype(config: mlc.ConfigDict) -> jnp.dtype:
  return jnp.dtype(config.get("dtype", "float32"))


def _attributes(block: mlc.ConfigDict) -> dict:
  """A model config block as module attributes, named alike; lists become
  tuples, since a Flax module must be hashable. The other networks' blocks
  and `name` are left out."""
  return {k: tuple(v) if isinstance(v, list) else v for k, v in block.items()
          if k != "name" and not isinstance(v, mlc.ConfigDict)}


def network_attributes(config: mlc.ConfigDict, role: str) -> tuple[str, dict]:
  """(name, attributes) of the `role` network ("restorer" or "critic")."""
  name = (backbones.restorer_name(config) if role == "restorer"
          else backbones.critic_name(config))
  block = config[role]
  if name in (backbones.DEFAULT_RESTORER, backbones.DEFAULT_CRITIC):
    return name, _attributes(block)
  return name, _attributes(block[name])


def make_restorer(config: mlc.ConfigDict):
  name, attrs = network_attributes(config, "restorer")
  cls = RestorationNet if name == backbones.DEFAULT_RESTORER else (
      _CLASSES[name])
  return cls(**attrs, dtype=compute_dtype(config))


def make_critic(config: mlc.ConfigDict):
  name, attrs = network_attributes(config, "critic")
  if name != backbones.DEFAULT_CRITIC:
    return _CLASSES[name](**attrs, dtype=compute_dtype(config))
  remat = config.train.get("remat", False)
  return CriticUNet(**attrs, dtype=compute_dtype(config),
                    remat_policy=(config.train.get("remat_policy", "")
                                  if remat else None))


def pad_multiple(config: mlc.ConfigDict) -> int:
  """Spatial sizes the restorer takes without padding are multiples of this."""
  return backbones.restorer_multiple(config)


def critic_in_channels(config: mlc.ConfigDict) -> int:
  name, attrs = network_attributes(config, "critic")
  return attrs["in_channels" if name == backbones.DEFAULT_CRITIC
               else "in_channel"]


def init_params(config: mlc.ConfigDict, rng: jax.Array,
                size: int | None = None, roles=("restorer", "critic")):
  """Initialises {"restorer", "critic"} weights on a size x size input:
  float32 params, and BatchNorm statistics where a network has them (see
  `split_stats`).

  Parameter shapes do not depend on `size`; it only has to be a multiple of
  the networks' total downsampling (default: the least multiple of it and
  of 32, e.g. 128 for Uformer at its default sizes).
  """
  if size is None:
    size = math.lcm(backbones.patch_multiple(config), 32)
  r_rng, c_rng = jax.random.split(rng)
  params = {}
  if "restorer" in roles:
    x = jnp.zeros((1, size, size, 3), jnp.float32)
    variables = make_restorer(config).init(r_rng, x)
    params["restorer"] = with_stats(variables["params"],
                                    variables.get(STATS))
  if "critic" in roles:
    x = jnp.zeros((1, size, size, critic_in_channels(config)), jnp.float32)
    g = jnp.zeros((1,), jnp.float32)
    params["critic"] = make_critic(config).init(c_rng, x, g)["params"]
  return params


def count_params(tree) -> int:
  """Elements of a params or weights tree, BatchNorm statistics left out."""
  if isinstance(tree, dict):
    return sum(count_params(v) for k, v in tree.items() if k != STATS)
  return sum(int(x.size) for x in jax.tree.leaves(tree))
