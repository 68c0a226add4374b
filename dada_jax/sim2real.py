"""The sim2real benchmark: does noise-space adaptation move a restorer trained
on synthetic pairs toward a (simulated) real domain?

  dada-jax sim2real --task denoise --seeds 3 --warmup-steps 1000 --steps 1000 \
      --output OUT [--images DIR] [--methods vanilla,dda,oracle,...]

Protocol, per seed (configs/demo.py's networks and data unless overridden):
  1. warm-up: a restorer trained from scratch on the synthetic pairs alone
     (`warmup_steps`), so every branch starts from a competent baseline. It
     is checked against a trained 7x7 linear filter on the synthetic test set.
  2. branches from the warmed-up restorer, each `steps` restorer updates on
     the same data seed, with a fresh critic where one is trained:
       vanilla       synthetic pairs only (the baseline)
       dda           + the diffusion critic on the real stream (the paper)
       no_shuffle    dda without the channel shuffle (ablation)
       no_negatives  dda without residual-swapped negatives (ablation)
       oracle        supervised on the simulated-real pairs (upper bound)
  3. the EMA restorer of every branch is scored (RGB PSNR/SSIM) on held-out
     photos with the real degradation (`*_real`) and with the synthetic one
     (`*_syn`); test photos are never trained on and nothing is tuned on them.

Writes OUT/runs/seed_<s>.json after every branch, then (`sim2real_report`)
OUT/results.json (every run), OUT/results.md (mean ± std over seeds),
OUT/psnr_vs_step.png and OUT/comparison.png (input | vanilla | dda | ground
truth, real test photos).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dada_jax import data
from dada_jax import evaluate
from dada_jax import image_io
from dada_jax import metrics
from dada_jax import models
from dada_jax import objective
from dada_jax import sharding
from dada_jax import train as train_lib
from dada_jax import train_step as step_lib

from dada_jax.sim2real_report import METHODS
from dada_jax.sim2real_report import ReportError
from dada_jax.sim2real_report import aggregate
from dada_jax.sim2real_report import write_atomic
from dada_jax.sim2real_report import write_comparison
LINEAR_TAPS = 7
SYN_TEST_SEED = 2000


class Sim2RealError(ValueError):
  """A bad sim2real flag; the message names it."""


__all__ = ["METHODS", "ReportError", "Sim2RealError", "aggregate",
           "method_config", "run", "run_seed"]


def method_config(base: mlc.ConfigDict, method: str) -> mlc.ConfigDict:
  """The config of one branch (see the module docstring)."""
  if method not in METHODS:
    raise Sim2RealError(f"--methods: unknown {method!r}; expected some of "
                        f"{list(METHODS)}")
  c = mlc.ConfigDict(base.to_dict())
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
  syn_stream = mlc.ConfigDict(config.eval.to_dict())
  syn_stream.update(domain="synthetic", seed=SYN_TEST_SEED)
  return real, data.build_source(syn_stream, "config.eval (synthetic)")


def _score(config, params, source, **kw):
  r = evaluate.evaluate_paired(config, params, source, preset="rgb",
                               num_samples=0, **kw)
  return r["psnr"], r["ssim"]


@dataclasses.dataclass
class Trainer:
  """Runs the sharded, donated train step of one config over its data."""
  config: mlc.ConfigDict

  def __post_init__(self):
    c = self.config
    self.mesh = sharding.make_mesh(c)
    self.batch_sharding = sharding.batch_sharding(self.mesh)

  def run(self, params, steps: int, rng, data_seed: int, on_eval=None,
          eval_every: int = 0):
    """Trains from `params` ({role: tree}); returns the final state.

    `on_eval(step, ema_restorer_params)` runs every `eval_every` steps.
    """
    c = mlc.ConfigDict(self.config.to_dict())
    c.seed = data_seed
    init = lambda p: step_lib.init_state(c, rng, p)
    shape = jax.eval_shape(init, params)
    state_sharding = sharding.state_shardings(shape, self.mesh, c.sharding)
    state = jax.jit(init, out_shardings=state_sharding)(params)
    step = sharding.jit_train_step(step_lib.make_train_step(c), self.mesh,
                                   state_sharding)
    data_iter, _ = train_lib.make_train_data(c)
    for i in range(1, steps + 1):
      batch = sharding.put_batch(next(data_iter), self.batch_sharding)
      state, _ = step(state, batch, rng)
      if on_eval and eval_every and (i % eval_every == 0 or i == steps):
        on_eval(i, state["ema"]["restorer"])
    return state


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

  c = mlc.ConfigDict(config.to_dict())
  c.objective.mode, c.seed = "vanilla", seed
  data_iter, _ = train_lib.make_train_data(c)
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


def run_seed(base: mlc.ConfigDict, seed: int, *, warmup_steps: int,
             steps: int, methods, eval_every: int, log=print,
             on_progress=None) -> dict:
  """Warm-up, linear-filter check and every branch of one seed.

  `on_progress(result)` runs after the warm-up and after each branch with the
  result so far (so an interrupted run keeps its finished branches).
  """
  on_progress = on_progress or (lambda r: None)
  real_test, syn_test = test_sources(base)
  rng = jax.random.key(seed)
  init_rng, warm_rng, branch_rng = jax.random.split(rng, 3)
  warm_cfg = method_config(base, "vanilla")
  start = time.perf_counter()
  params = models.init_params(warm_cfg, init_rng, roles=("restorer",))
  warm = Trainer(warm_cfg).run(params, warmup_steps, warm_rng,
                               data_seed=1000 * seed)
  # Branches start from the warm-up's EMA restorer, the one scored here.
  warm_ema = jax.device_get(warm["ema"]["restorer"])
  psnr_real, ssim_real = _score(base, warm_ema, real_test)
  psnr_syn, ssim_syn = _score(base, warm_ema, syn_test)
  linear = fit_linear_filter(base, min(warmup_steps, 1000), 1000 * seed)
  lin_psnr_syn, _ = score_fn(base, linear, syn_test)
  lin_psnr_real, _ = score_fn(base, linear, real_test)
  out = {"seed": seed, "warmup": {
      "steps": warmup_steps, "psnr_real": psnr_real, "ssim_real": ssim_real,
      "psnr_syn": psnr_syn, "ssim_syn": ssim_syn,
      "linear_filter_psnr_syn": lin_psnr_syn,
      "linear_filter_psnr_real": lin_psnr_real,
      "beats_linear_filter": psnr_syn > lin_psnr_syn,
      "seconds": time.perf_counter() - start}, "runs": [], "restorers": {}}
  log(f"seed {seed} warm-up {warmup_steps} steps: PSNR real {psnr_real:.2f} "
      f"syn {psnr_syn:.2f} (7x7 linear filter: syn {lin_psnr_syn:.2f}, real "
      f"{lin_psnr_real:.2f})")
  on_progress(out)
  for method in methods:
    cfg = method_config(base, method)
    start = time.perf_counter()
    params = {"restorer": warm_ema}
    if "critic" in step_lib.roles(cfg):
      params.update(models.init_params(
          cfg, jax.random.fold_in(init_rng, 1), roles=("critic",)))
    curve = [{"step": 0, "psnr_real": psnr_real, "psnr_syn": psnr_syn}]

    def on_eval(i, ema, cfg=cfg, curve=curve):
      ema = jax.device_get(ema)
      curve.append({"step": i, "psnr_real": _score(cfg, ema, real_test)[0],
                    "psnr_syn": _score(cfg, ema, syn_test)[0]})

    state = Trainer(cfg).run(params, steps, branch_rng,
                             data_seed=1000 * seed + 1, on_eval=on_eval,
                             eval_every=eval_every)
    ema = jax.device_get(state["ema"]["restorer"])
    pr, sr = _score(cfg, ema, real_test)
    ps, ss = _score(cfg, ema, syn_test)
    out["runs"].append({
        "task": base.task, "method": method, "seed": seed, "steps": steps,
        "warmup_steps": warmup_steps, "psnr_real": pr, "ssim_real": sr,
        "psnr_syn": ps, "ssim_syn": ss, "curve": curve,
        "seconds": time.perf_counter() - start})
    out["restorers"][method] = ema
    log(f"seed {seed} {method:>12}: PSNR real {pr:.2f} syn {ps:.2f}  SSIM "
        f"real {sr:.4f} syn {ss:.4f}  ({time.perf_counter() - start:.0f}s)")
    on_progress(out)
  return out


# ---------------------------------------------------------------------- CLI

DEMO_CONFIG = os.path.join(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))), "configs", "demo.py")


def add_parsers(sub) -> None:
  """Adds `sim2real` and `demo` (sim2real's vanilla vs DDA, one seed)."""
  s = sub.add_parser("sim2real", help="vanilla vs DDA vs oracle and ablations "
                     "on built-in photos with simulated real domains")
  d = sub.add_parser("demo", help="the main job on built-in data: vanilla vs "
                     "DDA on simulated real camera noise (CPU-sized)")
  for p, steps, warm, methods, out in (
      (s, 1000, 1000, ",".join(METHODS), None),
      (d, 150, 500, "vanilla,dda", "/tmp/dada_demo")):
    p.add_argument("--task", default="denoise",
                   choices=("denoise", "derain", "deblur"))
    p.add_argument("--config", default=None,
                   help="default: configs/demo.py:task=TASK")
    p.add_argument("--seeds", default="3" if p is s else "1",
                   help="N (seeds 0..N-1) or a comma list, e.g. 3,4")
    p.add_argument("--steps", type=int, default=steps,
                   help="restorer updates per branch after the warm-up")
    p.add_argument("--warmup-steps", type=int, default=warm,
                   help="synthetic-only updates shared by a seed's branches")
    p.add_argument("--eval-every", type=int, default=0,
                   help="curve points per branch (default: steps / 5)")
    p.add_argument("--methods", default=methods,
                   help=f"comma list of {', '.join(METHODS)}")
    p.add_argument("--images", default=None,
                   help="a folder of clean photos to use instead of the "
                   "built-in ones (every 4th sorted file is held out)")
    p.add_argument("--output", required=out is None, default=out,
                   help="folder for results.json, results.md and figures")
    p.add_argument("--report-only", action="store_true",
                   help="only re-aggregate OUT/runs/seed_*.json")


def config_spec(args) -> str:
  return args.config or f"{DEMO_CONFIG}:task={args.task}"


def _seeds(text: str) -> list[int]:
  try:
    values = [int(v) for v in text.split(",") if v.strip()]
  except ValueError:
    values = []
  if not values or min(values) < 0:
    raise Sim2RealError(f"--seeds {text!r}: expected N > 0 or a comma list "
                        "of seeds >= 0")
  return list(range(values[0])) if "," not in text else values


def run(args, config: mlc.ConfigDict, command: str = "") -> int:
  """Runs the benchmark (or the demo) and prints the Markdown table."""
  os.makedirs(os.path.join(args.output, "runs"), exist_ok=True)
  if args.report_only:
    aggregate(args.output, command)
    with open(os.path.join(args.output, "results.md")) as f:
      print(f.read())
    return 0
  methods = [m for m in args.methods.split(",") if m]
  for m in methods:
    method_config(config, m)  # validates the name
  if args.steps < 1 or args.warmup_steps < 1:
    raise Sim2RealError("--steps and --warmup-steps must be >= 1")
  seeds = _seeds(args.seeds)
  if args.images:
    for stream in (config.data.syn, config.data.real, config.data.ref,
                   config.eval):
      stream.path = args.images
  eval_every = args.eval_every or max(args.steps // 5, 1)
  ramp = max(args.steps // 3, 1)
  config.objective.update(steps_per_epoch=0, ramp_steps=ramp)
  train_lib.check_config(config, len(sharding.make_mesh(config).devices.flat))
  real_test, _ = test_sources(config)
  for seed in seeds:
    path = os.path.join(args.output, "runs", f"seed_{seed}.json")
    save = lambda r, path=path: write_atomic(path, json.dumps(
        {**{k: v for k, v in r.items() if k != "restorers"},
         "command": command}, indent=1))
    result = run_seed(config, seed, warmup_steps=args.warmup_steps,
                      steps=args.steps, methods=methods,
                      eval_every=eval_every, on_progress=save,
                      log=lambda m: print(m, flush=True))
    write_comparison(os.path.join(args.output, f"comparison_seed{seed}.png"),
                     config, result["restorers"], real_test)
  aggregate(args.output, command)
  with open(os.path.join(args.output, "results.md")) as f:
    print(f.read())
  print(f"wrote {args.output}/results.json, results.md, psnr_vs_step.png, "
        "comparison.png")
  return 0
