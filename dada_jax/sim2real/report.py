"""Reports of the sim2real benchmark: mean ± std tables, DDA's gain over
vanilla, the PSNR-vs-step plot and the comparison figure.

`aggregate(OUT)` collects OUT/runs/seed_*.json (written by
`dada_jax.sim2real.benchmark` as each branch finishes) into OUT/results.json,
OUT/results.md, OUT/psnr_vs_step.png and OUT/comparison.png.
"""

from __future__ import annotations

import glob
import json
import os
import shutil

import numpy as np

from dada_jax import errors
from dada_jax import evaluate
from dada_jax import image_io
from dada_jax import outputs
from dada_jax import predict

METHODS = ("vanilla", "dda", "oracle", "no_shuffle", "no_negatives")


class ReportError(errors.UserError):
  """Nothing to report; the message names the folder."""


def _mean_std(values):
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def summarize(seeds: list[dict]) -> dict:
  """Per-method mean/std over seeds, and DDA's gain over vanilla per seed."""
  runs = [r for s in seeds for r in s["runs"]]
  methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
  table = {}
  for m in methods:
    rs = [r for r in runs if r["method"] == m]
    table[m] = {k: _mean_std([r[k] for r in rs]) for k in
                ("psnr_real", "ssim_real", "psnr_syn", "ssim_syn")}
    table[m]["seeds"] = len(rs)
  out = {"methods": table}
  by = {(r["method"], r["seed"]): r for r in runs}
  seeds_both = sorted(s for (m, s) in by if m == "dda" and ("vanilla", s) in by)
  if seeds_both:
    gain = [by["dda", s]["psnr_real"] - by["vanilla", s]["psnr_real"]
            for s in seeds_both]
    syn = [by["dda", s]["psnr_syn"] - by["vanilla", s]["psnr_syn"]
           for s in seeds_both]
    out["dda_vs_vanilla"] = {
        "seeds": seeds_both, "psnr_real_gain": gain, "psnr_syn_change": syn,
        "mean_psnr_real_gain": float(np.mean(gain)),
        "mean_psnr_syn_change": float(np.mean(syn)),
        "every_seed_positive": bool(all(g > 0 for g in gain))}
  align = _alignment_summary(runs, methods)
  if align:
    out["alignment"] = align
  return out


ALIGNMENT_KEYS = ("cos_pixel", "cos_diff_syn", "cos_diff_real", "out_cos_real")


def _alignment_summary(runs: list[dict], methods) -> dict:
  """Per critic method: mean ± std over seeds of the alignment cosines (and
  |diff_real| / |pixel|) at the branch's first and last curve points."""
  def row(points, step):
    r = {k: _mean_std([p[k] for p in points]) for k in ALIGNMENT_KEYS}
    r["diff_real_over_pixel"] = _mean_std(
        [p["norm_diff_real"] / p["norm_pixel"] for p in points])
    r["step"] = step
    return r

  table = {}
  for m in methods:
    rs = [r for r in runs if r["method"] == m]
    curves = [[p for p in r["curve"] if "alignment" in p] for r in rs]
    curves = [c for c in curves if c]
    if not curves:
      continue
    table[m] = {}
    fresh = [r["alignment_fresh_critic"] for r in rs
             if "alignment_fresh_critic" in r]
    if fresh:
      table[m]["fresh_critic"] = row(fresh, "0, fresh critic")
    for where, idx in (("start", 0), ("end", -1)):
      table[m][where] = row([c[idx]["alignment"] for c in curves],
                            curves[0][idx]["step"])
  return table


