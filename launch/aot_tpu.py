"""Ahead-of-time compiles the train step for a TPU slice, without a TPU.

Needs `libtpu` (`pip install -e ".[tpu]"`; jax 0.10.2 works with libtpu
0.0.52 and 0.0.42.1); the compile runs on this host's CPU against a
described topology, so it works on any machine. Prints a markdown table of
per-device memory from XLA's memory analysis, one row per case of the grid
topology x batch x sharding x dtype x remat:

  python launch/aot_tpu.py --config configs/denoise.py --topology v5e:4x4 \\
      --batch 192 --sharding replicate,fsdp --dtype float32,bfloat16 \\
      --remat off,on --json /tmp/aot.jsonl

`--topology` is a libtpu topology name, e.g. v5e:2x2, v5e:4x4, v4:2x2x4,
v5p:2x2x2, v6e:4x4. `--remat`: off, on (recompute every critic ResBlock) or
a jax.checkpoint_policies name (remat with that policy, e.g.
dots_saveable). `--max-batch` searches, per case, the largest global batch
(a multiple of the data-axis size) whose step fits the chip's HBM.
`--config.a.b=value` overrides a config field.

Compile time: on TPU almost all of it is libtpu's backend emitting the
convolution fusions (seconds each, growing with the spatial size; see
launch/results/tpu_aot/README.md). The paper config takes tens of CPU
minutes per case: use a host with many cores. `--libtpu-log` shows libtpu's
stage durations.
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
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
GIB = 2 ** 30

# HBM per chip (what one device of the topology addresses), by device_kind.
HBM_GIB = {"TPU v4": 32, "TPU v5 lite": 16, "TPU v5": 95, "TPU v5p": 95,
           "TPU v6 lite": 32}

HEADER = ("| topology | devices | global batch | sharding | dtype | remat | "
          "argument MiB | output MiB | alias MiB | temp MiB | peak MiB | "
          "HBM GiB | fits | compile s |")
RULE = ("| --- | ---: | ---: | --- | --- | --- | ---: | ---: | ---: | ---: | "
        "---: | ---: | --- | ---: |")


def case_config(config, strategy: str, dtype: str, remat: str):
  """A copy of `config` with the case's sharding, dtype and remat."""
  config = config.copy_and_resolve_references()
  config.sharding = strategy
  config.dtype = dtype
  config.train.remat = remat != "off"
  config.train.remat_policy = "" if remat in ("off", "on") else remat
  # Fixed α schedule: it is traced from the step counter either way.
  config.objective.update(steps_per_epoch=max(config.objective.steps_per_epoch,
                                              0),
                          ramp_steps=max(config.objective.ramp_steps, 1))
  return config


def compile_step(config, devices, batch: int, strategy: str):
  """Lowers and compiles the train step; returns (compiled, seconds)."""
  config = config.copy_and_resolve_references()
  config.sharding = strategy
  mesh = sharding.make_mesh(config, devices)
  if batch % mesh.shape["data"]:
    raise ValueError(f"--batch {batch} is not divisible by the "
                     f"{mesh.shape['data']} devices of the data axis")
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


def is_oom(error: Exception) -> bool:
  text = str(error)
  return ("RESOURCE_EXHAUSTED" in text or "exceeds" in text.lower()
          or "Ran out of memory" in text)


def run_case(config, topology: str, devices, batch: int, strategy: str,
             dtype: str, remat: str) -> dict:
  """Compiles one case; returns its row as a dict (fits False on an OOM)."""
  hbm = HBM_GIB.get(devices[0].device_kind)
  row = {"topology": topology, "devices": len(devices),
         "device_kind": devices[0].device_kind, "global_batch": batch,
         "sharding": strategy, "dtype": dtype, "remat": remat,
         "hbm_gib": hbm, "config": None}
  cfg = case_config(config, strategy, dtype, remat)
  start = time.perf_counter()
  try:
    compiled, seconds = compile_step(cfg, devices, batch, strategy)
  except Exception as e:  # pylint: disable=broad-except
    if not is_oom(e):
      raise
    row.update(fits=False, compile_s=time.perf_counter() - start,
               error=str(e).strip().splitlines()[0][:500])
    return row
  m = compiled.memory_analysis()
  # Donated state aliases its output; what stays live at the peak is the
  # arguments, the outputs that do not alias one, and the temporaries.
  peak = (m.argument_size_in_bytes + m.output_size_in_bytes
          - m.alias_size_in_bytes + m.temp_size_in_bytes)
  row.update(argument_mib=m.argument_size_in_bytes / MIB,
             output_mib=m.output_size_in_bytes / MIB,
             alias_mib=m.alias_size_in_bytes / MIB,
             temp_mib=m.temp_size_in_bytes / MIB, peak_mib=peak / MIB,
             code_mib=m.generated_code_size_in_bytes / MIB,
             compile_s=seconds,
             fits=None if hbm is None else peak <= hbm * GIB)
  return row


