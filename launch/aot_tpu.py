"""Ahead-of-time compiles the train step for a TPU slice, without a TPU.

Needs `libtpu` (`pip install -e ".[tpu]"`); the compile runs on this host's
CPU against a described topology, so it works on any machine. Prints per-device
memory from XLA's memory analysis for each sharding rule:

  python launch/aot_tpu.py --config configs/denoise.py --topology v5e:4x4 \\
      --batch 192 --config.train.remat=True

`--topology` is a libtpu topology name, e.g. v5e:2x2, v5e:4x4, v4:2x2x2,
v5p:2x2x2, v6e:4x4. `--config.a.b=value` overrides a config field.
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

# A compile-only TPU topology needs no TPU backend; keep jax on the CPU.
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
from jax.experimental import topologies  # pylint: disable=g-import-not-at-top

from dada_jax import config_lib  # pylint: disable=g-import-not-at-top
from dada_jax import sharding  # pylint: disable=g-import-not-at-top
from dada_jax import train_step as step_lib  # pylint: disable=g-import-not-at-top

MIB = 2 ** 20


def compile_step(config, devices, batch: int, strategy: str):
  """Lowers and compiles the train step; returns (compiled, seconds)."""
  config = config.copy_and_resolve_references()
  config.sharding = strategy
  mesh = sharding.make_mesh(config, devices)
  if batch % mesh.shape["data"]:
    raise ValueError(f"--batch {batch} is not divisible by the "
                     f"{mesh.shape['data']} devices of the data axis")
  # Fixed α schedule: it is traced from the step counter either way.
  config.objective.update(steps_per_epoch=max(config.objective.steps_per_epoch,
                                              0),
                          ramp_steps=max(config.objective.ramp_steps, 1))
  rng = jax.eval_shape(jax.random.key, 0)
  state_shape = jax.eval_shape(
      functools.partial(step_lib.init_state, config), rng)
  state_sh = sharding.state_shardings(state_shape, mesh, strategy)
  batch_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  abstract = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  state = jax.tree.map(abstract, state_shape, state_sh)
  p = config.data.patch_size
  image = jax.ShapeDtypeStruct((batch, p, p, 3), jnp.float32,
                               sharding=batch_sh)
  keys = ["syn_lq", "syn_gt", "real_lq"]
  if config.objective.mode == "dda_ex":
    keys.append("ref_clean")
  step = jax.jit(step_lib.make_train_step(config),
                 in_shardings=(state_sh, batch_sh, repl),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  start = time.perf_counter()
  with jax.set_mesh(mesh):
    compiled = step.lower(state, {k: image for k in keys},
                          abstract(rng, repl)).compile()
  return compiled, time.perf_counter() - start


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n", 1)[0],
      epilog="--config.a.b=value overrides a config field")
  parser.add_argument("--config", default="configs/denoise.py",
                      help="config file[:arg]")
  parser.add_argument("--topology", default="v5e:4x4",
                      help="libtpu topology name, e.g. v5e:4x4")
  parser.add_argument("--batch", type=int, default=0,
                      help="global batch (default: config.data.batch_size)")
  parser.add_argument("--sharding", default="replicate,fsdp",
                      help="comma-separated rules from dada_jax.sharding")
  args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
  config = config_lib.load_config(args.config, overrides)
  batch = args.batch or config.data.batch_size
  topo = topologies.get_topology_desc(topology_name=args.topology,
                                      platform="tpu")
  devices = list(topo.devices)
  print(f"{args.config}: {args.topology}, {len(devices)} x "
        f"{devices[0].device_kind}, global batch {batch} of "
        f"{config.data.patch_size}x{config.data.patch_size}, "
        f"dtype {config.dtype}, critic remat {config.train.remat}\n")
  print("| topology | devices | global batch | sharding | argument MiB | "
        "output MiB | alias MiB | temp MiB | peak MiB | compile s |")
  print("| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
  for strategy in args.sharding.split(","):
    compiled, seconds = compile_step(config, devices, batch, strategy)
    m = compiled.memory_analysis()
    # Donated state aliases its output; what stays live at the peak is the
    # arguments, the outputs that do not alias one, and the temporaries.
    peak = (m.argument_size_in_bytes + m.output_size_in_bytes
            - m.alias_size_in_bytes + m.temp_size_in_bytes)
    cols = [m.argument_size_in_bytes, m.output_size_in_bytes,
            m.alias_size_in_bytes, m.temp_size_in_bytes, peak]
    print(f"| {args.topology} | {len(devices)} | {batch} | {strategy} | "
          + " | ".join(f"{c / MIB:,.1f}" for c in cols)
          + f" | {seconds:.0f} |", flush=True)
  return 0


if __name__ == "__main__":
  sys.exit(main())