def markdown(seeds: list[dict], summary: dict, command: str = "") -> str:
  """The Markdown report: warm-up check, mean ± std table, DDA's gain."""
  fmt = lambda ms, p: f"{ms[0]:.{p}f} ± {ms[1]:.{p}f}"
  lines = []
  if command:
    lines += [f"`{command}`", ""]
  lines += ["| seed | warm-up PSNR syn | 7x7 linear filter PSNR syn | "
            "warm-up PSNR real |", "| --- | --- | --- | --- |"]
  for s in seeds:
    w = s["warmup"]
    lines.append(f"| {s['seed']} | {w['psnr_syn']:.2f} | "
                 f"{w['linear_filter_psnr_syn']:.2f} | {w['psnr_real']:.2f} |")
  lines += ["", "| method | PSNR real | SSIM real | PSNR syn | SSIM syn | "
            "seeds |", "| --- | --- | --- | --- | --- | --- |"]
  for m, t in summary["methods"].items():
    lines.append(f"| {m} | {fmt(t['psnr_real'], 2)} | "
                 f"{fmt(t['ssim_real'], 4)} | {fmt(t['psnr_syn'], 2)} | "
                 f"{fmt(t['ssim_syn'], 4)} | {t['seeds']} |")
  d = summary.get("dda_vs_vanilla")
  if d:
    per = ", ".join(f"{g:+.2f}" for g in d["psnr_real_gain"])
    lines += ["", f"DDA − vanilla, PSNR real: {d['mean_psnr_real_gain']:+.2f}"
              f" dB on average (per seed: {per}; every seed positive: "
              f"{'yes' if d['every_seed_positive'] else 'no'}); PSNR syn: "
              f"{d['mean_psnr_syn_change']:+.2f} dB."]
  if summary.get("alignment"):
    lines += ["", "Gradient alignment with real-domain supervision "
              "(`dada_jax.sim2real.alignment`; cosine with the oracle gradient, "
              "training batches):", "",
              "| method | step | pixel | diff via syn | diff via real | "
              "outputs, real | norm diff via real / pixel |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for m, rows in summary["alignment"].items():
      for row in rows.values():
        cells = " | ".join(fmt(row[k], 3) for k in ALIGNMENT_KEYS)
        lines.append(f"| {m} | {row['step']} | {cells} | "
                     f"{fmt(row['diff_real_over_pixel'], 3)} |")
  return "\n".join(lines) + "\n"


def write_plot(path: str, seeds: list[dict]) -> None:
  """PSNR on the real test set vs branch step, mean ± std over seeds."""
  from dada_jax.sim2real import plot  # pylint: disable=g-import-not-at-top
  series, bands = {}, {}
  for m in METHODS:
    # step -> PSNR per seed; the first point wins if a step repeats.
    curves = [{p["step"]: p["psnr_real"] for p in r["curve"][::-1]}
              for s in seeds for r in s["runs"] if r["method"] == m]
    if not curves:
      continue
    steps = sorted(set.intersection(*map(set, curves)))
    vals = np.array([[c[t] for t in steps] for c in curves], np.float64)
    mean, std = vals.mean(axis=0), vals.std(axis=0)
    series[m] = list(zip(steps, mean.tolist()))
    if len(curves) > 1:
      bands[m] = list(zip(steps, (mean - std).tolist(), (mean + std).tolist()))
  if series:
    plot.line_plot(path, series, bands=bands or None,
                   title="PSNR on the simulated-real test photos",
                   xlabel="restorer updates after the warm-up",
                   ylabel="PSNR (dB)")


def write_comparison(path: str, config, restorers: dict, source,
                     max_rows: int = 3) -> None:
  """Rows input | vanilla | dda | ground truth on the real test photos."""
  names = [m for m in ("vanilla", "dda") if m in restorers]
  vr = config.data.value_range
  rows = []
  for i in range(min(max_rows, len(source))):
    item = source[i]
    lq = image_io.to_float(item["lq"], vr)
    outs = [image_io.to_uint8(predict.restore_array(config, restorers[m], lq),
                              vr) for m in names]
    rows.append([item["lq"], *outs, item["gt"]])
  if rows:
    evaluate.write_sample_grid(path, rows)


def aggregate(output: str, command: str = "") -> dict:
  """Collects OUT/runs/seed_*.json into results.json/.md and the plot."""
  seeds = []
  for f in sorted(glob.glob(os.path.join(output, "runs", "seed_*.json"))):
    with open(f) as fh:
      seeds.append(json.load(fh))
  if not seeds:
    raise ReportError(f"--output {output}: no runs/seed_*.json to report")
  summary = summarize(seeds)
  commands = sorted({s["command"] for s in seeds if s.get("command")})
  results = {"runs": [r for s in seeds for r in s["runs"]],
             "warmup": [{"seed": s["seed"], **s["warmup"]} for s in seeds],
             "summary": summary, "commands": commands or [command]}
  outputs.write_text(os.path.join(output, "results.json"),
                     json.dumps(results, indent=1))
  outputs.write_text(os.path.join(output, "results.md"),
                     markdown(seeds, summary, "; ".join(results["commands"])))
  write_plot(os.path.join(output, "psnr_vs_step.png"), seeds)
  first = os.path.join(output, f"comparison_seed{seeds[0]['seed']}.png")
  if os.path.exists(first):
    shutil.copyfile(first, os.path.join(output, "comparison.png"))
  return results
