"""The sim2real benchmark: does noise-space adaptation move a restorer trained
on synthetic pairs toward a (simulated) real domain?

  dada-jax sim2real --task denoise --seeds 3 --warmup-steps 2000 \
      --warmup-lr 1e-3 --steps 300 --critic-warmup-steps 150 --output OUT \
      [--images DIR] [--methods vanilla,dda,oracle,...] [--probe-batches 2]

Protocol, per seed (configs/demo.py's networks and data unless overridden):
  1. warm-up: a restorer trained from scratch on the synthetic pairs alone
     (`warmup_steps`, optionally at its own learning rate), so every branch
     starts from a competent baseline. It is checked against a trained 7x7
     linear filter on the synthetic test set, and cached in
     OUT/runs/warmup_seed_<s>/ for later runs with the same settings.
  2. branches from the warmed-up restorer, each `steps` restorer updates on
     the same data seed:
       vanilla       synthetic pairs only (the baseline)
       dda           + the diffusion critic on the real stream (the paper)
       no_shuffle    dda without the channel shuffle (ablation)
       no_negatives  dda without residual-swapped negatives (ablation)
       oracle        supervised on the simulated-real pairs (upper bound)
     A branch with a critic starts from a fresh one (as the paper trains),
     first trained alone for `critic_warmup_steps` on the frozen restorer
     when asked, and measures on training batches how its gradient into the
     restorer aligns with real-domain supervision (`dada_jax.sim2real.alignment`).
  3. the EMA restorer of every branch is scored (RGB PSNR/SSIM) on held-out
     photos with the real degradation (`*_real`) and with the synthetic one
     (`*_syn`); test photos are never trained on and nothing is tuned on them.

Writes OUT/runs/seed_<s>.json after every branch (keeping branches of other
methods an earlier run saved from the same warm-up), then (`sim2real.report`)
OUT/results.json (every run), OUT/results.md (mean ± std over seeds, the
alignment table), OUT/psnr_vs_step.png and OUT/comparison.png (input |
vanilla | dda | ground truth, real test photos).
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
import time
from typing import Sequence

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dada_jax import config_lib
from dada_jax import data
from dada_jax import errors
from dada_jax import evaluate
from dada_jax import image_io
from dada_jax import metrics
from dada_jax import models
from dada_jax import objective
from dada_jax import outputs
from dada_jax import sharding
from dada_jax import train as train_lib
from dada_jax import train_step as step_lib
from dada_jax import weights
from dada_jax.data import train_data
from dada_jax.sim2real import alignment as alignment_lib
from dada_jax.sim2real.report import METHODS
from dada_jax.sim2real.report import ReportError
from dada_jax.sim2real.report import aggregate
from dada_jax.sim2real.report import write_comparison
LINEAR_TAPS = 7
SYN_TEST_SEED = 2000


class Sim2RealError(errors.UserError):
  """A bad sim2real flag; the message names it."""


__all__ = ["METHODS", "ReportError", "Sim2RealError", "aggregate",
           "method_config", "run", "run_seed"]


def method_config(base: mlc.ConfigDict, method: str) -> mlc.ConfigDict:
  """The config of one branch (see the module docstring)."""
  if method not in METHODS:
    raise Sim2RealError(f"--methods: unknown {method!r}; expected some of "
                        f"{list(METHODS)}")
  c = copy.deepcopy(base)
  c.objective.mode = "vanilla" if method in ("vanilla", "oracle") else "dda"
  c.objective.channel_shuffle = method != "no_shuffle"
  c.objective.negatives = method != "no_negatives"
  if method == "oracle":
    c.data.syn.update(kind="simulated", task=c.task, domain="real",
                      seed=c.data.real.seed, paired=True)
  return c


def test_sources(config: mlc.ConfigDict):
  """(real test, synthetic test): the eval photos with each degradation."""
  real = data.build_source(config.eval, "config.eval")
  syn_stream = copy.deepcopy(config.eval)
  syn_stream.update(domain="synthetic", seed=SYN_TEST_SEED)
  return real, data.build_source(syn_stream, "config.eval (synthetic)")


def _score(config, params, source, **kw):
  r = evaluate.evaluate_paired(config, params, source, preset="rgb",
                               num_samples=0, **kw)
  return r["psnr"], r["ssim"]


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


def fit_linear_filter(config, steps: int, seed: int):
  """A 7x7 linear filter (3 -> 3 channels, bias) trained like the restorer
  (Charbonnier, Adam) on the synthetic pairs; returns restore(image)."""
  import optax  # pylint: disable=g-import-not-at-top
  k, pad = LINEAR_TAPS, LINEAR_TAPS // 2
  w = np.zeros((k, k, 3, 3), np.float32)
  w[pad, pad] = np.eye(3)
  params = {"w": jnp.asarray(w), "b": jnp.zeros((3,), jnp.float32)}

  def apply(p, x):  # x: [B, H, W, 3], edge-padded so edges are not darkened
    x = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    return jax.lax.conv_general_dilated(
        x, p["w"], (1, 1), "VALID",
        dimension_numbers=("NHWC", "HWIO", "NHWC")) + p["b"]

  tx = optax.adam(1e-3)
  opt = tx.init(params)
  eps = config.objective.charbonnier_eps

  @jax.jit
  def step(params, opt, lq, gt):
    def loss(p):
      return objective.charbonnier(gt, apply(p, lq), eps)
    grads = jax.grad(loss)(params)
    updates, opt = tx.update(grads, opt)
    return optax.apply_updates(params, updates), opt

  c = copy.deepcopy(config)
  c.objective.mode, c.seed = "vanilla", seed
  data_iter, _ = train_data.make_train_data(c)
  for _ in range(steps):
    b = next(data_iter)
    params, opt = step(params, opt, b["syn_lq"], b["syn_gt"])
  return jax.jit(lambda x: apply(params, x[None])[0])


def score_fn(config, restore, source) -> tuple[float, float]:
  """Mean RGB PSNR/SSIM of `restore` ([H, W, 3] -> [H, W, 3]) on `source`."""
  vr = config.data.value_range
  psnrs, ssims = [], []
  for i in range(len(source)):
    item = source[i]
    lq = image_io.to_float(item["lq"], vr)
    out = np.asarray(restore(jnp.asarray(lq)))
    r = metrics.evaluate_pair(out, item["gt"], "rgb", value_range=vr)
    psnrs.append(r["psnr"])
    ssims.append(r["ssim"])
  return float(np.mean(psnrs)), float(np.mean(ssims))


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
  return json.dumps({k: c[k] for k in ("task", "dtype", "restorer", "optim",
                                        "data")} | {"seed": seed,
                                                    "steps": steps},
                    sort_keys=True, default=str)


def warm_up(base: mlc.ConfigDict, seed: int, steps: int, init_rng, warm_rng,
            lr: float = 0.0, cache: str | None = None):
  """(EMA restorer, whether it came from `cache`) of the synthetic-only
  warm-up at learning rate `lr` (0: the config's).

  `cache` is a folder: each warm-up is saved there by `weights.save_params`
  in a subfolder named by a hash of everything it depends on, so a later run
  with the same settings reuses it and other settings never overwrite it.
  """
  warm_cfg = method_config(base, "vanilla")
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
                        source=f"sim2real warm-up: {key}")
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


def run_seed(base: mlc.ConfigDict, seed: int, *, warmup_steps: int,
             steps: int, methods, eval_every: int, critic_warmup_steps: int = 0,
             num_probe_batches: int = 0, warmup_lr: float = 0.0,
             warmup_cache: str | None = None, log=print,
             on_progress=None) -> dict:
  """Warm-up, linear-filter check and every branch of one seed.

  Branches with a critic first warm it up for `critic_warmup_steps` on the
  frozen warm-up restorer. With `num_probe_batches` > 0 their curves carry
  `alignment` (see `dada_jax.sim2real.alignment`) at step 0 and every eval.
  `on_progress(result)` runs after the warm-up and after each branch with the
  result so far (so an interrupted run keeps its finished branches).
  """
  on_progress = on_progress or (lambda r: None)
  real_test, syn_test = test_sources(base)
  rng = jax.random.key(seed)
  init_rng, warm_rng, branch_rng = jax.random.split(rng, 3)
  start = time.perf_counter()
  # Branches start from the warm-up's EMA restorer, the one scored here.
  warm_ema, cached = warm_up(base, seed, warmup_steps, init_rng, warm_rng,
                             lr=warmup_lr, cache=warmup_cache)
  if cached:
    log(f"seed {seed}: warm-up restorer from {warmup_cache}")
  psnr_real, ssim_real = _score(base, warm_ema, real_test)
  psnr_syn, ssim_syn = _score(base, warm_ema, syn_test)
  linear = fit_linear_filter(base, min(warmup_steps, 1000), 1000 * seed)
  lin_psnr_syn, _ = score_fn(base, linear, syn_test)
  lin_psnr_real, _ = score_fn(base, linear, real_test)
  out = {"seed": seed, "warmup": {
      "steps": warmup_steps, "lr": warmup_lr or base.optim.lr,
      "psnr_real": psnr_real, "ssim_real": ssim_real,
      "psnr_syn": psnr_syn, "ssim_syn": ssim_syn,
      "linear_filter_psnr_syn": lin_psnr_syn,
      "linear_filter_psnr_real": lin_psnr_real,
      "beats_linear_filter": psnr_syn > lin_psnr_syn,
      "seconds": time.perf_counter() - start}, "runs": [], "restorers": {}}
  log(f"seed {seed} warm-up {warmup_steps} steps: PSNR real {psnr_real:.2f} "
      f"syn {psnr_syn:.2f} (7x7 linear filter: syn {lin_psnr_syn:.2f}, real "
      f"{lin_psnr_real:.2f})")
  on_progress(out)
  probes = probe_batches(base, num_probe_batches, 1000 * seed + 3)
  for method in methods:
    cfg = method_config(base, method)
    start = time.perf_counter()
    params = {"restorer": warm_ema}
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

    scores = {}  # step -> ((psnr, ssim) real, (psnr, ssim) syn)

    def point(i, ema, trained, cfg=cfg, align=align, scores=scores):
      scores[i] = _score(cfg, ema, real_test), _score(cfg, ema, syn_test)
      p = {"step": i, "psnr_real": scores[i][0][0],
           "psnr_syn": scores[i][1][0]}
      if align is not None:  # the raw params, the ones being trained
        p["alignment"] = alignment_lib.mean_alignment(
            align, trained, probes, probe_rng)
      return p

    curve = [{"step": 0, "psnr_real": psnr_real, "psnr_syn": psnr_syn}]
    if align is not None:
      curve[0]["alignment"] = alignment_lib.mean_alignment(
          align, params, probes, probe_rng)

    state = train_branch(
        cfg, params, steps, init_rng=branch_rng, step_rng=branch_rng,
        data_seed=1000 * seed + 1,
        on_eval=lambda i, st: curve.append(point(
            i, jax.device_get(st["ema"]["restorer"]), st["params"])),
        eval_every=eval_every)
    ema = jax.device_get(state["ema"]["restorer"])
    if steps not in scores:  # the last curve point already scored this EMA
      point(steps, ema, None, align=None)
    (pr, sr), (ps, ss) = scores[steps]
    out["runs"].append({
        "task": base.task, "method": method, "seed": seed, "steps": steps,
        "warmup_steps": warmup_steps, "psnr_real": pr, "ssim_real": sr,
        "psnr_syn": ps, "ssim_syn": ss, "curve": curve, **extra,
        "seconds": time.perf_counter() - start})
    out["restorers"][method] = ema
    cos = curve[-1].get("alignment", {}).get("cos_diff_real")
    log(f"seed {seed} {method:>12}: PSNR real {pr:.2f} syn {ps:.2f}  SSIM "
        f"real {sr:.4f} syn {ss:.4f}" + (
            f"  cos(diff_real, oracle) {cos:+.3f}" if cos is not None else "")
        + f"  ({time.perf_counter() - start:.0f}s)")
    on_progress(out)
  return out


# ------------------------------------------------ the command behind `sim2real`

def _saver(path: str, methods, command: str):
  """save(result) for OUT/runs/seed_<s>.json. Branches of other methods that
  an earlier run saved there from the same warm-up are kept; a file from
  another warm-up is moved to OUT/runs/replaced/ first, never overwritten."""
  kept = []
  if os.path.exists(path):
    with open(path) as f:
      old = json.load(f)
    kept = [r for r in old.get("runs", []) if r["method"] not in methods]
    old_warmup = {k: old.get("warmup", {}).get(k) for k in ("steps", "lr")}

  def save(result):
    nonlocal kept
    if kept and old_warmup != {k: result["warmup"][k] for k in old_warmup}:
      os.makedirs(os.path.join(os.path.dirname(path), "replaced"),
                  exist_ok=True)
      os.replace(path, os.path.join(os.path.dirname(path), "replaced",
                                    os.path.basename(path)))
      kept = []
    out = {k: v for k, v in result.items() if k != "restorers"}
    out.update(runs=kept + out["runs"], command=command)
    outputs.write_text(path, json.dumps(out, indent=1))

  return save


def run(config: mlc.ConfigDict, *, output: str, seeds: Sequence[int],
        steps: int, warmup_steps: int, critic_warmup_steps: int = 0,
        probe_batches: int = 0, warmup_lr: float = 0.0, eval_every: int = 0,
        methods: Sequence[str] = METHODS, images: str | None = None,
        report_only: bool = False, command: str = "") -> int:
  """Runs the benchmark (or the demo) and prints the Markdown table.

  Arguments are checked before anything is trained; the messages name the
  `dada-jax sim2real` flags.

  Args:
    config: the base config (configs/demo.py's, usually); updated in place
      with `images` and the objective's ramp.
    output: folder for runs/, results.json, results.md and the figures.
    seeds: the seeds to run, each its own warm-up and branches.
    steps: restorer updates per branch after the warm-up.
    warmup_steps: synthetic-only updates shared by a seed's branches.
    critic_warmup_steps: critic-only updates on the frozen warm-up restorer
      before each branch with a critic (0: a fresh critic).
    probe_batches: training batches for the gradient-alignment probe (0: off).
    warmup_lr: learning rate of the warm-up (0: config.optim.lr).
    eval_every: steps between curve points (0: steps / 5).
    methods: the branches to run, `METHODS` names.
    images: a folder of clean photos to use instead of the built-in ones.
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
  if steps < 1 or warmup_steps < 1:
    raise Sim2RealError("--steps and --warmup-steps must be >= 1")
  if critic_warmup_steps < 0 or probe_batches < 0:
    raise Sim2RealError("--critic-warmup-steps and --probe-batches must be "
                        ">= 0")
  if warmup_lr < 0:
    raise Sim2RealError(f"--warmup-lr {warmup_lr}: must be >= 0 (0: the "
                        "config's optim.lr)")
  if images:
    for stream in (config.data.syn, config.data.real, config.data.ref,
                   config.eval):
      stream.path = images
  eval_every = eval_every or max(steps // 5, 1)
  ramp = max(steps // 3, 1)
  config.objective.update(steps_per_epoch=0, ramp_steps=ramp)
  config_lib.validate(config,
                     num_devices=len(sharding.make_mesh(config).devices.flat))
  real_test, _ = test_sources(config)
  os.makedirs(os.path.join(output, "runs"), exist_ok=True)
  for seed in seeds:
    path = os.path.join(output, "runs", f"seed_{seed}.json")
    save = _saver(path, methods, command)
    result = run_seed(
        config, seed, warmup_steps=warmup_steps, steps=steps,
        methods=methods, eval_every=eval_every,
        critic_warmup_steps=critic_warmup_steps,
        num_probe_batches=probe_batches, warmup_lr=warmup_lr,
        warmup_cache=os.path.join(output, "runs",
                                  f"warmup_seed_{seed}"),
        on_progress=save, log=lambda m: print(m, flush=True))
    write_comparison(os.path.join(output, f"comparison_seed{seed}.png"),
                     config, result["restorers"], real_test)
  aggregate(output, command)
  with open(os.path.join(output, "results.md")) as f:
    print(f.read())
  print(f"wrote {output}/results.json, results.md, psnr_vs_step.png, "
        "comparison.png")
  return 0
