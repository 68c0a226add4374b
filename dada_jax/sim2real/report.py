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
from dada_jax import outputs
from dada_jax.sim2real import stats

METHODS = ("vanilla", "dda", "control", "oracle", "no_shuffle",
           "no_negatives", "dda_ex")


class ReportError(errors.UserError):
  """Nothing to report; the message names the folder."""


GO_MARGIN_DB = 2.0  # the oracle must beat vanilla by this on validation
BASELINE = "vanilla"


def _mean_std(values):
  v = np.asarray(values, np.float64)
  return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0


def _blocks(runs: list[dict], method: str, split: str, seeds) -> np.ndarray:
  by = {r["seed"]: r for r in runs if r["method"] == method}
  return np.array([by[s]["blocks"][split] for s in seeds], np.float64)


def _seeds_with(runs: list[dict], *methods) -> list[int]:
  have = lambda m: {r["seed"] for r in runs if r["method"] == m}
  return sorted(set.intersection(*(have(m) for m in methods)))


def summarize(seeds: list[dict]) -> dict:
  """Per-method means over seeds, the go/no-go check and the paired gains.

  Gains are paired per (seed, test block) against vanilla (and DDA against
  the control), with bootstrap intervals (`stats.paired`) and the fraction
  of the oracle's gain recovered (`stats.fraction_recovered`).
  """
  runs = [r for s in seeds for r in s["runs"]]
  methods = [m for m in METHODS if any(r["method"] == m for r in runs)]
  table = {}
  for m in methods:
    rs = [r for r in runs if r["method"] == m]
    table[m] = {k: _mean_std([r[k] for r in rs]) for k in
                ("psnr_real", "psnr_syn", "psnr_val")}
    table[m]["raw_psnr_real"] = _mean_std([r["raw"]["psnr_real"]
                                           for r in rs])
    table[m]["seeds"] = len(rs)
  out = {"methods": table, "protocols": sorted(
      {s.get("protocol", "branch") for s in seeds})}
  gates = [s["gate"] for s in seeds if "gate" in s]
  if not gates and (both := _seeds_with(runs, "oracle", BASELINE)):
    # A run of vanilla and oracle alone (joint: both from scratch).
    gates = [{"blocks_oracle": o, "blocks_vanilla": v} for o, v in zip(
        _blocks(runs, "oracle", "validation", both),
        _blocks(runs, BASELINE, "validation", both))]
  if gates:
    gap = stats.paired([g["blocks_oracle"] for g in gates],
                       [g["blocks_vanilla"] for g in gates])
    out["go_no_go"] = {**gap, "margin_db": GO_MARGIN_DB,
                       "go": gap["mean"] >= GO_MARGIN_DB}
  gains = {}
  for m in methods:
    if m == BASELINE or not (sb := _seeds_with(runs, m, BASELINE)):
      continue
    g = stats.paired(_blocks(runs, m, "test", sb),
                     _blocks(runs, BASELINE, "test", sb))
    g["syn"] = stats.paired(_blocks(runs, m, "syn_test", sb),
                            _blocks(runs, BASELINE, "syn_test", sb))["mean"]
    if m != "oracle" and (so := _seeds_with(runs, m, BASELINE, "oracle")):
      g["fraction_of_oracle"] = stats.fraction_recovered(
          _blocks(runs, m, "test", so), _blocks(runs, BASELINE, "test", so),
          _blocks(runs, "oracle", "test", so))
    gains[m] = g
  out["gains_vs_vanilla"] = gains
  if sc := _seeds_with(runs, "dda", "control"):
    out["dda_vs_control"] = stats.paired(_blocks(runs, "dda", "test", sc),
                                         _blocks(runs, "control", "test", sc))
  # Branch protocol: DDA against its own starting point, the warm-up (a
  # gain over vanilla may only be vanilla drifting away from it).
  starts = {s["seed"]: s["warmup"]["blocks"]["test"] for s in seeds
            if "blocks" in s.get("warmup", {})}
  if sd := [x for x in _seeds_with(runs, "dda") if x in starts]:
    out["dda_vs_start"] = stats.paired(_blocks(runs, "dda", "test", sd),
                                       [starts[x] for x in sd])
  out["verdict"] = verdict(out)
  align = _alignment_summary(runs, methods)
  if align:
    out["alignment"] = align
  return out


