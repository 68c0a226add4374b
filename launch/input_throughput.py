"""How many training images per second one host's input pipeline delivers.

The paper config's pipeline (`dada_jax.data.pipeline.make_train_dataset`):
a synthetic clean stream with online AWGN and an unpaired real stream, each
sample a 128² crop of a 512² PNG patch (the reference's training patches, as
its generate_patches_*.py cut them), random flip/rotation, float conversion.
Host 0 of H hosts reads its 192/H rows of each global batch of 192.

  python launch/input_throughput.py [--images DIR] [--hosts 1,4,16]
      [--workers 0,2] [--seconds 20]

Without --images it cuts 512² PNG patches from the built-in photos (the
scikit-image / sporco files, see dada_jax/data/BUILTIN_IMAGES.md) into a
temporary folder. Prints one markdown row per (hosts, workers): images/s
delivered to this host, CPU-seconds per image (this process and its Grain
workers, with psutil), and the global rate H hosts would feed at that speed
next to what the step consumes (`--need`, default the H200 bf16 DDA step's
381.7 images/s from launch/BENCHMARKS.md). CPU per image is the figure that
carries to other hosts: a host with N free cores delivers up to about
N / (CPU s per image) images/s.
"""

from __future__ import annotations

import argparse
import itertools
import os
import tempfile
import time

from absl import flags
import numpy as np
from PIL import Image

from dada_jax.data import builtin
from dada_jax.data import pipeline
from dada_jax.data import sources

GLOBAL_BATCH, PATCH, FILE_SIDE = 192, 128, 512


def make_patch_folder(folder: str, count: int = 48) -> str:
  """`count` 512² PNG patches cut from the built-in photos (dihedral
  variants of their 512x512 windows)."""
  photos = builtin.BuiltinPhotos("all")
  windows = []
  for i in range(len(photos)):
    image = photos[i]["image"]
    h, w = image.shape[:2]
    if min(h, w) < FILE_SIDE:
      continue
    for x in sorted({0, w - FILE_SIDE}):
      windows.append(image[:FILE_SIDE, x:x + FILE_SIDE])
  for k, (window, op) in enumerate(zip(itertools.cycle(windows),
                                       range(count))):
    variant = np.rot90(window, op % 4)
    variant = variant[:, ::-1] if op // 4 % 2 else variant
    Image.fromarray(np.ascontiguousarray(variant)).save(
        os.path.join(folder, f"{k:04d}.png"))
  return folder


def _cpu_seconds() -> float | None:
  """User + system CPU seconds of this process and its live children (the
  Grain workers); None without psutil."""
  try:
    import psutil  # pylint: disable=g-import-not-at-top
  except ImportError:
    return None
  me = psutil.Process()
  total = 0.0
  for proc in [me, *me.children(recursive=True)]:
    try:
      t = proc.cpu_times()
      total += t.user + t.system
    except psutil.NoSuchProcess:
      pass
  return total


def measure(folder: str, hosts: int, workers: int, seconds: float) -> dict:
  """Images/s (and CPU s per image, workers included) of host 0 of
  `hosts`."""
  source = sources.ImageFolder(folder)
  ds = pipeline.make_train_dataset(
      source, sources.ImageFolder(folder), patch_size=PATCH,
      global_batch_size=GLOBAL_BATCH, seed=0, num_workers=workers,
      check_files=False, process_index=0, process_count=hosts)
  it = iter(ds)
  for _ in range(2):  # start the workers, fill the prefetch buffer
    next(it)
  local = GLOBAL_BATCH // hosts
  images, c0, t0 = 0, _cpu_seconds(), time.perf_counter()
  while time.perf_counter() - t0 < seconds:
    batch = next(it)
    images += batch["syn_lq"].shape[0]
  wall, c1 = time.perf_counter() - t0, _cpu_seconds()
  del it
  return {"hosts": hosts, "workers": workers, "local_batch": local,
          "images_per_s": images / wall,
          "cpu_s_per_image": None if c0 is None else (c1 - c0) / images}


def main():
  flags.FLAGS.mark_as_parsed()  # Grain workers parse absl flags
  p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  p.add_argument("--images", help="folder of training PNG patches")
  p.add_argument("--hosts", default="1,4,16")
  p.add_argument("--workers", default="0,2")
  p.add_argument("--seconds", type=float, default=20.0)
  p.add_argument("--need", type=float, default=381.7,
                 help="images/s the train step consumes (global)")
  args = p.parse_args()
  with tempfile.TemporaryDirectory() as tmp:
    folder = args.images or make_patch_folder(tmp)
    print(f"{os.cpu_count()} CPUs; {len(os.listdir(folder))} files in "
          f"{folder}; global batch {GLOBAL_BATCH} of {PATCH}² crops; step "
          f"consumes {args.need:g} images/s\n")
    print("| hosts | workers | rows per host | images/s per host | CPU s per "
          "image | H hosts feed, images/s | keeps up |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | --- |")
    for hosts in map(int, args.hosts.split(",")):
      for workers in map(int, args.workers.split(",")):
        r = measure(folder, hosts, workers, args.seconds)
        total = r["images_per_s"] * hosts
        per = r["cpu_s_per_image"]
        cpu = "–" if per is None else f"{per * 1e3:.1f} ms"
        print(f"| {hosts} | {workers} | {r['local_batch']} | "
              f"{r['images_per_s']:.1f} | {cpu} | {total:.0f} | "
              f"{'yes' if total >= args.need else 'no'} |", flush=True)


if __name__ == "__main__":
  main()
