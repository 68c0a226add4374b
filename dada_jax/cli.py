"""The `dada-jax` command line.

  dada-jax convert --torch-checkpoint X.pth --config CONFIG --output DIR
  dada-jax export  --checkpoint DIR --config CONFIG --output Y.pth|Y.npz
  dada-jax restore --config CONFIG --checkpoint (DIR | X.pth | X.npz) \
                   --input FILE_OR_DIR --output DIR [--tile N]
  dada-jax train   --config CONFIG --workdir DIR [--multihost]
  dada-jax evaluate --config CONFIG --checkpoint DIR [--preset NAME] ...
  dada-jax bench   [--config CONFIG] [--batch N] [--size S] [--json OUT]
  dada-jax sim2real --task TASK --seeds N --steps S --output OUT [--images DIR]
  dada-jax demo    [--output DIR]   (vanilla vs DDA on built-in photos)

Any `--config.a.b=value` argument overrides a config field. Errors are one
line naming the flag or file, with a non-zero exit status.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from dada_jax import config_lib
from dada_jax import convert_torch
from dada_jax import image_io
from dada_jax import models
from dada_jax import outputs
from dada_jax import pth


class UsageError(ValueError):
  pass


def _parser():
  p = argparse.ArgumentParser(prog="dada-jax", description=__doc__.split(
      "\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
  sub = p.add_subparsers(dest="command", required=True)

  c = sub.add_parser("convert", help="import a PyTorch reference checkpoint")
  c.add_argument("--torch-checkpoint", required=True,
                 help="official .pth (or .npz with the same keys)")
  c.add_argument("--config", required=True, help="configs/TASK.py[:arg]")
  c.add_argument("--output", required=True,
                 help="new (or empty) directory to write")

  e = sub.add_parser("export", help="write our weights as a reference .pth")
  e.add_argument("--checkpoint", required=True,
                 help="directory from `convert`, or a .pth/.npz")
  e.add_argument("--config", required=True)
  e.add_argument("--output", required=True, help="Y.pth or Y.npz")
  e.add_argument("--overwrite", action="store_true",
                 help="replace --output if it exists")

  r = sub.add_parser("restore", help="restore images with the restorer")
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
  t = sub.add_parser("train", help="train (resumes from the workdir)")
  t.add_argument("--config", required=True)
  t.add_argument("--workdir", required=True,
                 help="checkpoints, metrics.jsonl, config.json, samples/")
  t.add_argument("--multihost", action="store_true",
                 help="call jax.distributed.initialize() (Cloud TPU pods)")

  from dada_jax import bench, evaluate, sim2real  # pylint: disable=g-import-not-at-top
  evaluate.add_parser(sub)
  bench.add_parser(sub)
  sim2real.add_parsers(sub)
  return p


def _split_overrides(argv):
  overrides, rest = [], []
  for a in argv:
    if a.startswith("--config."):
      overrides.append(a[len("--config."):])
    else:
      rest.append(a)
  return overrides, rest


def _convert(args, config):
  import shutil  # pylint: disable=g-import-not-at-top
  from dada_jax import weights  # pylint: disable=g-import-not-at-top
  outputs.check_folder(args.output, "--output", empty=True)
  state = weights.read_state_dict(args.torch_checkpoint)
  params = convert_torch.params_from_state_dict(
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
  except convert_torch.CheckpointMismatch:
    roles = ("restorer",)
    params = weights.load_params(args.checkpoint, config, roles)
  state = convert_torch.state_dict_from_params(params, config)
  os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
  with outputs.atomic_write(args.output) as f:
    if args.output.endswith(".npz"):
      np.savez(f, **state)
    else:
      pth.write_state_dict(state, f)
  print(f"wrote {args.output}: {len(state)} keys ({', '.join(roles)})")
  return 0


def _inputs(path):
  """(image files, notes on entries skipped) of --input."""
  notes = []
  if os.path.isdir(path):
    files, notes = image_io.scan_images(path)
    if not files:
      raise UsageError(f"--input {path}: folder holds no images "
                       f"({', '.join(image_io.IMAGE_EXTENSIONS)})")
  elif os.path.isfile(path):
    files = [path]
  elif os.path.islink(path):
    raise UsageError(f"--input {path}: symbolic link to nothing "
                     f"({os.readlink(path)})")
  else:
    raise UsageError(f"--input {path}: no such file or folder")
  stems = {}
  for f in files:
    stems.setdefault(os.path.splitext(os.path.basename(f))[0], []).append(f)
  clashes = [v for v in stems.values() if len(v) > 1]
  if clashes:
    raise UsageError("--input: outputs would collide for inputs sharing a "
                     "stem: " + "; ".join(", ".join(c) for c in clashes))
  return files, notes


def _check_tiling(args, config):
  from dada_jax import predict  # pylint: disable=g-import-not-at-top
  multiple, p = models.pad_multiple(config), config.predict
  if args.tile is not None:
    problem = predict.tiling_problem(multiple, args.tile, p.tile_overlap)
    if problem:
      where = " (config.predict.tile_overlap)" if "overlap" in problem else ""
      raise UsageError(f"--tile {args.tile}: {problem}{where}")
  problem = predict.tiling_problem(multiple, p.tile, p.tile_overlap)
  if problem and args.tile is None:
    raise config_lib.ConfigError(
        f"config.predict.tile={p.tile}, tile_overlap={p.tile_overlap}: "
        f"{problem}")


def _output_paths(files, folder, overwrite):
  """{input: output PNG}; refuses to replace an input, or an existing file
  without --overwrite, before anything is computed."""
  planned = {f: os.path.join(folder, os.path.splitext(os.path.basename(f))[0]
                             + ".png") for f in files}
  sources = {os.path.realpath(f) for f in files}
  existing = []
  for out in planned.values():
    if os.path.realpath(out) in sources:
      raise UsageError(f"--output {folder}: would overwrite the input {out}; "
                       "choose another --output folder")
    if os.path.isdir(out):
      raise UsageError(f"--output {folder}: {out} is a folder")
    if os.path.lexists(out):
      existing.append(out)
  if existing and not overwrite:
    shown = ", ".join(existing[:3]) + (
        f" and {len(existing) - 3} more" if len(existing) > 3 else "")
    raise UsageError(f"--output {folder}: {len(existing)} file(s) would be "
                     f"overwritten ({shown}); pass --overwrite to replace "
                     "them")
  return planned


def _restore(args, config):
  from dada_jax import predict  # pylint: disable=g-import-not-at-top
  from dada_jax import weights  # pylint: disable=g-import-not-at-top
  files, notes = _inputs(args.input)
  _check_tiling(args, config)
  outputs.check_folder(args.output, "--output")
  planned = _output_paths(files, args.output, args.overwrite)
  params = weights.load_params(args.checkpoint, config)["restorer"]
  value_range = config.data.value_range
  broken = [n for n in notes if "symbolic link" in n]
  failures = list(broken)
  for n in notes:
    print(f"note: {n}", file=sys.stderr)
  for i, path in enumerate(files, 1):
    out_path = planned[path]
    start = time.perf_counter()
    try:
      loaded = image_io.load_image(path)
    except image_io.ImageReadError as e:
      failures.append(str(e))
      print(f"[{i}/{len(files)}] FAILED {e}", file=sys.stderr)
      continue
    x = image_io.to_float(loaded.pixels, value_range)
    y = predict.restore_array(config, params, x, tile=args.tile)
    os.makedirs(args.output, exist_ok=True)  # only once something is written
    image_io.write_png(out_path, image_io.to_uint8(y, value_range))
    note = f" ({loaded.note})" if loaded.note else ""
    h, w, _ = x.shape
    print(f"[{i}/{len(files)}] {path} -> {out_path} {w}x{h} "
          f"{time.perf_counter() - start:.2f}s{note}")
  if failures:
    total = len(files) + len(broken)
    print(f"dada-jax restore: {len(failures)} of {total} inputs failed:",
          file=sys.stderr)
    for f in failures:
      print(f"  {f}", file=sys.stderr)
    return 1
  print(f"restored {len(files)} images into {args.output}")
  return 0


def _train(args, config):
  from dada_jax import train  # pylint: disable=g-import-not-at-top
  final = train.train_and_evaluate(config, args.workdir)
  print("final: " + " ".join(f"{k} {v:.4g}" for k, v in sorted(final.items())
                             if k.startswith(("loss/", "eval/"))))
  return 0


def _evaluate(args, config):
  from dada_jax import evaluate  # pylint: disable=g-import-not-at-top
  return evaluate.run(args, config)


def _bench(args, config):
  from dada_jax import bench  # pylint: disable=g-import-not-at-top
  return bench.run(args, config)


def _sim2real(args, config):
  from dada_jax import sim2real  # pylint: disable=g-import-not-at-top
  return sim2real.run(args, config, command=args.command_line)


def _errors():
  """Exception types whose message is a complete, user-facing error line."""
  from dada_jax import bench, bench_torch, data, evaluate, sidd, sim2real  # pylint: disable=g-import-not-at-top
  return (config_lib.ConfigError, convert_torch.CheckpointMismatch,
          pth.PthError, UsageError, FileExistsError, image_io.ImageReadError,
          outputs.OutputError,
          data.DataError, evaluate.EvalError, sidd.SiddError,
          bench.BenchError, bench_torch.ReferenceError, sim2real.Sim2RealError,
          sim2real.ReportError)


def main(argv=None) -> int:
  argv = sys.argv[1:] if argv is None else list(argv)
  overrides, rest = _split_overrides(argv)
  args = _parser().parse_args(rest)
  args.command_line = " ".join(["dada-jax", *argv])
  if getattr(args, "multihost", False):
    import jax  # pylint: disable=g-import-not-at-top
    jax.distributed.initialize()
  # Grain worker processes parse absl flags; nothing else here uses them.
  from absl import flags  # pylint: disable=g-import-not-at-top
  if not flags.FLAGS.is_parsed():
    flags.FLAGS.mark_as_parsed()
  handlers = {"convert": _convert, "export": _export, "restore": _restore,
              "train": _train, "evaluate": _evaluate,
              "bench": _bench, "sim2real": _sim2real, "demo": _sim2real}
  from dada_jax import faults  # pylint: disable=g-import-not-at-top
  try:
    spec = args.config
    if args.command in ("sim2real", "demo"):
      from dada_jax import sim2real  # pylint: disable=g-import-not-at-top
      spec = sim2real.config_spec(args)
    config = config_lib.load_config(spec, overrides)
    return handlers[args.command](args, config)
  except faults.TrainingStopped as e:
    print(f"dada-jax {args.command}: {e}", file=sys.stderr)
    return e.exit_code
  except _errors() as e:
    print(f"dada-jax {args.command}: error: {e}", file=sys.stderr)
    return 2


if __name__ == "__main__":
  sys.exit(main())