def verdict(summary: dict) -> str:
  """One sentence: did DDA help, against vanilla and against the control."""
  d = summary["gains_vs_vanilla"].get("dda")
  if d is None:
    return "no DDA run to judge"
  ci = lambda g: f"{g['mean']:+.2f} dB [{g['ci'][0]:+.2f}, {g['ci'][1]:+.2f}]"
  beats = d["ci"][0] > 0
  text = f"DDA − vanilla {ci(d)}"
  c = summary.get("dda_vs_control")
  if c is not None:
    text += f"; DDA − control {ci(c)}"
    if beats and c["ci"][0] > 0:
      head = "DDA helped, beyond the control's regularization"
    elif beats:
      head = ("DDA beat vanilla, but not the control: the gain is not "
              "shown to come from the real data")
    else:
      head = "DDA did not beat vanilla"
  else:
    head = ("DDA beat vanilla (no control run: adaptation is not separated "
            "from regularization)" if beats else "DDA did not beat vanilla")
  start = summary.get("dda_vs_start")
  if start is not None and beats:
    text += (f"; against its own start (the warm-up) {ci(start)}: " + (
        "it moved beyond it" if start["ci"][0] > 0 else
        "not beyond it, the gain is what synthetic-only training lost"))
  n = d["seeds"]
  return (f"{head}: {text} (95% bootstrap intervals over {n} seed(s) and "
          f"{d['blocks']} test blocks" +
          ("; one seed: training noise is not in the interval)" if n == 1
           else ")"))


ALIGNMENT_KEYS = ("cos_pixel", "cos_diff_syn", "cos_diff_real", "out_cos_real",
                  "cos_pixel_kernels", "cos_diff_real_kernels")


def _alignment_summary(runs: list[dict], methods) -> dict:
  """Per critic method: mean ± std over seeds of the alignment cosines (and
  |diff_real| / |pixel|) at the branch's first and last curve points."""
  def row(points, step):
    # Runs saved before the kernels-only cosines existed lack them: nan.
    r = {k: _mean_std([p.get(k, np.nan) for p in points])
         for k in ALIGNMENT_KEYS}
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


