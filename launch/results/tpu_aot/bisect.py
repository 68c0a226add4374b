"""Compiles pieces of the train step for a described TPU topology and times them.

  python launch/results/tpu_aot/bisect.py --piece restorer \\
      --config configs/denoise.py --topology v5e:1x1 --batch 2 --patch 128

Pieces: resblock (one critic ResBlock, 128 channels, fwd+bwd), restorer (fwd+bwd of sum(G(x)) w.r.t. the restorer params), critic
(fwd+bwd of the critic on [B, P, P, 9]), loss_grad (the objective's gradient,
no optimizer), update (Adam + EMA + the non-finite keep on given grads, no
model), step (the whole train step). Everything is replicated over the
topology's devices (batch split over all of them for the model pieces), so
`--topology v5e:1x1` is one chip. Prints one JSON line with the compile
seconds, the lowered StableHLO size and XLA's memory analysis.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
import time

os.environ.setdefault("JAX_PLATFORMS", "cpu")

import jax  # pylint: disable=g-import-not-at-top
import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
import optax  # pylint: disable=g-import-not-at-top
from jax.experimental import topologies  # pylint: disable=g-import-not-at-top
from jax.sharding import NamedSharding, PartitionSpec as P  # pylint: disable=g-import-not-at-top

from dada_jax import config_lib  # pylint: disable=g-import-not-at-top
from dada_jax import models  # pylint: disable=g-import-not-at-top
from dada_jax import train_step as step_lib  # pylint: disable=g-import-not-at-top


def main(argv=None):
  argv = sys.argv[1:] if argv is None else argv
  overrides = [a[len("--config."):] for a in argv if a.startswith("--config.")]
  ap = argparse.ArgumentParser()
  ap.add_argument("--piece", required=True)
  ap.add_argument("--config", default="configs/denoise.py")
  ap.add_argument("--topology", default="v5e:1x1")
  ap.add_argument("--platform", default="tpu", help="tpu or cpu")
  ap.add_argument("--batch", type=int, default=2)
  ap.add_argument("--patch", type=int, default=0)
  ap.add_argument("--lower-only", action="store_true")
  ap.add_argument("--old-dropout", action="store_true",
                  help="the critic's dropout as plain nn.Dropout (mask fused "
                       "into its consumers), as before the fix")
  args = ap.parse_args([a for a in argv if not a.startswith("--config.")])
  if args.old_dropout:
    import flax.linen as nn  # pylint: disable=g-import-not-at-top
    from dada_jax.models import layers  # pylint: disable=g-import-not-at-top
    layers.Dropout = nn.Dropout
  config = config_lib.load_config(args.config, overrides)
  config = config.copy_and_resolve_references()
  config.objective.update(ramp_steps=max(config.objective.ramp_steps, 1))
  patch = args.patch or config.data.patch_size
  if args.platform == "tpu":
    devices = list(topologies.get_topology_desc(
        topology_name=args.topology, platform="tpu").devices)
  else:
    devices = jax.devices()
  mesh = jax.sharding.Mesh(devices, ("data",))
  repl = NamedSharding(mesh, P())
  data = NamedSharding(mesh, P("data"))
  b = args.batch
  rng = jax.eval_shape(jax.random.key, 0)
  params = jax.eval_shape(
      lambda r: models.init_params(config, r), rng)
  sds = lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s)
  img = lambda c: jax.ShapeDtypeStruct((b, patch, patch, c), jnp.float32,
                                       sharding=data)
  prm = lambda t: jax.tree.map(lambda x: sds(x, repl), t)

  if args.piece == "restorer":
    net = models.make_restorer(config)
    fn = jax.grad(lambda p, x: jnp.sum(net.apply({"params": p}, x)))
    fargs = (prm(params["restorer"]), img(3))
  elif args.piece == "restorer_fwd":
    net = models.make_restorer(config)
    fn = lambda p, x: jnp.sum(net.apply({"params": p}, x))
    fargs = (prm(params["restorer"]), img(3))
  elif args.piece in ("critic", "critic_fwd"):
    net = models.make_critic(config)
    def f(p, x, g, r):
      return jnp.sum(net.apply({"params": p}, x, g, train=True,
                               rngs={"dropout": r}))
    fn = jax.grad(f) if args.piece == "critic" else f
    fargs = (prm(params["critic"]), img(config.critic.in_channels),
             jax.ShapeDtypeStruct((b,), jnp.float32, sharding=data),
             sds(rng, repl))
  elif args.piece == "resblock":
    # One critic ResBlock (128 channels, dropout 0.2), fwd+bwd, on
    # [B, P, P, 128]: the paper critic's input_blocks_4_0 at P = 64.
    from dada_jax.models import critic as critic_lib  # pylint: disable=g-import-not-at-top
    blk = critic_lib.ResBlock(128, config.critic.dropout)
    x0 = jnp.zeros((1, patch, patch, 128))
    e0 = jnp.zeros((1, 256))
    bp = jax.eval_shape(lambda r: blk.init({"params": r, "dropout": r}, x0,
                                           e0, True)["params"], rng)
    def f(p, x, e, r):
      return jnp.sum(blk.apply({"params": p}, x, e, True,
                               rngs={"dropout": r}))
    fn = jax.grad(f)
    fargs = (prm(bp), img(128),
             jax.ShapeDtypeStruct((b, 256), jnp.float32, sharding=data),
             sds(rng, repl))
  elif args.piece == "loss_grad":
    grad_fn = step_lib.make_grad_fn(config)
    fn = lambda p, bt, r: grad_fn(p, bt, r, jnp.float32(0.1))
    keys = ["syn_lq", "syn_gt", "real_lq"]
    fargs = (prm(params), {k: img(3) for k in keys}, sds(rng, repl))
  elif args.piece == "update":
    state = jax.eval_shape(functools.partial(step_lib.init_state, config), rng)
    tx = step_lib.make_optimizer(config)
    decay = config.optim.ema_decay

    def fn(state, grads):
      updates, opt = tx.update(grads, state["opt"], state["params"])
      params = optax.apply_updates(state["params"], updates)
      ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                         state["ema"], params)
      norms = [optax.tree.norm(g) for g in grads.values()]
      finite = jnp.all(jnp.stack([jnp.isfinite(n) for n in norms]))
      keep = lambda new, old: jax.tree.map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      return (keep(params, state["params"]), keep(opt, state["opt"]),
              keep(ema, state["ema"]))
    fargs = (prm(state), prm(params))
  elif args.piece == "step":
    state = jax.eval_shape(functools.partial(step_lib.init_state, config), rng)
    step = step_lib.make_train_step(config)
    keys = ["syn_lq", "syn_gt", "real_lq"]
    fn = step
    fargs = (prm(state), {k: img(3) for k in keys}, sds(rng, repl))
  else:
    raise SystemExit(f"unknown piece {args.piece}")

  t0 = time.perf_counter()
  lowered = jax.jit(fn).lower(*fargs)
  t1 = time.perf_counter()
  text = lowered.as_text()
  out = {"piece": args.piece, "old_dropout": args.old_dropout, "config": args.config, "overrides": overrides,
         "topology": args.topology if args.platform == "tpu" else "cpu",
         "batch": b, "patch": patch, "lower_s": round(t1 - t0, 1),
         "stablehlo_lines": text.count("\n"),
         "stablehlo_convs": text.count("stablehlo.convolution"),
         "param_leaves": len(jax.tree.leaves(params))}
  if not args.lower_only:
    compiled = lowered.compile()
    out["compile_s"] = round(time.perf_counter() - t1, 1)
    m = compiled.memory_analysis()
    if m is not None:
      out.update(arg_mib=round(m.argument_size_in_bytes / 2**20, 1),
                 temp_mib=round(m.temp_size_in_bytes / 2**20, 1),
                 code_mib=round(m.generated_code_size_in_bytes / 2**20, 2))
  print(json.dumps(out), flush=True)


if __name__ == "__main__":
  main()
