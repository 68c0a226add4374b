"""The `dada-jax` command line.

  dada-jax convert --torch-checkpoint X.pth --config CONFIG --output DIR
  dada-jax export  --checkpoint DIR --config CONFIG --output Y.pth|Y.npz
  dada-jax restore --config CONFIG --checkpoint (DIR | X.pth | X.npz) \
                   --input FILE_OR_DIR --output DIR [--tile N]
  dada-jax train   --config CONFIG --workdir DIR [--multihost]
  dada-jax evaluate --config CONFIG --checkpoint DIR [--preset NAME] ...
  dada-jax bench   [--config CONFIG] [--batch N] [--size S] [--json OUT]
                   [--profile DIR] [--torch-reference PATH]
  dada-jax sim2real --task TASK --seeds N --steps S --output OUT [--images DIR]
  dada-jax demo    [--output DIR]   (vanilla vs DDA on built-in photos)
  dada-jax prepare PRESET --input DIR --output DIR [--list FILE]
                   [--shard-size N] [--workers N] [--no-progress]

Any `--config.a.b=value` argument overrides a config field. Errors are one
line naming the flag or file, with a non-zero exit status. Every command but
bench keeps compiled programs in the persistent XLA cache
(`dada_jax.compile_cache`; `--no-compile-cache` turns it off).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys

from dada_jax import config_lib
from dada_jax import errors
from dada_jax import evaluate
from dada_jax import metrics
from dada_jax import models
from dada_jax import outputs
from dada_jax import restore
from dada_jax.sim2real.report import METHODS
from dada_jax.torch_io import convert
from dada_jax.torch_io import pth

# The demo's schedule: a step with the critic takes about 4-5 s on 2 CPU
# cores, so a 600-step warm-up (and its oracle twin), 24 critic-only steps
# and 24 steps per method is what fits in 15 minutes. sim2real's defaults
# are the GO-length warm-up and the branch length of the 3-seed results.
DEMO_WARMUP_STEPS = 600
DEMO_CRITIC_WARMUP_STEPS = 24
DEMO_STEPS = 24
# sim2real's and demo's default config: configs/demo.py of this repository.
DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "demo.py")


class UsageError(errors.UserError):
  """A flag value the command line cannot use; the message names the flag."""


# ------------------------------------------------------------------ parser

def _parser():
  p = argparse.ArgumentParser(prog="dada-jax", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)
  common = argparse.ArgumentParser(add_help=False)
  common.add_argument(
      "--no-compile-cache", action="store_true",
      help="do not keep compiled programs in the persistent XLA cache "
      "(default: $XDG_CACHE_HOME or ~/.cache, dada_jax/xla; bench never "
      "uses it)")
  add = functools.partial(sub.add_parser, parents=[common])

  c = add("convert", help="import a PyTorch reference checkpoint")
  c.add_argument("--torch-checkpoint", required=True,
                 help="official .pth (or .npz with the same keys)")
  c.add_argument("--config", required=True, help="configs/TASK.py[:arg]")
  c.add_argument("--output", required=True,
                 help="new (or empty) directory to write")

  e = add("export", help="write our weights as a reference .pth")
  e.add_argument("--checkpoint", required=True,
                 help="directory from `convert`, or a .pth/.npz")
  e.add_argument("--config", required=True)
  e.add_argument("--output", required=True, help="Y.pth or Y.npz")
  e.add_argument("--overwrite", action="store_true",
                 help="replace --output if it exists")

  r = add("restore", help="restore images with the restorer")
  r.add_argument("--config", required=True)
  r.add_argument("--checkpoint", required=True,
                 help="directory from `convert`, or a .pth/.npz")
  r.add_argument("--input", required=True, help="an image or a folder")
  r.add_argument("--output", required=True, help="folder for the PNGs")
  r.add_argument("--tile", type=int, default=None,
                 help="tile side (default: config.predict.tile for images "
                 "over config.predict.max_untiled_pixels; 0 never tiles)")
  r.add_argument("--overwrite", action="store_true",
                 help="replace PNGs already in --output (inputs are never "
                 "replaced)")
  r.add_argument("--self-ensemble", action="store_true",
                 help="average the restorations of the 8 flips and rotations "
                 "of each image (8x the compute)")

  t = add("train", help="train (resumes from the workdir)")
  t.add_argument("--config", required=True)
  t.add_argument("--workdir", required=True,
                 help="checkpoints, metrics.jsonl, config.json, samples/")
  t.add_argument("--multihost", action="store_true",
                 help="join a multi-process job (one process per host): "
                 "Cloud TPU VMs and SLURM are detected, else set "
                 "JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID "
                 "(dada_jax.multihost)")
  t.add_argument("--coordinator-timeout", type=float, default=300.0,
                 metavar="SECONDS",
                 help="--multihost: give up, with an error line, when the "
                 "job has not come together after this long (default 300)")

  v = add(
      "evaluate", help="PSNR/SSIM of the restorer on a paired set or SIDD")
  v.add_argument("--config", required=True, help="configs/TASK.py[:arg]")
  v.add_argument("--checkpoint", required=True,
                 help="directory from `convert`, or a .pth/.npz")
  v.add_argument("--preset", choices=sorted(metrics.PRESETS), default=None,
                 help="metrics convention (default: config.eval.preset; "
                 f"{evaluate.SIDD_PRESET} for SIDD)")
  which = v.add_mutually_exclusive_group()
  which.add_argument("--input", help="degraded images: folder, or .flist")
  v.add_argument("--target", help="ground truth: folder, or .flist")
  which.add_argument("--sidd-noisy", help="SIDD noisy blocks .mat")
  v.add_argument("--sidd-gt", help="SIDD ground-truth blocks .mat")
  v.add_argument("--output", help="folder for restored PNGs (Idenoised.mat "
                 "for SIDD) and samples.png")
  v.add_argument("--overwrite", action="store_true",
                 help="write into a non-empty --output, replacing files")
  v.add_argument("--max-images", type=int, default=None,
                 help="first N images (SIDD: rows of blocks); default all, "
                 "or config.eval.max_images without --input/--sidd-noisy")

  b = sub.add_parser("bench", help="time train steps and restore")
  b.add_argument("--config", default="configs/denoise.py",
                 help="configs/TASK.py[:arg] (default: the paper's denoise)")
  b.add_argument("--batch", type=int, default=None,
                 help="global batch (default: config.data.batch_size)")
  b.add_argument("--size", type=int, default=None,
                 help="patch side (default: config.data.patch_size)")
  b.add_argument("--modes", default="dda,vanilla",
                 help="train steps to time: dda, dda_ex, vanilla (comma list)")
  b.add_argument("--dtypes", default=None,
                 help="compute dtypes, e.g. float32,bfloat16 (default: "
                 "config.dtype)")
  b.add_argument("--restore-sizes", default="512,2048",
                 help="square image sides to restore ('' for none)")
  b.add_argument("--steps", type=int, default=10, help="timed calls per case")
  b.add_argument("--warmup", type=int, default=2,
                 help="untimed calls after compilation")
  b.add_argument("--peak-tflops", type=float, default=None,
                 help="the device's peak TFLOP/s, for the achieved fraction")
  b.add_argument("--torch-reference", default=None, metavar="PATH",
                 help="a checkout of the official PyTorch Noise-DA code: "
                 "time its train step at the same batch and size too")
  b.add_argument("--torch-device", default="cpu", choices=("cpu", "cuda"),
                 help="where the reference runs (default cpu)")
  b.add_argument("--torch-small", action="store_true",
                 help="build the reference at the runlocal test size (depth-3"
                 " restorer, 2-level critic) instead of the paper's")
  b.add_argument("--torch-amp", action="store_true",
                 help="also time the reference under bf16 autocast")
  b.add_argument("--json", default=None, help="write the figures here")
  b.add_argument("--profile", default=None, metavar="DIR",
                 help="profile one more call of each train step (ours and "
                 "the reference's) into DIR and print the time by op class")
  b.add_argument("--overwrite", action="store_true",
                 help="replace --json if it exists")

  from dada_jax.data import presets  # pylint: disable=g-import-not-at-top
  pr = sub.add_parser(
      "prepare", help="cut a reference dataset into ArrayRecord shards "
      "(resumable; exit 1 when inputs were skipped)",
      description="Cuts a local copy of a dataset the reference trains on "
      "into patches as the reference's scripts do, written as ArrayRecord "
      "shards plus manifest.json (read with data kind 'array_record'). "
      "Rerun the same command to finish an interrupted run. Exit status: 0 "
      "done; 1 done, but unreadable inputs were skipped (one line each on "
      "stderr, listed in the manifest); 2 unusable input or output.")
  pr.add_argument("preset", choices=list(presets.PRESETS),
                  help="; ".join(f"{p.name}: --input {p.layout}"
                                 for p in presets.PRESETS.values()))
  pr.add_argument("--input", required=True,
                  help="the local copy the preset reads (nothing is "
                  "downloaded)")
  pr.add_argument("--output", required=True,
                  help="new or empty folder, or one this command started")
  pr.add_argument("--list", default=None,
                  help="realblur_j: the split list (default: "
                  "RealBlur_J_train_list.txt in --input)")
  pr.add_argument("--shard-size", type=int, default=256,
                  help="records per shard (default 256)")
  pr.add_argument("--workers", type=int, default=min(8, os.cpu_count() or 1),
                  help="decoding and PNG-encoding threads")
  pr.add_argument("--no-progress", action="store_true",
                  help="no progress bar (there is none when stderr is not a "
                  "terminal)")

  # demo is sim2real's vanilla vs DDA on one seed: same flags, other defaults.
  s = add("sim2real", help="vanilla vs DDA vs oracle and ablations "
                     "on built-in photos with simulated real domains")
  d = add("demo", help="the main job on built-in data: vanilla vs "
                     "DDA on simulated real camera noise (CPU-sized)")
  for q, seeds, warm, steps, critic_warm, probes, every, methods, out in (
      (s, "3", 3000, 100, 50, 2, 25, ",".join(METHODS), None),
      (d, "1", DEMO_WARMUP_STEPS, DEMO_STEPS, DEMO_CRITIC_WARMUP_STEPS, 0,
       DEMO_STEPS // 2, "vanilla,oracle,dda,control", "/tmp/dada_demo")):
    q.add_argument("--task", default="denoise",
                   choices=("denoise", "derain", "deblur"))
    q.add_argument("--config", default=None,
                   help="default: configs/demo.py:task=TASK")
    q.add_argument("--seeds", default=seeds,
                   help="N (seeds 0..N-1) or a comma list, e.g. 3,4")
    q.add_argument("--protocol", default="branch",
                   choices=("branch", "joint"),
                   help="branch: a synthetic-only warm-up, then every method "
                   "from it (CPU scale); joint: restorer and critic trained "
                   "together from scratch, as the paper does")
    q.add_argument("--steps", type=int, default=steps,
                   help="restorer updates per method (after the warm-up)")
    q.add_argument("--ramp-fraction", type=float, default=1 / 3,
                   help="α ramps up over this fraction of --steps")
    q.add_argument("--no-gate", action="store_true", default=q is d,
                   help="run the methods with a critic even when the oracle "
                   "does not beat vanilla by 2 dB on validation (the check "
                   "is still reported; the demo's default)")
    q.add_argument("--warmup-steps", type=int, default=warm,
                   help="synthetic-only updates shared by a seed's branches")
    q.add_argument("--critic-warmup-steps", type=int, default=critic_warm,
                   help="critic-only updates on the frozen warm-up restorer "
                   "before each branch with a critic (0: a fresh critic, as "
                   "the paper trains)")
    q.add_argument("--probe-batches", type=int, default=probes,
                   help="training batches on which each critic branch "
                   "measures how its gradient aligns with real-domain "
                   "supervision (dada_jax.sim2real.alignment); 0: off")
    q.add_argument("--warmup-lr", type=float, default=1e-3,
                   help="learning rate of the synthetic-only warm-up (0: the "
                   "config's optim.lr; branches always use optim.lr)")
    q.add_argument("--eval-every", type=int, default=every,
                   help="steps between curve points (0: steps / 5)")
    q.add_argument("--methods", default=methods,
                   help=f"comma list of {', '.join(METHODS)}")
    q.add_argument("--images", default=None,
                   help="a folder of clean photos to use instead of the "
                   "built-in ones (every 4th sorted file is held out)")
    q.add_argument("--output", required=out is None, default=out,
                   help="folder for results.json, results.md and figures")
    q.add_argument("--report-only", action="store_true",
                   help="only re-aggregate OUT/runs/seed_*.json")
  return p


def _split_overrides(argv):
  overrides, rest = [], []
  for a in argv:
    if a.startswith("--config."):
      overrides.append(a[len("--config."):])
    else:
      rest.append(a)
  return overrides, rest


def _config_spec(args) -> str:
  if args.command in ("sim2real", "demo"):
    return args.config or f"{DEMO_CONFIG}:task={args.task}"
  return args.config


def _ints(flag: str, text: str) -> list[int]:
  try:
    return [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    raise UsageError(f"{flag} {text!r}: expected comma-separated integers"
                     ) from None


def _seeds(text: str) -> list[int]:
  """--seeds: N (seeds 0..N-1) or a comma list of seeds."""
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 0:
    raise UsageError(f"--seeds {text!r}: expected N > 0 or a comma list of "
                     "seeds >= 0")
  return list(range(values[0])) if "," not in text else values


# ---------------------------------------------------------------- handlers

def _convert(args, config):
  import shutil  # pylint: disable=g-import-not-at-top
  from dada_jax import weights  # pylint: disable=g-import-not-at-top
  outputs.check_folder(args.output, "--output", empty=True)
  state = weights.read_state_dict(args.torch_checkpoint)
  params = convert.params_from_state_dict(
      state, config, source=args.torch_checkpoint)
  created = not os.path.exists(args.output)
  try:
    weights.save_params(args.output, params, config,
                        source=os.path.abspath(args.torch_checkpoint))
  except BaseException:
    if created:  # a half-written checkpoint is worse than none
      shutil.rmtree(args.output, ignore_errors=True)
    raise
  n = {r: models.count_params(p) for r, p in params.items()}
  print(f"wrote {args.output}: " + ", ".join(
      f"{r} {v:,} params" for r, v in sorted(n.items())))
  return 0


def _export(args, config):
  import numpy as np  # pylint: disable=g-import-not-at-top
  from dada_jax import weights  # pylint: disable=g-import-not-at-top
  if not args.output.endswith((".pth", ".npz")):
    raise UsageError(f"--output {args.output}: must end in .pth or .npz")
  outputs.check_file(args.output, "--output", overwrite=args.overwrite)
  roles = ("restorer", "critic")
  try:
    params = weights.load_params(args.checkpoint, config, roles)
  except convert.CheckpointMismatch:
    roles = ("restorer",)
    params = weights.load_params(args.checkpoint, config, roles)
  state = convert.state_dict_from_params(params, config)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with outputs.atomic_write(args.output) as f:
    if args.output.endswith(".npz"):
      np.savez(f, **state)
    else:
      pth.write_state_dict(state, f)
  print(f"wrote {args.output}: {len(state)} keys ({', '.join(roles)})")
  return 0


def _restore(args, config):
  return restore.run(config, checkpoint=args.checkpoint, input=args.input,
                     output=args.output, tile=args.tile,
                     overwrite=args.overwrite,
                     self_ensemble=args.self_ensemble)


def _train(args, config):
  from dada_jax import train  # pylint: disable=g-import-not-at-top
  final = train.train_and_evaluate(config, args.workdir)
  print("final: " + " ".join(f"{k} {v:.4g}" for k, v in sorted(final.items())
                             if k.startswith(("loss/", "eval/"))))
  return 0


def _evaluate(args, config):
  return evaluate.run(
      config, checkpoint=args.checkpoint, preset=args.preset,
      input=args.input, target=args.target, sidd_noisy=args.sidd_noisy,
      sidd_gt=args.sidd_gt, output=args.output, max_images=args.max_images,
      overwrite=args.overwrite)


def _bench(args, config):
  from dada_jax.bench import timing  # pylint: disable=g-import-not-at-top
  return timing.run(
      config, batch=args.batch, size=args.size,
      modes=args.modes.split(","),
      dtypes=args.dtypes.split(",") if args.dtypes else None,
      restore_sizes=_ints("--restore-sizes", args.restore_sizes),
      steps=args.steps, warmup=args.warmup, peak_tflops=args.peak_tflops,
      torch_reference=args.torch_reference, torch_device=args.torch_device,
      torch_small=args.torch_small, torch_amp=args.torch_amp,
      json_path=args.json, overwrite=args.overwrite, config_name=args.config,
      profile_dir=args.profile)


def _sim2real(args, config):
  from dada_jax.sim2real import benchmark  # pylint: disable=g-import-not-at-top
  return benchmark.run(
      config, output=args.output,
      seeds=[] if args.report_only else _seeds(args.seeds),
      steps=args.steps, warmup_steps=args.warmup_steps,
      protocol=args.protocol, ramp_fraction=args.ramp_fraction,
      gate=not args.no_gate, critic_warmup_steps=args.critic_warmup_steps,
      probe_batches=args.probe_batches, warmup_lr=args.warmup_lr,
      eval_every=args.eval_every,
      methods=[m for m in args.methods.split(",") if m], images=args.images,
      report_only=args.report_only, command=args.command_line)


def _prepare(args):
  from dada_jax.data import prepare  # pylint: disable=g-import-not-at-top
  if args.workers < 1:
    raise UsageError(f"--workers {args.workers}: must be >= 1")
  try:
    m = prepare.prepare(args.preset, args.input, args.output,
                        list_path=args.list, shard_size=args.shard_size,
                        workers=args.workers, progress=not args.no_progress,
                        log=lambda line: print(f"dada-jax prepare: {line}",
                                               file=sys.stderr, flush=True))
  except KeyboardInterrupt:
    print("dada-jax prepare: interrupted; the complete shards are kept: "
          "rerun the same command to finish", file=sys.stderr)
    return 130
  skipped = len(m["skipped"])
  print(f"{args.output}: {m['records']} records of {m['preset']} in "
        f"{len(m['shards'])} shards"
        + (f"; {skipped} input(s) skipped (listed in manifest.json)"
           if skipped else ""))
  return 1 if skipped else 0


_HANDLERS = {"convert": _convert, "export": _export, "restore": _restore,
             "train": _train, "evaluate": _evaluate, "bench": _bench,
             "sim2real": _sim2real, "demo": _sim2real}


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  overrides, rest = _split_overrides(argv)
  args = _parser().parse_args(rest)
  args.command_line = " ".join(["dada-jax", *argv])
  # Grain worker processes parse absl flags; nothing else here uses them.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  from dada_jax import faults  # pylint: disable=g-import-not-at-top
  if args.command not in ("bench", "prepare") and not args.no_compile_cache:
    from dada_jax import compile_cache  # pylint: disable=g-import-not-at-top
    compile_cache.enable()
  try:
    if getattr(args, "multihost", False):
      from dada_jax import multihost  # pylint: disable=g-import-not-at-top
      multihost.initialize(args.coordinator_timeout)
    if args.command == "prepare":  # reads no config
      if overrides:
        raise UsageError(f"--config.{overrides[0]}: prepare reads no config")
      return _prepare(args)
    config = config_lib.load_config(_config_spec(args), overrides)
    return _HANDLERS[args.command](args, config)
  except faults.TrainingStopped as e:
    print(f"dada-jax {args.command}: {e}", file=sys.stderr)
    return e.exit_code
  except errors.UserError as e:
    print(f"dada-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