def markdown(seeds: list[dict], summary: dict, command: str = "",
             inputs: dict | None = None) -> str:
  """The Markdown report: verdict, go/no-go, method table, paired gains."""
  fmt = lambda ms, p: f"{ms[0]:.{p}f} ± {ms[1]:.{p}f}"
  ci = lambda g: f"{g['mean']:+.2f} [{g['ci'][0]:+.2f}, {g['ci'][1]:+.2f}]"
  lines = [f"`{command}`", ""] if command else []
  lines += [f"**{summary['verdict']}.**", "",
            f"Protocol: {', '.join(summary['protocols'])}. PSNR in dB, RGB, "
            "mean over fixed 8-bit blocks; `real` = held-out photos with the "
            "simulated-real degradation (test), `val` = training photos "
            "under new draws (validation), `syn` = held-out photos with the "
            "synthetic degradation. EMA weights unless marked raw."]
  if inputs:
    lines += ["", "Input PSNR (median / mean): " + "; ".join(
        f"{k} {np.median(v):.2f} / {np.mean(v):.2f} ({len(v)} blocks)"
        for k, v in inputs.items())]
  g = summary.get("go_no_go")
  if g:
    lines += ["", f"Go/no-go (validation, oracle − vanilla ≥ "
              f"{g['margin_db']:.1f} dB): {ci(g)} → "
              f"**{'GO' if g['go'] else 'NO-GO'}**"]
  warm = [s for s in seeds if "warmup" in s]
  if warm:
    lines += ["", "| seed | warm-up PSNR real | warm-up PSNR val | warm-up "
              "PSNR syn |", "| --- | --- | --- | --- |"]
    lines += [f"| {s['seed']} | {s['warmup']['psnr_real']:.2f} | "
              f"{s['warmup'].get('psnr_val', float('nan')):.2f} | "
              f"{s['warmup']['psnr_syn']:.2f} |" for s in warm]
  lines += ["", "| method | PSNR real | PSNR real, raw | PSNR val | PSNR syn "
            "| seeds |", "| --- | --- | --- | --- | --- | --- |"]
  for m, t in summary["methods"].items():
    lines.append(f"| {m} | {fmt(t['psnr_real'], 2)} | "
                 f"{fmt(t['raw_psnr_real'], 2)} | {fmt(t['psnr_val'], 2)} | "
                 f"{fmt(t['psnr_syn'], 2)} | {t['seeds']} |")
  gains = summary["gains_vs_vanilla"]
  if gains:
    lines += ["", "Paired differences on the test blocks, 95% bootstrap "
              "intervals over seeds and blocks:", "",
              "| comparison | PSNR real | per seed | blocks better | fraction"
              " of oracle's gain | PSNR syn |",
              "| --- | --- | --- | --- | --- | --- |"]
    rows = [(f"{m} − vanilla", g) for m, g in gains.items()]
    if "dda_vs_control" in summary:
      rows.append(("dda − control", summary["dda_vs_control"]))
    if "dda_vs_start" in summary:
      rows.append(("dda − its start (the warm-up)", summary["dda_vs_start"]))
    for name, g in rows:
      per = ", ".join(f"{p['mean']:+.2f}" for p in g["per_seed"])
      f = g.get("fraction_of_oracle")
      frac = (f"{f['mean']:.2f} [{f['ci'][0]:.2f}, {f['ci'][1]:.2f}]"
              if f else "")
      syn = f"{g['syn']:+.2f}" if "syn" in g else ""
      lines.append(f"| {name} | {ci(g)} | {per} | "
                   f"{g['blocks_positive']:.0%} | {frac} | {syn} |")
  if summary.get("alignment"):
    lines += ["", "Gradient alignment with real-domain supervision "
              "(`dada_jax.sim2real.alignment`; cosine with the oracle gradient, "
              "training batches):", "",
              "| method | step | pixel | diff via syn | diff via real | "
              "outputs, real | pixel, kernels | diff via real, kernels | "
              "norm diff via real / pixel |",
              "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for m, rows in summary["alignment"].items():
      for row in rows.values():
        cells = " | ".join("n/a" if np.isnan(row[k][0]) else fmt(row[k], 3)
                           for k in ALIGNMENT_KEYS)
        lines.append(f"| {m} | {row['step']} | {cells} | "
                     f"{fmt(row['diff_real_over_pixel'], 3)} |")
  return "\n".join(lines) + "\n"


def write_plot(path: str, seeds: list[dict]) -> None:
  """PSNR on the test blocks vs step, every method, mean ± std over seeds."""
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
    mean = vals.mean(axis=0)
    std = vals.std(axis=0, ddof=1) if len(curves) > 1 else 0 * mean
    series[m] = list(zip(steps, mean.tolist()))
    if len(curves) > 1:
      bands[m] = list(zip(steps, (mean - std).tolist(), (mean + std).tolist()))
  if series:
    protocols = sorted({s.get("protocol", "branch") for s in seeds})
    plot.line_plot(path, series, bands=bands or None,
                   title="PSNR on the simulated-real test blocks "
                   f"(mean ± std over seeds; protocol {', '.join(protocols)})",
                   xlabel="restorer updates" + (
                       " after the warm-up" if protocols == ["branch"] else ""),
                   ylabel="PSNR (dB)")


def aggregate(output: str, command: str = "") -> dict:
  """Collects OUT/runs/seed_*.json into results.json/.md and the plot."""
  seeds = []
  for f in sorted(glob.glob(os.path.join(output, "runs", "seed_*.json"))):
    with open(f) as fh:
      seeds.append(json.load(fh))
  if not seeds:
    raise ReportError(f"--output {output}: no runs/seed_*.json to report")
  inputs, sets = None, {}
  blocks_file = os.path.join(output, "blocks.json")
  if os.path.exists(blocks_file):
    with open(blocks_file) as fh:
      sets = json.load(fh)
    inputs = {k: [b["input_psnr"] for b in v] for k, v in sets.items()}
  summary = summarize(seeds)
  commands = sorted({s["command"] for s in seeds if s.get("command")})
  results = {"runs": [r for s in seeds for r in s["runs"]],
             "warmup": [{"seed": s["seed"], **s["warmup"]} for s in seeds
                        if "warmup" in s],
             "gate": [{"seed": s["seed"], **s["gate"]} for s in seeds
                      if "gate" in s],
             "summary": summary, "blocks": sets,
             "commands": commands or [command]}
  outputs.write_text(os.path.join(output, "results.json"),
                     json.dumps(results, indent=1))
  outputs.write_text(os.path.join(output, "results.md"),
                     markdown(seeds, summary, "; ".join(results["commands"]),
                              inputs))
  write_plot(os.path.join(output, "psnr_vs_step.png"), seeds)
  first = os.path.join(output, f"comparison_seed{seeds[0]['seed']}.png")
  if os.path.exists(first):
    shutil.copyfile(first, os.path.join(output, "comparison.png"))
  return results
