"""`dada-jax bench`: step time, throughput, compile time, FLOPs and memory.

  dada-jax bench --config configs/denoise.py --batch 3 --size 128 \
      [--modes dda,vanilla] [--dtypes float32,bfloat16] [--restore-sizes 512]
      [--peak-tflops 989] [--torch-reference ~/Noise-DA] [--json OUT.json]

Every timed call is synchronised with `block_until_ready`; compilation and
`--warmup` calls are excluded from the step statistics. One "image" is one
training sample: a synthetic pair plus a real image in DDA, as in the
reference's batch. FLOPs per step (all devices) come from XLA's cost
analysis of the lowered step, before backend-specific rewrites.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import resource
import statistics
import time
from typing import Sequence

import jax
import ml_collections as mlc
import numpy as np

from dada_jax import backbones
from dada_jax import errors
from dada_jax import outputs


class BenchError(errors.UserError):
  """A bench flag that cannot be used; the message names it."""


@dataclasses.dataclass
class Result:
  case: str                 # "train dda", "train vanilla", "restore 512²", ...
  dtype: str
  batch: int
  size: int
  step_time_median_s: float
  step_time_min_s: float
  step_time_max_s: float
  images_per_s: float
  compile_s: float
  flops_per_step: float | None = None
  tflops_per_s: float | None = None
  peak_fraction: float | None = None
  device_peak_bytes: int | None = None
  temp_bytes: int | None = None
  profile: dict | None = None  # --profile: seconds by op class (profile.py)
  mode: str | None = None  # the objective mode of a train case


def _time_calls(fn, steps: int, warmup: int):
  """Runs fn() warmup + steps times; returns the timed durations (s)."""
  for _ in range(warmup):
    jax.block_until_ready(fn())
  times = []
  for _ in range(steps):
    start = time.perf_counter()
    jax.block_until_ready(fn())
    times.append(time.perf_counter() - start)
  return times


def _flops(lowered, compiled) -> float | None:
  """FLOPs of one call from XLA's HLO cost analysis.

  The lowered (pre-optimisation) program is analysed first: it holds every
  convolution as an HLO op on every backend, whereas after GPU compilation
  convolutions are cuDNN custom calls that the analysis does not count.
  """
  for stage in (lowered, compiled):
    try:
      cost = stage.cost_analysis()
    except Exception:  # pylint: disable=broad-except
      continue  # not every backend implements it
    if isinstance(cost, (list, tuple)):
      cost = cost[0] if cost else None
    flops = (cost or {}).get("flops")
    if flops and flops > 0:
      return float(flops)
  return None


def _temp_bytes(compiled) -> int | None:
  try:
    return int(compiled.memory_analysis().temp_size_in_bytes)
  except Exception:  # pylint: disable=broad-except
    return None


def _device_peak_bytes() -> int | None:
  stats = jax.local_devices()[0].memory_stats() or {}
  peak = stats.get("peak_bytes_in_use")
  return int(peak) if peak is not None else None


def _result(case, dtype, batch, size, times, compile_s, flops, peak_tflops,
            temp):
  med = statistics.median(times)
  r = Result(case=case, dtype=dtype, batch=batch, size=size,
             step_time_median_s=med, step_time_min_s=min(times),
             step_time_max_s=max(times), images_per_s=batch / med,
             compile_s=compile_s, flops_per_step=flops, temp_bytes=temp,
             device_peak_bytes=_device_peak_bytes())
  if flops:
    r.tflops_per_s = flops / med / 1e12
    if peak_tflops:
      r.peak_fraction = r.tflops_per_s / peak_tflops
  return r


def _random_batch(mode: str, batch: int, size: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  keys = ["syn_lq", "syn_gt"] + ([] if mode == "vanilla" else ["real_lq"])
  keys += ["ref_clean"] if mode == "dda_ex" else []
  return {k: rng.random((batch, size, size, 3), np.float32) for k in keys}


def bench_train_step(config: mlc.ConfigDict, mode: str, batch: int, size: int,
                     steps: int, warmup: int, peak_tflops=None,
                     profile_dir: str | None = None) -> Result:
  """Times the jit-compiled, sharded, donated train step of `mode`; with
  `profile_dir`, then profiles one more call there (bench.profile)."""
  from dada_jax import sharding  # pylint: disable=g-import-not-at-top
  from dada_jax import train_step as step_lib  # pylint: disable=g-import-not-at-top
  config = copy.deepcopy(config)
  config.objective.mode = mode
  if config.objective.ramp_steps <= 0:
    config.objective.update(ramp_steps=1000, steps_per_epoch=0)
  mesh = sharding.make_mesh(config)
  init = lambda rng: step_lib.init_state(config, rng)
  state_shape = jax.eval_shape(init, jax.random.key(0))
  state_sharding = sharding.state_shardings(state_shape, mesh, config.sharding)
  state = jax.jit(init, out_shardings=state_sharding)(jax.random.key(0))
  batch_sharding = sharding.batch_sharding(mesh)
  data = sharding.put_batch(_random_batch(mode, batch, size), batch_sharding)
  rng = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
  step = sharding.jit_train_step(step_lib.make_train_step(config), mesh,
                                 state_sharding)
  start = time.perf_counter()
  lowered = step.lower(state, data, rng)
  compiled = lowered.compile()
  compile_s = time.perf_counter() - start
  holder = [state]

  def call():
    holder[0], metrics = compiled(holder[0], data, rng)
    return metrics

  times = _time_calls(call, steps, warmup)
  result = _result(f"train {mode}", config.dtype, batch, size, times,
                   compile_s, _flops(lowered, compiled), peak_tflops,
                   _temp_bytes(compiled))
  result.mode = mode
  if profile_dir:
    from dada_jax.bench import profile  # pylint: disable=g-import-not-at-top
    result.profile = profile.profile_jax_step(call, compiled.as_text(),
                                              profile_dir)
  return result


def bench_restore(config: mlc.ConfigDict, side: int, steps: int, warmup: int,
                  peak_tflops=None) -> Result:
  """Times `predict.restore_array` on one side x side image (host to host,
  tiled as `dada-jax restore` would tile it)."""
  from dada_jax import models  # pylint: disable=g-import-not-at-top
  from dada_jax import predict  # pylint: disable=g-import-not-at-top
  params = models.init_params(config, jax.random.key(0), roles=("restorer",))
  image = np.random.default_rng(0).random((side, side, 3), np.float32)
  call = lambda: predict.restore_array(config, params["restorer"], image)
  start = time.perf_counter()
  call()
  first = time.perf_counter() - start
  times = _time_calls(call, steps, warmup)
  compile_s = max(first - statistics.median(times), 0.0)
  return _result(f"restore {side}²", config.dtype, 1, side, times, compile_s,
                 None, peak_tflops, None)


def _fmt(v, spec):
  return "-" if v is None else format(v, spec)


def table(results: list[Result]) -> str:
  head = ("| case | dtype | batch | size | median s | min s | max s | "
          "images/s | compile s | GFLOP/step | TFLOP/s | % peak | "
          "device peak GiB |")
  rows = [head, "|" + " --- |" * (head.count("|") - 1)]
  for r in results:
    rows.append(
        f"| {r.case} | {r.dtype} | {r.batch} | {r.size} | "
        f"{r.step_time_median_s:.4f} | {r.step_time_min_s:.4f} | "
        f"{r.step_time_max_s:.4f} | {r.images_per_s:.2f} | "
        f"{r.compile_s:.1f} | "
        f"{_fmt(r.flops_per_step and r.flops_per_step / 1e9, '.1f')} | "
        f"{_fmt(r.tflops_per_s, '.2f')} | "
        f"{_fmt(r.peak_fraction and 100 * r.peak_fraction, '.1f')} | "
        f"{_fmt(r.device_peak_bytes and r.device_peak_bytes / 2**30, '.2f')} |")
  return "\n".join(rows)


def environment() -> dict:
  dev = jax.devices()[0]
  return {"backend": jax.default_backend(), "device": dev.device_kind,
          "num_devices": jax.device_count(), "jax_version": jax.__version__,
          "cpu_count": os.cpu_count(), "python": platform.python_version()}


def network_sizes(config: mlc.ConfigDict) -> dict[str, tuple[str, int]]:
  """{role: (network name, parameter count)} (abstract init: no memory)."""
  from dada_jax import models  # pylint: disable=g-import-not-at-top
  size = math.lcm(backbones.patch_multiple(config), 32)
  shapes = jax.eval_shape(lambda: models.init_params(
      config, jax.random.key(0), size=size))
  return {role: (models.network_attributes(config, role)[0],
                 models.count_params(shapes[role]))
          for role in ("restorer", "critic")}


def run(config: mlc.ConfigDict, *, batch: int | None = None,
        size: int | None = None, modes: Sequence[str] = ("dda", "vanilla"),
        dtypes: Sequence[str] | None = None,
        restore_sizes: Sequence[int] = (512, 2048), steps: int = 10,
        warmup: int = 2, peak_tflops: float | None = None,
        torch_reference: str | None = None, torch_device: str = "cpu",
        torch_small: bool = False, torch_amp: bool = False,
        json_path: str | None = None, overwrite: bool = False,
        config_name: str | None = None, profile_dir: str | None = None) -> int:
  """Times train steps and restoration; prints the tables.

  Every argument is checked before anything is timed; the messages name the
  `dada-jax bench` flags.

  Args:
    config: the model config timed.
    batch: global batch (None: config.data.batch_size).
    size: patch side (None: config.data.patch_size).
    modes: train steps to time, `objective.MODES` names; empty names are
      skipped.
    dtypes: compute dtypes, float32 and/or bfloat16 (None: config.dtype).
    restore_sizes: square image sides to restore.
    steps: timed calls per case.
    warmup: untimed calls after compilation.
    peak_tflops: the device's peak TFLOP/s, for the achieved fraction.
    torch_reference: a checkout of the official PyTorch code: its dda and
      vanilla train steps are timed too, at the same batch and size.
    torch_device: where the reference runs, "cpu" or "cuda".
    torch_small: build the reference at the runlocal test size.
    torch_amp: also time the reference under bf16 autocast.
    json_path: write the figures there as JSON.
    overwrite: replace `json_path` if it exists.
    config_name: how the config was given, recorded in the JSON.
    profile_dir: profile one more call of each train step (and of the
      reference's) there and print where the time goes by op class.

  Returns:
    0.
  """
  batch = config.data.batch_size if batch is None else batch
  size = config.data.patch_size if size is None else size
  if batch <= 0 or size <= 0:
    raise BenchError(f"--batch {batch} / --size {size}: must be positive")
  if size % backbones.patch_multiple(config):
    raise BenchError(f"--size {size}: must be a multiple of "
                     f"{backbones.patch_multiple(config)}, the networks' "
                     "total downsampling")
  modes_text, modes = ",".join(modes), [m for m in modes if m]
  from dada_jax import objective  # pylint: disable=g-import-not-at-top
  bad = [m for m in modes if m not in objective.MODES]
  if bad:
    raise BenchError(f"--modes {modes_text}: unknown {bad}; expected some of "
                     f"{list(objective.MODES)}")
  dtypes = list(dtypes) if dtypes else config.dtype.split(",")
  if any(d not in ("float32", "bfloat16") for d in dtypes):
    raise BenchError(f"--dtypes {','.join(dtypes)}: expected float32 and/or "
                     "bfloat16")
  if steps < 1 or warmup < 0:
    raise BenchError("--steps must be >= 1 and --warmup >= 0")
  if json_path:  # before the benchmark runs, so no figures are lost
    outputs.check_file(json_path, "--json", overwrite=overwrite)
  if profile_dir:
    outputs.check_folder(profile_dir, "--profile", empty=True)
  from dada_jax import sharding  # pylint: disable=g-import-not-at-top
  data_devices = sharding.make_mesh(config).shape["data"]
  if batch % data_devices:
    raise BenchError(f"--batch {batch}: must be a multiple of the "
                     f"{data_devices} devices on the 'data' axis")
  ref = None
  # The reference first: its memory is freed before JAX allocates.
  if torch_reference:
    from dada_jax.bench import reference  # pylint: disable=g-import-not-at-top
    ref = {}
    for mode in [m for m in modes if m in ("dda", "vanilla")]:
      for amp in (False, True) if torch_amp else (False,):
        name = mode + (" (bf16 autocast)" if amp else "")
        try:
          r = reference.time_reference_step(
              torch_reference, mode=mode, batch=batch, size=size,
              steps=steps, warmup=warmup, device=torch_device,
              amp_bf16=amp, small=torch_small,
              profile_dir=profile_dir and os.path.join(
                  profile_dir, f"torch_{mode}" + ("_bf16" if amp else "")))
        except RuntimeError as e:
          if not amp:
            raise
          # Seen on torch 2.11 + CUDA: the reference's gradient checkpointing
          # re-runs attention outside autocast and fails on dtypes.
          print(f"reference {name}: failed: {str(e).splitlines()[0]}",
                flush=True)
          ref[name] = {"error": str(e).splitlines()[0]}
          continue
        ref[name] = r
        print(f"reference {name}: {r['step_time_median_s']:.4f} s/step",
              flush=True)
  env = environment()
  print("bench: " + ", ".join(f"{k} {v}" for k, v in env.items()), flush=True)
  env["networks"] = network_sizes(config)
  print("networks: " + ", ".join(f"{role} {name} {n:,} params" for role, (
      name, n) in env["networks"].items()), flush=True)
  results = []
  for dtype in dtypes:
    cfg = copy.deepcopy(config)
    cfg.dtype = dtype
    for mode in modes:
      results.append(bench_train_step(
          cfg, mode, batch, size, steps, warmup, peak_tflops,
          profile_dir and os.path.join(profile_dir, f"jax_{mode}_{dtype}")))
      print(table(results[-1:]).splitlines()[-1], flush=True)
    for side in restore_sizes:
      results.append(bench_restore(cfg, side, steps, warmup))
      print(table(results[-1:]).splitlines()[-1], flush=True)
  host_peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
  print()
  print(table(results))
  print(f"\nhost peak RSS {host_peak / 2**30:.2f} GiB")
  if ref:
    print(reference_table(results, ref))
  if profile_dir:
    from dada_jax.bench import profile  # pylint: disable=g-import-not-at-top
    for r in [r for r in results if r.profile]:
      theirs = (ref or {}).get(r.mode, {}).get("profile")
      print(f"\nwhere the time goes: {r.case}, {r.dtype} (traces under "
            f"{profile_dir})\n" + profile.table(r.profile, theirs))
  if json_path:
    out = {**dataclasses.asdict(results[0]), "environment": env,
           "host_peak_bytes": host_peak, "config": config_name,
           "results": [dataclasses.asdict(r) for r in results],
           "torch_reference": ref,
           "reference_step_time_median_s": (ref or {}).get(
               results[0].mode, {}).get("step_time_median_s")}
    os.makedirs(os.path.dirname(os.path.abspath(json_path)), exist_ok=True)
    outputs.write_text(json_path, json.dumps(out, indent=1))
    print(f"wrote {json_path}")
  return 0


def reference_table(results: list[Result], ref: dict) -> str:
  rows = ["| step | reference s (median) | ours s (median) | dtype | speed-up |",
          "| --- | --- | --- | --- | --- |"]
  for name, r in ref.items():
    mode = name.split(" ")[0]
    if "error" in r:
      rows.append(f"| {name} | failed | - | - | - |")
      continue
    for ours in results:
      if ours.mode == mode:
        rows.append(f"| {name} | {r['step_time_median_s']:.4f} | "
                    f"{ours.step_time_median_s:.4f} | {ours.dtype} | "
                    f"{r['step_time_median_s'] / ours.step_time_median_s:.2f}x"
                    " |")
  return "\n".join(rows)


