"""The sim2real benchmark: does noise-space adaptation move a restorer trained
on synthetic pairs toward a (simulated) real domain, beyond what any extra
training signal would do?

  dada-jax sim2real --task denoise --seeds 3 --protocol branch \
      --warmup-steps 3000 --warmup-lr 1e-3 --steps 100 \
      --critic-warmup-steps 50 --output OUT [--images DIR] [--methods ...]

Data (configs/demo.py): native-resolution windows of the built-in photos
rendered so that the degradation is the only gap (`dada_jax.data.rendered`);
scored per fixed block (`blocks`): test = held-out photos, validation =
train photos under new draws, syn_test = held-out photos with synthetic
degradation.

Methods, each with the same restorer updates and data seed:
  vanilla       synthetic pairs only (the baseline)
  dda           + the diffusion critic on the real stream (the paper)
  control       dda with the real stream replaced by a second, independent
                synthetic stream: same objective and critic, no real data.
                If dda ≈ control, DDA's effect is regularization.
  oracle        supervised on the real stream's pairs (the upper bound)
  no_shuffle, no_negatives   the paper's ablations
  dda_ex        dda whose critic noises a clean reference set instead of y

Protocols:
  branch  a synthetic-only warm-up (`warmup_steps`, cached in
          OUT/runs/warmup_seed_<s>/), then every method from its EMA
          restorer; a method with a critic starts a fresh critic, trained
          alone on the frozen restorer for `critic_warmup_steps` first.
          The branch's EMA starts at the warm-up restorer with a decay short
          enough that the warm-up weighs at most e^-3 ≈ 5% at the end
          (`branch_ema_decay`): an EMA that still carried the warm-up would
          shrink every difference between methods.
  joint   the paper's: restorer and critic trained together from the same
          random restorer, α ramped over `ramp_fraction` of the steps.

Go/no-go: before any method with a critic, an oracle must beat vanilla by
`GO_MARGIN_DB` on the validation blocks, both trained from scratch (branch:
the warm-up and its twin trained on the real pairs; joint: the vanilla and
oracle runs); else the seed stops and says so. Nothing is chosen on test.

Writes OUT/blocks.json (every block: photo, window, draw, seed, input
PSNR), OUT/runs/seed_<s>.json after every method, then (`report`)
OUT/results.json, OUT/results.md (verdict, paired gains with bootstrap
intervals, fraction of the oracle's gain), OUT/psnr_vs_step.png and
OUT/comparison.png (`figures`).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from typing import Sequence

import jax
import ml_collections as mlc
import numpy as np

from dada_jax import config_lib
from dada_jax import errors
from dada_jax import image_io
from dada_jax import models
from dada_jax import outputs
from dada_jax import sharding
from dada_jax import train as train_lib
from dada_jax import train_step as step_lib
from dada_jax import weights
from dada_jax.data import train_data
from dada_jax.sim2real import alignment as alignment_lib
from dada_jax.sim2real import blocks as blocks_lib
from dada_jax.sim2real import figures
from dada_jax.sim2real.report import GO_MARGIN_DB
from dada_jax.sim2real.report import METHODS
from dada_jax.sim2real.report import ReportError
from dada_jax.sim2real.report import aggregate

PROTOCOLS = ("branch", "joint")
CONTROL_SEED_OFFSET = 7919  # the control's second synthetic stream
REF_SEED_OFFSET = 104729  # dda_ex's clean reference stream


class Sim2RealError(errors.UserError):
  """A bad sim2real flag; the message names it."""


__all__ = ["METHODS", "ReportError", "Sim2RealError", "aggregate",
           "method_config", "run", "run_seed"]


def method_config(base: mlc.ConfigDict, method: str) -> mlc.ConfigDict:
  """The config of one method (see the module docstring)."""
  if method not in METHODS:
    raise Sim2RealError(f"--methods: unknown {method!r}; expected some of "
                        f"{list(METHODS)}")
  c = copy.deepcopy(base)
  c.objective.mode = {"vanilla": "vanilla", "oracle": "vanilla",
                      "dda_ex": "dda_ex"}.get(method, "dda")
  c.objective.channel_shuffle = method != "no_shuffle"
  c.objective.negatives = method != "no_negatives"
  if method == "oracle":  # supervised on the real stream's own pairs
    c.data.syn = copy.deepcopy(c.data.real)
    c.data.syn.paired = True
  if method == "control":  # a second synthetic stream in the real slot
    c.data.real = copy.deepcopy(c.data.syn)
    c.data.real.update(seed=c.data.real.seed + CONTROL_SEED_OFFSET,
                       paired=False, awgn=not config_lib.stream_paired(
                           c.data.syn))
  if method == "dda_ex" and c.data.ref.kind == "none":
    c.data.ref = copy.deepcopy(c.data.syn)
    c.data.ref.update(seed=c.data.ref.seed + REF_SEED_OFFSET, paired=False,
                      domain="clean" if c.data.ref.kind == "rendered" else
                      c.data.ref.domain)
  return c


def branch_ema_decay(decay: float, steps: int) -> float:
  """The EMA decay of a `steps`-long branch: the config's `decay`, shortened
  to 1 − 3 / steps where that would leave the start's weight, decay^steps,
  above e^-3 (0.995 over 300 steps would keep 22% of the warm-up)."""
  return min(decay, 1.0 - 3.0 / steps) if steps >= 3 else 0.0


def train_branch(config: mlc.ConfigDict, params, steps: int, *, init_rng,
                 step_rng, data_seed: int, on_eval=None, eval_every: int = 0):
  """Trains `steps` steps of `config` from `params`; returns the final state.

  Through `train.init_state` and `train.run_steps`, the code `dada-jax
  train` runs: with the same config, seed (`data_seed`) and keys it gives
  the same params. `params` ({role: tree}, every role the objective trains)
  replaces the random init from `init_rng` unless None. `on_eval(step,
  state)` runs every `eval_every` steps and after the last.
  """
  c = copy.deepcopy(config)
  c.seed = data_seed
  mesh = sharding.make_mesh(c)
  state, shardings = train_lib.init_state(c, mesh, init_rng, params)
  data_iter, _ = train_data.make_train_data(c)

  def on_step(step, state, metrics):
    del metrics
    if on_eval and eval_every and (step % eval_every == 0 or step == steps):
      on_eval(step, state)

  return train_lib.run_steps(c, mesh, state, shardings, data_iter, step_rng,
                             stop=steps, on_step=on_step)


def probe_batches(config: mlc.ConfigDict, n: int, seed: int) -> list[dict]:
  """`n` training batches with a paired real half, for `alignment`: the
  synthetic pairs of the DDA stream plus real_lq / real_gt from the
  simulated-real pairs of the same TRAIN photos (test photos stay unseen)."""
  if n < 1:
    return []
  c = method_config(config, "dda")
  c.seed = seed
  syn_iter, _ = train_data.make_train_data(c)
  o = method_config(config, "oracle")
  o.seed = seed + 1
  real_iter, _ = train_data.make_train_data(o)
  batches = []
  for _ in range(n):
    b, r = next(syn_iter), next(real_iter)
    batches.append({"syn_lq": b["syn_lq"], "syn_gt": b["syn_gt"],
                    "real_lq": r["syn_lq"], "real_gt": r["syn_gt"]})
  return batches


def _warmup_key(config: mlc.ConfigDict, seed: int, steps: int) -> str:
  """What the warm-up restorer depends on (a cached one must match it)."""
  c = config.to_dict()
  if c["optim"].get("grad_accum_steps") == 1:  # as keyed before it existed
    del c["optim"]["grad_accum_steps"]
  return json.dumps({k: c[k] for k in ("task", "dtype", "restorer", "optim",
                                        "data")} | {"seed": seed,
                                                    "steps": steps},
                    sort_keys=True, default=str)


def warm_up(base: mlc.ConfigDict, seed: int, steps: int, init_rng, warm_rng,
            lr: float = 0.0, cache: str | None = None,
            method: str = "vanilla"):
  """(EMA restorer, whether it came from `cache`) of `method` (vanilla: the
  synthetic-only warm-up; oracle: its go/no-go twin on the real pairs),
  trained from scratch at learning rate `lr` (0: the config's).

  `cache` is a folder: each warm-up is saved there by `weights.save_params`
  in a subfolder named by a hash of everything it depends on, so a later run
  with the same settings reuses it and other settings never overwrite it.
  """
  warm_cfg = method_config(base, method)
  if lr:
    warm_cfg.optim.lr = lr
  key = _warmup_key(warm_cfg, seed, steps)
  saved = None
  if cache:
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    saved = os.path.join(cache, digest)
    if os.path.isdir(os.path.join(saved, weights.PARAMS_DIR)):
      return weights.load_params(saved, warm_cfg)["restorer"], True
  params = models.init_params(warm_cfg, init_rng, roles=("restorer",))
  warm = train_branch(warm_cfg, params, steps, init_rng=warm_rng,
                      step_rng=warm_rng, data_seed=1000 * seed)
  ema = jax.device_get(warm["ema"]["restorer"])
  if saved:
    weights.save_params(saved, {"restorer": ema}, warm_cfg,
                        source=f"sim2real warm-up ({method}): {key}")
  return ema, False


def warm_up_critic(cfg: mlc.ConfigDict, params: dict, steps: int, rng,
                   data_seed: int):
  """Trains the critic alone, the restorer frozen, on the branch's objective
  (α held at its full value; Adam makes its scale irrelevant here)."""
  c = copy.deepcopy(cfg)
  c.optim.frozen = ("restorer",)
  c.objective.update(steps_per_epoch=0, ramp_steps=1)
  state = train_branch(c, params, steps, init_rng=rng, step_rng=rng,
                       data_seed=data_seed)
  return jax.device_get(state["params"]["critic"])


def _critic_methods(methods) -> list[str]:
  return [m for m in methods if m not in ("vanilla", "oracle")]


def order_methods(methods) -> list[str]:
  """vanilla and oracle first (the go/no-go check needs them), then the rest
  in the order given."""
  first = [m for m in ("vanilla", "oracle") if m in methods]
  return first + [m for m in methods if m not in first]


def gate_record(vanilla, oracle) -> dict:
  """The go/no-go check of one seed from validation block PSNRs."""
  room = float(np.mean(oracle) - np.mean(vanilla))
  return {"headroom_val": room, "go": room >= GO_MARGIN_DB,
          "blocks_vanilla": [round(float(v), 4) for v in vanilla],
          "blocks_oracle": [round(float(v), 4) for v in oracle]}


def run_seed(base: mlc.ConfigDict, seed: int, *, protocol: str,
             warmup_steps: int, steps: int, methods, eval_every: int,
             scorers: dict, critic_warmup_steps: int = 0,
             num_probe_batches: int = 0, warmup_lr: float = 0.0,
             warmup_cache: str | None = None, gate: bool = True, log=print,
             on_progress=None) -> dict:
  """Every method of one seed under `protocol` ("branch" or "joint").

  branch: a synthetic-only warm-up (`warmup_steps`, cached in
  `warmup_cache`), then each method `steps` updates from its EMA restorer.
  joint: each method trains restorer and critic together from the same
  random restorer for `steps` updates, the paper's protocol.

  Before the methods with a critic, the go/no-go check compares an oracle
  and vanilla trained from scratch on the validation blocks (branch: the
  warm-up and its twin trained on the real pairs; joint: the vanilla and
  oracle runs, which run first) and records it as `gate`. With `gate`, the
  methods with a critic run only if the oracle wins by `GO_MARGIN_DB`; else
  the seed stops there. `scorers` holds `blocks.Scorer`s for "test", "validation" and
  "syn_test". `on_progress(result)` runs after the warm-up and each method
  (an interrupted run keeps its finished methods).
  """
  on_progress = on_progress or (lambda r: None)
  rng = jax.random.key(seed)
  init_rng, warm_rng, branch_rng = jax.random.split(rng, 3)
  out = {"seed": seed, "protocol": protocol, "runs": [], "restorers": {}}
  val = scorers["validation"]
  if protocol == "branch":
    start = time.perf_counter()
    start_params, cached = warm_up(base, seed, warmup_steps, init_rng,
                                   warm_rng, lr=warmup_lr, cache=warmup_cache)
    if cached:
      log(f"seed {seed}: warm-up restorer from {warmup_cache}")
    start_blocks = {k: scorers[k](start_params)
                    for k in ("test", "validation", "syn_test")}
    out["warmup"] = {
        "steps": warmup_steps, "lr": warmup_lr or base.optim.lr,
        "psnr_real": float(start_blocks["test"].mean()),
        "psnr_val": float(start_blocks["validation"].mean()),
        "psnr_syn": float(start_blocks["syn_test"].mean()),
        # Every branch starts here: "did DDA move, or did vanilla drift?"
        "blocks": {k: [round(float(v), 4) for v in b]
                   for k, b in start_blocks.items()},
        "seconds": time.perf_counter() - start}
    log(f"seed {seed} warm-up {warmup_steps} steps: PSNR real "
        f"{out['warmup']['psnr_real']:.2f} val {out['warmup']['psnr_val']:.2f}"
        f" syn {out['warmup']['psnr_syn']:.2f}")
    if _critic_methods(methods):
      # Go/no-go: the warm-up against its twin trained on the real pairs.
      oracle, _ = warm_up(base, seed, warmup_steps, init_rng, warm_rng,
                          lr=warmup_lr, cache=warmup_cache, method="oracle")
      out["gate"] = gate_record(start_blocks["validation"], val(oracle))
    on_progress(out)
  else:
    start_params = models.init_params(base, init_rng, roles=("restorer",))[
        "restorer"]
  probes = probe_batches(base, num_probe_batches, 1000 * seed + 3)
  announced = False
  for method in order_methods(methods):
    ran = {r["method"]: r for r in out["runs"]}
    if (method in _critic_methods(methods) and "gate" not in out and
        {"vanilla", "oracle"} <= set(ran)):  # joint: they ran first
      out["gate"] = gate_record(ran["vanilla"]["blocks"]["validation"],
                                ran["oracle"]["blocks"]["validation"])
    if (method in _critic_methods(methods) and not gate and "gate" in out
        and not announced):
      announced = True
      log(f"seed {seed}: go/no-go (reported, not enforced): oracle − vanilla"
          f" on validation {out['gate']['headroom_val']:+.2f} dB")
    if method in _critic_methods(methods) and gate:
      if not out["gate"]["go"]:
        log(f"seed {seed}: NO-GO: oracle − vanilla on validation is "
            f"{out['gate']['headroom_val']:+.2f} dB < {GO_MARGIN_DB} dB; "
            "the methods with a critic are skipped (make the real domain "
            "harder or train longer; --no-gate runs them anyway)")
        on_progress(out)
        break
      log(f"seed {seed}: GO: oracle − vanilla on validation "
          f"{out['gate']['headroom_val']:+.2f} dB")
    run, ema = run_method(base, method, start_params, seed, protocol=protocol,
                          steps=steps, eval_every=eval_every, scorers=scorers,
                          critic_warmup_steps=critic_warmup_steps,
                          probes=probes, init_rng=init_rng,
                          branch_rng=branch_rng, log=log)
    run["warmup_steps"] = warmup_steps if protocol == "branch" else 0
    out["runs"].append(run)
    out["restorers"][method] = ema
    on_progress(out)
  return out


def run_method(base, method, start_params, seed, *, protocol, steps,
               eval_every, scorers, critic_warmup_steps, probes, init_rng,
               branch_rng, log=print):
  """(run record, final EMA restorer) of one method from `start_params`."""
  cfg = method_config(base, method)
  if protocol == "branch":
    cfg.optim.ema_decay = branch_ema_decay(cfg.optim.ema_decay, steps)
  start = time.perf_counter()
  params = {"restorer": start_params}
  with_critic = "critic" in step_lib.roles(cfg)
  align = (alignment_lib.make_alignment_fn(cfg) if with_critic and probes
           else None)
  probe_rng = jax.random.fold_in(branch_rng, 2)
  extra = {}
  if with_critic:
    params.update(models.init_params(
        cfg, jax.random.fold_in(init_rng, 1), roles=("critic",)))
    extra["critic_warmup_steps"] = critic_warmup_steps
    if critic_warmup_steps:
      if align is not None:
        extra["alignment_fresh_critic"] = alignment_lib.mean_alignment(
            align, params, probes, probe_rng)
      params["critic"] = warm_up_critic(
          cfg, params, critic_warmup_steps, jax.random.fold_in(branch_rng, 1),
          data_seed=1000 * seed + 2)

  scored = {}  # step -> per-block PSNRs of that step's EMA

  def point(i, ema, trained=None):
    scored[i] = {k: scorers[k](ema) for k in ("test", "validation")}
    p = {"step": i, "psnr_real": float(scored[i]["test"].mean()),
         "psnr_val": float(scored[i]["validation"].mean())}
    if align is not None and trained is not None:  # the raw params
      p["alignment"] = alignment_lib.mean_alignment(align, trained, probes,
                                                    probe_rng)
    return p

  curve = [point(0, start_params, params)]
  state = train_branch(
      cfg, params, steps, init_rng=branch_rng, step_rng=branch_rng,
      data_seed=1000 * seed + 1,
      on_eval=lambda i, st: curve.append(point(
          i, jax.device_get(st["ema"]["restorer"]), st["params"])),
      eval_every=eval_every)
  ema = jax.device_get(state["ema"]["restorer"])
  raw = jax.device_get(state["params"]["restorer"])
  if steps not in scored:  # else the last curve point scored this EMA
    point(steps, ema)
  block_psnr = {**scored[steps], "syn_test": scorers["syn_test"](ema)}
  run = {
      "task": base.task, "method": method, "seed": seed,
      "protocol": protocol, "steps": steps,
      "ema_decay": cfg.optim.ema_decay,
      "psnr_real": float(block_psnr["test"].mean()),
      "psnr_syn": float(block_psnr["syn_test"].mean()),
      "psnr_val": float(block_psnr["validation"].mean()),
      "raw": {"psnr_real": float(scorers["test"](raw).mean()),
              "psnr_val": float(scorers["validation"](raw).mean())},
      "blocks": {k: [round(float(v), 4) for v in b]
                 for k, b in block_psnr.items()},
      "curve": curve, **extra, "seconds": time.perf_counter() - start}
  cos = curve[-1].get("alignment", {}).get("cos_diff_real")
  log(f"seed {seed} {method:>12}: PSNR real {run['psnr_real']:.2f} syn "
      f"{run['psnr_syn']:.2f} val {run['psnr_val']:.2f} (raw weights: real "
      f"{run['raw']['psnr_real']:.2f})" + (
          f"  cos(diff_real, oracle) {cos:+.3f}" if cos is not None else "")
      + f"  ({run['seconds']:.0f}s)")
  return run, ema


# ------------------------------------------------ the command behind `sim2real`

def _saver(path: str, methods, command: str):
  """save(result) for OUT/runs/seed_<s>.json. Runs of other methods that an
  earlier run saved there under the same protocol (and warm-up) are kept; a
  file from another one is moved to OUT/runs/replaced/ first, never
  overwritten."""
  kept, old_key = [], None
  key = lambda r: [r.get("protocol", "branch")] + [
      r.get("warmup", {}).get(k) for k in ("steps", "lr")]
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    kept = [r for r in old.get("runs", []) if r["method"] not in methods]
    old_key = key(old)

  def save(result):
    nonlocal kept
    if kept and old_key != key(result):
      os.makedirs(os.path.join(os.path.dirname(path), "replaced"),
                  exist_ok=True)
      os.replace(path, os.path.join(os.path.dirname(path), "replaced",
                                    os.path.basename(path)))
      kept = []
    out = {k: v for k, v in result.items()
           if k not in ("restorers", "outputs")}
    out.update(runs=kept + out["runs"], command=command)
    outputs.write_text(path, json.dumps(out, indent=1))

  return save


def write_comparison(path: str, config, restorers: dict, block_sets: dict,
                     scorers: dict, crop: int = 48, rows: int = 2) -> None:
  """comparison.png: crops of validation blocks where DDA and vanilla differ
  most (chosen there, never on test) and crops fixed in advance on the test
  blocks; per method the output and its residual (output − clean)."""
  if not {"vanilla", "dda"} <= set(restorers):
    return
  methods = [m for m in ("vanilla", "dda", "control", "oracle")
             if m in restorers]
  vr = config.data.value_range
  shown = []
  for split in ("validation", "test"):
    lq, gt = scorers[split].lq, scorers[split].gt  # loaded once, in run
    outs = {m: blocks_lib.restore(config, restorers[m], lq) for m in methods}
    size = gt.shape[1]
    crop = min(crop, size)
    picks = (figures.pick_crops(outs, "dda", "vanilla", crop, rows)
             if split == "validation" else
             figures.fixed_crops(len(gt), size, crop, rows))
    names = block_sets[split].blocks()
    for b, top, left in picks:
      win = lambda x: x[b, top:top + crop, left:left + crop]
      images = {"input": win(image_io.to_uint8(lq, vr)),
                **{m: win(o) for m, o in outs.items()}, "clean": win(gt)}
      shown.append({"label": f"{split}: {names[b]['photo']} draw "
                    f"{names[b]['draw']}", "images": images, "gt": win(gt)})
  figures.write_comparison(path, shown, ["input", *methods, "clean"],
                           title="simulated-real blocks: validation crops "
                           "chosen where DDA and vanilla differ most; test "
                           "crops fixed in advance")


def run(config: mlc.ConfigDict, *, output: str, seeds: Sequence[int],
        steps: int, warmup_steps: int, protocol: str = "branch",
        ramp_fraction: float = 1 / 3, critic_warmup_steps: int = 0,
        probe_batches: int = 0, warmup_lr: float = 0.0, eval_every: int = 0,
        methods: Sequence[str] = METHODS, images: str | None = None,
        gate: bool = True, report_only: bool = False,
        command: str = "") -> int:
  """Runs the benchmark (or the demo) and prints the Markdown report.

  Arguments are checked before anything is trained; the messages name the
  `dada-jax sim2real` flags.

  Args:
    config: the base config (configs/demo.py's, usually); updated in place
      with `images` and the objective's ramp.
    output: folder for runs/, results.json, results.md and the figures.
    seeds: the seeds to run, each its own warm-up (or init) and methods.
    steps: restorer updates per method (after the warm-up, for branch).
    warmup_steps: (branch) synthetic-only updates shared by a seed's methods.
    protocol: "branch" (warm-up, then branches) or "joint" (from scratch).
    ramp_fraction: α ramps up over this fraction of `steps`.
    critic_warmup_steps: (branch) critic-only updates on the frozen warm-up
      restorer before each method with a critic (0: a fresh critic).
    probe_batches: training batches for the gradient-alignment probe (0: off).
    warmup_lr: learning rate of the warm-up (0: config.optim.lr).
    eval_every: steps between curve points (0: steps / 5).
    methods: `METHODS` names.
    images: a folder of clean photos to use instead of the built-in ones.
    gate: run methods with a critic only if the go/no-go check passes.
    report_only: only re-aggregate output/runs/seed_*.json.
    command: the command line, recorded in the results.

  Returns:
    0.
  """
  outputs.check_folder(output, "--output")
  if report_only:
    aggregate(output, command)
    with open(os.path.join(output, "results.md")) as f:
      print(f.read())
    return 0
  for m in methods:
    method_config(config, m)  # validates the name
  if protocol not in PROTOCOLS:
    raise Sim2RealError(f"--protocol {protocol!r}: expected one of "
                        f"{PROTOCOLS}")
  if steps < 1 or (protocol == "branch" and warmup_steps < 1):
    raise Sim2RealError("--steps and --warmup-steps must be >= 1")
  if critic_warmup_steps < 0 or probe_batches < 0:
    raise Sim2RealError("--critic-warmup-steps and --probe-batches must be "
                        ">= 0")
  if warmup_lr < 0:
    raise Sim2RealError(f"--warmup-lr {warmup_lr}: must be >= 0 (0: the "
                        "config's optim.lr)")
  if not 0 < ramp_fraction <= 1:
    raise Sim2RealError(f"--ramp-fraction {ramp_fraction}: must be in (0, 1]")
  if not seeds:
    raise Sim2RealError("--seeds: no seed to run (give N >= 1 or a list)")
  if (gate and protocol == "joint" and _critic_methods(methods) and
      not {"vanilla", "oracle"} <= set(methods)):
    raise Sim2RealError("--methods: a joint run's go/no-go check needs "
                        "vanilla and oracle (or pass --no-gate)")
  if images:
    for stream in (config.data.syn, config.data.real, config.data.ref,
                   config.eval):
      stream.path = images
  eval_every = eval_every or max(steps // 5, 1)
  config.objective.update(steps_per_epoch=0,
                          ramp_steps=max(round(steps * ramp_fraction), 1))
  config_lib.validate(config,
                     num_devices=len(sharding.make_mesh(config).devices.flat))
  try:
    sets = blocks_lib.block_sets(config)
  except ValueError as e:
    raise Sim2RealError(f"--config: {e}") from e
  scorers = {k: blocks_lib.Scorer(config, v) for k, v in sets.items()}
  os.makedirs(os.path.join(output, "runs"), exist_ok=True)
  outputs.write_text(os.path.join(output, "blocks.json"), json.dumps(
      {k: [{**b, "input_psnr": round(float(p), 4)} for b, p in zip(
          v.blocks(), scorers[k].input_psnr)] for k, v in sets.items()},
      indent=0))
  for seed in seeds:
    path = os.path.join(output, "runs", f"seed_{seed}.json")
    save = _saver(path, methods, command)
    result = run_seed(
        config, seed, protocol=protocol, warmup_steps=warmup_steps,
        steps=steps, methods=methods, eval_every=eval_every, scorers=scorers,
        critic_warmup_steps=critic_warmup_steps,
        num_probe_batches=probe_batches, warmup_lr=warmup_lr,
        warmup_cache=os.path.join(output, "runs", f"warmup_seed_{seed}"),
        gate=gate, on_progress=save, log=lambda m: print(m, flush=True))
    write_comparison(os.path.join(output, f"comparison_seed{seed}.png"),
                     config, result["restorers"], sets, scorers)
  aggregate(output, command)
  with open(os.path.join(output, "results.md")) as f:
    print(f.read())
  print(f"wrote {output}/results.json, results.md, psnr_vs_step.png, "
        "comparison.png")
  return 0
