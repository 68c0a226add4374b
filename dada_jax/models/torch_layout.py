"""Strict conversion between a torch module's state_dict and Flax variables,
given the module's layout (as the Swin-style restorers describe theirs).

`check_state` is torch's strict key and shape check alone, for networks
that convert their own leaves (Restormer, NAFNet, DnCNN). A layout is
({torch key: (flax path, torch shape)} of the parameters,
{torch key: array} of the buffers the module recomputes: relative position
indices, attention masks). Kernels: linear [out, in] <-> [in, out], conv
OIHW <-> HWIO; everything else as is.
"""

from __future__ import annotations

from collections.abc import Mapping

import jax
import numpy as np


def check_state(state: Mapping[str, np.ndarray],
                expected: Mapping[str, tuple[int, ...]]) -> None:
  """Raises one ValueError naming every missing, unexpected and misshapen
  key of `state` against {key: shape} `expected` (torch's strict load)."""
  missing = sorted(k for k in expected if k not in state)
  unexpected = sorted(k for k in state if k not in expected)
  misshapen = sorted(
      f"{k} {tuple(np.shape(state[k]))} (expected {expected[k]})"
      for k in expected
      if k in state and tuple(np.shape(state[k])) != expected[k])
  problems = [f"{what}: {', '.join(keys)}" for what, keys in (
      ("missing", missing), ("unexpected", unexpected),
      ("misshapen", misshapen)) if keys]
  if problems:
    raise ValueError("state dict does not fit the model; "
                     + "; ".join(problems))


def _from_torch(name: str, value: np.ndarray) -> np.ndarray:
  if name == "kernel":
    return value.T if value.ndim == 2 else value.transpose(2, 3, 1, 0)
  return value


def _to_torch(name: str, value: np.ndarray) -> np.ndarray:
  if name == "kernel":
    return value.T if value.ndim == 2 else value.transpose(3, 2, 0, 1)
  return value


def variables_from_torch(state: Mapping[str, np.ndarray], params: dict,
                         buffers: dict, network: str) -> dict:
  """{"params": tree} (float32) from `state`, strict like torch's
  `load_state_dict(strict=True)`: one ValueError names every missing,
  unexpected and misshapen key and every buffer that differs from the
  recomputed one."""
  problems = [f"missing {k}" for k in sorted(set(params) | set(buffers))
              if k not in state]
  problems += [f"unexpected {k}" for k in state
               if k not in params and k not in buffers]
  tree = {}
  for key, (path, shape) in params.items():
    if key not in state:
      continue
    value = np.asarray(state[key])
    if value.shape != shape:
      problems.append(f"misshapen {key}: {value.shape}, expected {shape}")
      continue
    node = tree
    for seg in path[:-1]:
      node = node.setdefault(seg, {})
    node[path[-1]] = _from_torch(path[-1], value.astype(np.float32))
  for key, expected in buffers.items():
    if key not in state:
      continue
    value = np.asarray(state[key])
    if value.shape != expected.shape:
      problems.append(f"misshapen {key}: {value.shape}, expected "
                      f"{expected.shape}")
    elif not np.array_equal(value, expected):
      problems.append(f"buffer {key} differs from the recomputed one")
  if problems:
    raise ValueError(f"{network} state_dict does not fit the model "
                     f"({len(problems)} problems): " + "; ".join(problems))
  return {"params": tree}


def variables_to_torch(variables, params: dict, buffers: dict,
                       network: str) -> dict[str, np.ndarray]:
  """The module's state_dict (float32 parameters, buffers as recomputed)
  from {"params": tree} (a bare params tree is accepted too)."""
  tree = variables["params"] if set(variables) == {"params"} else variables
  flat = {tuple(p.key for p in path): leaf for path, leaf in
          jax.tree_util.tree_flatten_with_path(tree)[0]}
  wanted = {path for path, _ in params.values()}
  if set(flat) != wanted:
    names = sorted("/".join(p) for p in set(flat) ^ wanted)
    raise ValueError(f"{network} params do not fit the model: {names}")
  state = {key: _to_torch(path[-1], np.asarray(flat[path], np.float32))
           for key, (path, _) in params.items()}
  state.update({k: v.copy() for k, v in buffers.items()})
  return state
