"""Conversion between the reference `Network.state_dict()` and our params.

The mapping is mechanical (see `dada_jax.models.layers`):
  key   `denoise_fn.input_blocks.1.0.in_layers.2.weight`
  path  critic / input_blocks_1_0 / in_layers_2 / kernel
Module path segments absorb the numeric indices that follow them; leaves are
renamed (`weight` -> `kernel` for convs and linears, `scale` for norms) and
transposed (conv2d OIHW -> HWIO, conv1d OIK -> KIO, linear OI -> IO).

Import is strict, like torch's `load_state_dict(strict=True)`: every missing,
unexpected or wrongly shaped key is named in one error.
"""

from __future__ import annotations

import re

import jax
import ml_collections as mlc
import numpy as np

from dada_jax import diffusion
from dada_jax import errors
from dada_jax import models

PREFIXES = {"RestorationNet": "restorer", "denoise_fn": "critic"}
ROLE_PREFIX = {v: k for k, v in PREFIXES.items()}
SCHEDULE_BUFFERS = ("gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas",
                    "posterior_log_variance_clipped", "posterior_mean_coef1",
                    "posterior_mean_coef2")


class CheckpointMismatch(errors.UserError):
  """A checkpoint that does not fit the configured models."""


def module_segments(dotted: str) -> tuple[str, ...]:
  """'input_blocks.1.0.in_layers.2' -> ('input_blocks_1_0', 'in_layers_2')."""
  segs = []
  for part in dotted.split("."):
    if part.isdigit() and segs:
      segs[-1] += "_" + part
    else:
      segs.append(part)
  return tuple(segs)


def torch_dotted(segments) -> str:
  """Inverse of module_segments."""
  parts = []
  for seg in segments:
    m = re.fullmatch(r"(.*?)((?:_\d+)*)", seg)
    parts.append(m.group(1))
    parts.extend(filter(None, m.group(2).split("_")))
  return ".".join(parts)


def _leaf_from_torch(name: str, value: np.ndarray):
  if name == "bias":
    return "bias", value
  if name != "weight":
    raise KeyError(name)
  transposes = {1: None, 2: (1, 0), 3: (2, 1, 0), 4: (2, 3, 1, 0)}
  if value.ndim == 1:
    return "scale", value
  return "kernel", np.transpose(value, transposes[value.ndim])


def _leaf_to_torch(name: str, value: np.ndarray):
  if name in ("bias", "scale"):
    return "bias" if name == "bias" else "weight", value
  transposes = {2: (1, 0), 3: (2, 1, 0), 4: (3, 2, 0, 1)}
  return "weight", np.transpose(value, transposes[value.ndim])


def split_state_dict(state: dict[str, np.ndarray]):
  """Separates role params from schedule buffers.

  Returns ({role: {flax_path: array}}, {buffer: array}, [unexpected keys]).
  A state dict with no `RestorationNet.`/`denoise_fn.` prefix at all is taken
  as a bare restorer state dict.
  """
  state = {k[len("module."):] if k.startswith("module.") else k: v
           for k, v in state.items()}
  bare = not any(k.split(".", 1)[0] in PREFIXES for k in state)
  roles, buffers, unexpected = {}, {}, []
  for key, value in state.items():
    value = np.asarray(value)
    if key in SCHEDULE_BUFFERS:
      buffers[key] = value
      continue
    head, _, rest = key.partition(".")
    if bare:
      role, rest = "restorer", key
    elif head in PREFIXES and rest:
      role = PREFIXES[head]
    else:
      unexpected.append(key)
      continue
    module, _, leaf = rest.rpartition(".")
    try:
      new_leaf, new_value = _leaf_from_torch(leaf, value)
    except KeyError:
      unexpected.append(key)
      continue
    path = module_segments(module) + (new_leaf,) if module else (new_leaf,)
    roles.setdefault(role, {})[path] = (key, new_value)
  return roles, buffers, unexpected


def _flatten(tree, prefix=()):
  out = {}
  for k, v in tree.items():
    if isinstance(v, dict):
      out.update(_flatten(v, prefix + (k,)))
    else:
      out[prefix + (k,)] = v
  return out


def _unflatten(flat):
  tree = {}
  for path, v in flat.items():
    node = tree
    for k in path[:-1]:
      node = node.setdefault(k, {})
    node[path[-1]] = v
  return tree


def _torch_key(role, path):
  module = torch_dotted(path[:-1])
  leaf = {"kernel": "weight", "scale": "weight", "bias": "bias"}[path[-1]]
  return f"{ROLE_PREFIX[role]}.{module}.{leaf}" if module else (
      f"{ROLE_PREFIX[role]}.{leaf}")


def params_shape(config: mlc.ConfigDict, roles=("restorer", "critic")):
  """The abstract {role: tree} our models initialise for `config`."""
  return jax.eval_shape(
      lambda: models.init_params(config, jax.random.key(0), roles=roles))