def markdown_row(row: dict) -> str:
  mem = ["argument_mib", "output_mib", "alias_mib", "temp_mib", "peak_mib"]
  cells = [row["topology"], str(row["devices"]), str(row["global_batch"]),
           row["sharding"], row["dtype"], row["remat"]]
  if "peak_mib" in row:
    cells += [f"{row[k]:,.1f}" for k in mem]
  else:
    cells += ["—"] * len(mem)
  cells.append("?" if row["hbm_gib"] is None else str(row["hbm_gib"]))
  fits = {True: "yes", False: "no", None: "?"}[row["fits"]]
  if row["fits"] is False and "error" in row:
    fits = "no (compile OOM)"
  cells += [fits, f"{row['compile_s']:.0f}"]
  return "| " + " | ".join(cells) + " |"


def max_batch(config, topology, devices, strategy, dtype, remat, start: int,
              emit) -> int:
  """Largest global batch (a multiple of the data axis) that fits: doubles
  from `start` until a case does not fit, then bisects. 0 if none fits."""
  unit = sharding.make_mesh(config, devices).shape["data"]
  fits_at = {}

  def fits(b):
    if b not in fits_at:
      row = run_case(config, topology, devices, b, strategy, dtype, remat)
      emit(row)
      fits_at[b] = bool(row["fits"])
    return fits_at[b]

  lo, hi = 0, max(unit, start // unit * unit)
  while fits(hi):
    lo, hi = hi, hi * 2
  while hi - lo > unit:
    mid = (lo + hi) // 2 // unit * unit
    if fits(mid):
      lo = mid
    else:
      hi = mid
  return lo


def topology_devices(topology: str) -> list:
  """The devices of a libtpu topology, one per chip: v4 and v5p chips have
  two TensorCores, which JAX drives as one megacore device."""
  devices = list(topologies.get_topology_desc(topology_name=topology,
                                              platform="tpu").devices)
  if any(getattr(d, "core_on_chip", 0) for d in devices):
    devices = list(topologies.get_topology_desc(
        topology_name=topology, platform="tpu",
        chip_config_name="megacore").devices)
  return devices


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  parser = argparse.ArgumentParser(
      description=__doc__.split("\n", 1)[0],
      epilog="--config.a.b=value overrides a config field")
  parser.add_argument("--config", default="configs/denoise.py",
                      help="config file[:arg]")
  parser.add_argument("--topology", default="v5e:4x4",
                      help="comma-separated libtpu topology names")
  parser.add_argument("--batch", default="0",
                      help="comma-separated global batches (0: "
                           "config.data.batch_size)")
  parser.add_argument("--sharding", default="replicate,fsdp",
                      help="comma-separated rules from dada_jax.sharding")
  parser.add_argument("--dtype", default="",
                      help="comma-separated compute dtypes (default: "
                           "config.dtype)")
  parser.add_argument("--remat", default="",
                      help="comma-separated: off, on or a "
                           "jax.checkpoint_policies name (default: config)")
  parser.add_argument("--max-batch", action="store_true",
                      help="per case, search the largest batch that fits, "
                           "starting from --batch")
  parser.add_argument("--json", default="",
                      help="append one JSON line per compiled case here")
  args = parser.parse_args([a for a in argv if not a.startswith("--config.")])
  config = config_lib.load_config(args.config, overrides)
  batches = [int(b) or config.data.batch_size for b in args.batch.split(",")]
  dtypes = args.dtype.split(",") if args.dtype else [config.dtype]
  if args.remat:
    remats = args.remat.split(",")
  else:
    remats = [(config.train.remat_policy or "on") if config.train.remat
              else "off"]
  print(f"{args.config} {' '.join('--config.' + o for o in overrides)}: "
        f"patch {config.data.patch_size}x{config.data.patch_size}, "
        f"libtpu AOT compile on {os.cpu_count()} CPU cores\n")
  print(HEADER)
  print(RULE, flush=True)

  def emit(row):
    row["config"] = args.config
    row["overrides"] = overrides
    print(markdown_row(row), flush=True)
    if args.json:
      with open(args.json, "a") as f:
        f.write(json.dumps(row) + "\n")

  for topology in args.topology.split(","):
    devices = topology_devices(topology)
    for batch, strategy, dtype, remat in itertools.product(
        batches, args.sharding.split(","), dtypes, remats):
      if args.max_batch:
        best = max_batch(config, topology, devices, strategy, dtype, remat,
                         batch, emit)
        print(f"<!-- {topology} {strategy} {dtype} remat={remat}: largest "
              f"global batch that fits: {best} -->", flush=True)
      else:
        emit(run_case(config, topology, devices, batch, strategy, dtype,
                      remat))
  return 0


if __name__ == "__main__":
  sys.exit(main())
