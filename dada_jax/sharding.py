"""Device mesh and sharding rules.

The batch is always sharded over the `data` axis. Parameters (and with them
the optimizer state and EMA, which have the same shapes) follow
`config.sharding`:
  replicate  every device holds everything (the default: these U-Nets are
             small next to an accelerator's memory)
  fsdp       each array is split along its largest dimension divisible by
             the `data` axis size; others stay replicated (big_vision's rule)
"""

from __future__ import annotations

import jax
import numpy as np

P = jax.sharding.PartitionSpec
NamedSharding = jax.sharding.NamedSharding
STRATEGIES = ("replicate", "fsdp")


def make_mesh(config, devices=None) -> jax.sharding.Mesh:
  """Mesh from `config.mesh`, e.g. (("data", -1),): -1 takes the rest.

  Fixed sizes whose product is below the device count use the first devices
  (e.g. (("data", 1),) trains on one device of several).
  """
  devices = list(devices if devices is not None else jax.devices())
  names = tuple(name for name, _ in config.mesh)
  sizes = [size for _, size in config.mesh]
  known = int(np.prod([s for s in sizes if s != -1]))
  if sizes.count(-1) > 1 or len(devices) % known:
    raise ValueError(f"config.mesh={config.mesh} does not fit "
                     f"{len(devices)} devices")
  sizes = [len(devices) // known if s == -1 else s for s in sizes]
  if int(np.prod(sizes)) > len(devices):
    raise ValueError(f"config.mesh={config.mesh} needs {int(np.prod(sizes))} "
                     f"devices, have {len(devices)}")
  devices = devices[:int(np.prod(sizes))]
  return jax.make_mesh(tuple(sizes), names, devices=devices,
                       axis_types=(jax.sharding.AxisType.Auto,) * len(names))


def _fsdp_spec(shape, axis_size: int) -> P:
  dims = sorted(range(len(shape)), key=lambda d: -shape[d])
  for d in dims:
    if shape[d] % axis_size == 0 and shape[d] >= axis_size:
      spec = [None] * len(shape)
      spec[d] = "data"
      return P(*spec)
  return P()


def state_shardings(state_shape, mesh, strategy: str):
  """A NamedSharding for every leaf of an abstract state tree."""
  if strategy not in STRATEGIES:
    raise ValueError(f"config.sharding={strategy!r}: expected one of "
                     f"{STRATEGIES}")
  size = mesh.shape["data"]

  def rule(leaf):
    if strategy == "replicate" or not getattr(leaf, "shape", ()):
      return NamedSharding(mesh, P())
    return NamedSharding(mesh, _fsdp_spec(leaf.shape, size))

  return jax.tree.map(rule, state_shape)


def batch_sharding(mesh) -> NamedSharding:
  """Leading (batch) axis over `data`."""
  return NamedSharding(mesh, P("data"))


def replicated(mesh) -> NamedSharding:
  return NamedSharding(mesh, P())


def put_batch(batch: dict, sharding: NamedSharding) -> dict:
  """Host-local numpy batch -> global arrays sharded over `data`."""
  return {k: jax.make_array_from_process_local_data(sharding, v)
          for k, v in batch.items()}


def jit_train_step(step_fn, mesh, state_sharding):
  """`step_fn(state, batch, rng)` jitted for `mesh`: state in
  `state_sharding` (donated), batch over `data`, rng and metrics replicated."""
  repl = replicated(mesh)
  return jax.jit(step_fn, in_shardings=(state_sharding, batch_sharding(mesh),
                                        repl),
                 out_shardings=(state_sharding, repl), donate_argnums=0)