def params_from_state_dict(state: dict[str, np.ndarray],
                           config: mlc.ConfigDict, *, source: str = "state",
                           roles=None):
  """Converts a reference state dict to {role: params} for `config`.

  Args:
    state: {torch key: array} from `Network.state_dict()` (both networks and
      the schedule buffers), or a restorer-only subset (`RestorationNet.*` or
      bare `RestorationNet` keys).
    config: the model config the checkpoint must fit.
    source: names the file in error messages.
    roles: roles to convert; default: those present in `state`. Weights of
      other roles are ignored (restoring needs only the restorer).

  Returns:
    {"restorer": tree[, "critic": tree]} of NumPy arrays (float32; a
    BatchNorm restorer's statistics in its tree, see models.split_stats).

  Raises:
    CheckpointMismatch naming every missing, unexpected or misshapen key, or a
    schedule buffer that disagrees with config.diffusion.
  """
  state, own = _take_backbone_keys(state, config)
  found, buffers, unexpected = split_state_dict(state)
  roles = tuple(roles or [r for r in ("restorer", "critic")
                          if r in found or r in own])
  if not roles:
    raise CheckpointMismatch(f"{source}: no RestorationNet or denoise_fn "
                             "weights found")
  params, problems = {}, []
  for role in roles:  # networks that convert their own state dicts
    if _backbone(config, role) is not None:
      try:
        params[role] = _backbone_from_torch(config, role, own.get(role, {}))
      except ValueError as e:
        problems.append(f"{ROLE_PREFIX[role]}: {e}")
  mechanical = tuple(r for r in roles if _backbone(config, r) is None)
  expected = params_shape(config, mechanical) if mechanical else {}
  for role in mechanical:
    want = _flatten(expected[role])
    have = found.get(role, {})
    for path, struct in want.items():
      if path not in have:
        problems.append(f"missing {_torch_key(role, path)} "
                        f"(expected shape {_torch_shape(struct.shape)})")
        continue
      key, value = have[path]
      if value.shape != struct.shape:
        problems.append(f"shape of {key}: checkpoint "
                        f"{_torch_shape(value.shape)}, model expects "
                        f"{_torch_shape(struct.shape)}")
    unexpected += [key for path, (key, _) in have.items() if path not in want]
    params[role] = _unflatten({p: np.asarray(have[p][1], np.float32)
                               for p in want if p in have})
  problems += [f"unexpected {k}" for k in sorted(unexpected)]
  if buffers and "critic" in roles:
    reference = diffusion.schedule_from_config(config.diffusion).buffers()
    for name, value in sorted(buffers.items()):
      if value.shape != reference[name].shape or not np.allclose(
          value, reference[name], rtol=1e-5, atol=1e-7):
        problems.append(f"schedule buffer {name} does not match "
                        f"config.diffusion ({dict(config.diffusion)})")
  if problems:
    raise CheckpointMismatch(
        f"{source} does not fit the config ({len(problems)} problems): "
        + "; ".join(problems))
  return params


def _backbone(config: mlc.ConfigDict, role: str):
  """The module of `role`'s network when it is not the paper's, else None."""
  name, _ = models.network_attributes(config, role)
  table = (models.RESTORER_MODULES if role == "restorer"
           else models.CRITIC_MODULES)
  return table.get(name)


def _take_backbone_keys(state, config):
  """(the rest of `state`, {role: {key without prefix: array}}) for the roles
  whose network converts its own state dict; a prefix-less state dict is a
  restorer's."""
  state = {k[len("module."):] if k.startswith("module.") else k: v
           for k, v in state.items()}
  bare = not any(k.split(".", 1)[0] in PREFIXES for k in state)
  own = {}
  for role in ("restorer", "critic"):
    if _backbone(config, role) is None:
      continue
    prefix = ROLE_PREFIX[role] + "."
    if bare and role == "restorer":
      own[role], state = dict(state), {}
      continue
    own[role] = {k[len(prefix):]: v for k, v in state.items()
                 if k.startswith(prefix)}
    state = {k: v for k, v in state.items() if not k.startswith(prefix)}
  return state, {r: v for r, v in own.items() if v}


def _backbone_from_torch(config, role, state):
  _, attrs = models.network_attributes(config, role)
  variables = _backbone(config, role).params_from_torch(
      {k: np.asarray(v) for k, v in state.items()}, **attrs)
  return models.with_stats(variables["params"], variables.get(models.STATS))


def _torch_shape(flax_shape):
  shape = tuple(flax_shape)
  if len(shape) == 4:
    return (shape[3], shape[2], shape[0], shape[1])
  if len(shape) == 3:
    return (shape[2], shape[1], shape[0])
  if len(shape) == 2:
    return (shape[1], shape[0])
  return shape


def state_dict_from_params(params, config: mlc.ConfigDict | None = None):
  """{role: tree} -> reference state dict {torch key: float32 array}.

  With a critic and a config, the six schedule buffers are added so the
  reference `Network.load_state_dict(strict=True)` accepts the result.
  """
  state = {}
  if "critic" in params and config is not None:
    state.update(diffusion.schedule_from_config(config.diffusion).buffers())
  for role in ("critic", "restorer"):
    if role not in params:
      continue
    module = _backbone(config, role) if config is not None else None
    if module is not None:
      _, attrs = models.network_attributes(config, role)
      tree = models.as_variables(jax.device_get(params[role]))
      for key, value in module.params_to_torch(tree, **attrs).items():
        state[f"{ROLE_PREFIX[role]}.{key}"] = value
      continue
    for path, value in _flatten(jax.device_get(params[role])).items():
      name, arr = _leaf_to_torch(path[-1], np.asarray(value, np.float32))
      module = torch_dotted(path[:-1])
      key = f"{ROLE_PREFIX[role]}.{module}.{name}" if module else (
          f"{ROLE_PREFIX[role]}.{name}")
      state[key] = np.ascontiguousarray(arr)
  return state
