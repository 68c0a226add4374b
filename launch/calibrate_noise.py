"""Input statistics of the rendered denoising domains, on TRAIN photos only.

  python launch/calibrate_noise.py [--patches 400] [--patch 128]
      [--ranges 6e-4:1e-2,1e-3:1.2e-2]

Prints, per shot-noise range of the simulated-real domain (and for the
synthetic AWGN domain), the input PSNR of rendered patches (median, 10th and
90th percentiles; SIDD's validation median is about 23.7 dB) and the noise
statistics of `degrade.noise_stats`: lag-1 spatial correlation,
cross-channel correlation and signal dependence. This is how
`rendered.SHOT_NOISE_RANGE` was chosen; no test photo is read.
"""

import argparse

import numpy as np

from dada_jax.data import builtin
from dada_jax.data import degrade
from dada_jax.data import rendered


def row(name, source, n):
  psnr, stats = [], []
  for i in range(n):
    item = source[i]
    lq, gt = (item[k].astype(np.float64) / 255 for k in ("lq", "gt"))
    psnr.append(10 * np.log10(1 / max(np.mean((lq - gt) ** 2), 1e-12)))
    stats.append(degrade.noise_stats(lq, gt))
  p = np.array(psnr)
  mean = lambda k: np.nanmean([s[k] for s in stats])
  print(f"| {name} | {np.median(p):.2f} | {np.percentile(p, 10):.2f} | "
        f"{np.percentile(p, 90):.2f} | {mean('lag1_corr'):.3f} | "
        f"{mean('cross_channel_corr'):.3f} | "
        f"{mean('signal_dependence'):.2f} |")


def main():
  ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  ap.add_argument("--patches", type=int, default=400)
  ap.add_argument("--patch", type=int, default=128)
  ap.add_argument("--ranges", default="1e-4:1.2e-2,6e-4:1e-2,1e-3:1.2e-2")
  args = ap.parse_args()
  photos = builtin.BuiltinPhotos("train")
  print(f"{args.patches} patches of {args.patch} px from the train photos "
        f"{photos.names}\n")
  print("| domain | median PSNR | p10 | p90 | lag-1 corr | cross-channel "
        "corr | signal dependence |\n| --- | --- | --- | --- | --- | --- | "
        "--- |")
  row("synthetic AWGN σ~U[0,75]", rendered.RenderedPairs(
      photos, "denoise", "synthetic", 7, patch_size=args.patch), args.patches)
  for r in args.ranges.split(","):
    lo, hi = map(float, r.split(":"))
    row(f"real, shot noise {lo:g}..{hi:g}", rendered.RenderedPairs(
        photos, "denoise", "real", 7, patch_size=args.patch,
        shot_noise_range=(lo, hi)), args.patches)


if __name__ == "__main__":
  main()
