"""Train state and the pure train step `(state, batch, rng) -> (state, metrics)`.

State is a plain dict, so Orbax restores it without a target class and the
sharding tree mirrors it exactly:

  {"step": int32 [],
   "params": {"restorer": ..., "critic": ...},   # no critic in vanilla mode
   "opt": optax state,
   "ema": {"restorer": ..., "critic": ...},
   "bad_steps": int32 [],   # consecutive skipped (non-finite) steps
   "batch_stats": {"restorer": ...}}   # only for a restorer with BatchNorm

BatchNorm running statistics (DnCNN) are not optimised: the objective
updates them (see `objective.make_objective`) and the step stores them. The
EMA covers params only; evaluating the EMA restorer uses the live statistics
(`checkpoint.Checkpointer.restore_params`). The reference's EMA copy never
updates its buffers, so its EMA DnCNN would normalise with the statistics it
was built with; that is not reproduced.

One Adam updates restorer and critic together on L_pix + α·L_diffusion, as the
reference does (the critic thus learns from α-scaled gradients), and the EMA
(decay 0.9999) follows after every step. With `optim.grad_accum_steps` > 1 a
step accumulates the gradients of microbatches first (see `make_train_step`).
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import ml_collections as mlc
import optax

from dada_jax import models
from dada_jax import objective

State = dict[str, Any]


def roles(config: mlc.ConfigDict) -> tuple[str, ...]:
  """Networks trained in this mode: the critic only with a diffusion loss."""
  if config.objective.mode == "vanilla":
    return ("restorer",)
  return ("restorer", "critic")


def make_optimizer(config: mlc.ConfigDict) -> optax.GradientTransformation:
  o = config.optim
  if o.weight_decay:
    tx = optax.adamw(o.lr, o.b1, o.b2, o.eps, weight_decay=o.weight_decay)
  else:
    tx = optax.adam(o.lr, o.b1, o.b2, o.eps)
  if o.grad_clip:
    tx = optax.chain(optax.clip_by_global_norm(o.grad_clip), tx)
  frozen = tuple(o.get("frozen", ()))
  if frozen:  # e.g. sim2real's critic warm-up holds the restorer fixed
    labels = lambda params: {
        role: jax.tree.map(lambda _, r=role: "frozen" if r in frozen else
                           "trained", tree) for role, tree in params.items()}
    tx = optax.multi_transform({"trained": tx, "frozen": optax.set_to_zero()},
                               labels)
  return tx


def init_state(config: mlc.ConfigDict, rng: jax.Array, weights=None) -> State:
  """A fresh state; `weights` ({role: tree}, see `models.split_stats`)
  replaces the random init."""
  if weights is None:
    weights = models.init_params(config, rng, roles=roles(config))
  params, stats = {}, {}
  for role, tree in weights.items():
    params[role], role_stats = models.split_stats(tree)
    if role_stats is not None:
      stats[role] = jax.tree.map(jnp.asarray, role_stats)
  params = jax.tree.map(lambda x: jnp.asarray(x, jnp.float32), params)
  state = {
      "step": jnp.zeros((), jnp.int32),
      "params": params,
      "opt": make_optimizer(config).init(params),
      "ema": jax.tree.map(jnp.copy, params),
      "bad_steps": jnp.zeros((), jnp.int32),
  }
  if stats:
    state["batch_stats"] = stats
  return state


def alpha_at(config: mlc.ConfigDict, step):
  """α of the paper's ramp at a 0-based step.

  The reference sets p = epoch / 300 with epochs counted from 1, constant
  within an epoch. With `objective.steps_per_epoch` = E > 0 this reproduces
  it exactly when `ramp_steps` = 300·E: p = (step // E + 1)·E / ramp_steps.
  With E = 0, α ramps every step: p = (step + 1) / ramp_steps.
  """
  o = config.objective
  per = o.steps_per_epoch
  done = (step // per + 1) * per if per > 0 else step + 1
  return objective.alpha_ramp(done / max(o.ramp_steps, 1), o.diff_weight)


def split_microbatches(tree, k: int):
  """Splits every [B, ...] leaf of `tree` into [K, B/K, ...] microbatches.

  Microbatch j holds rows j, K + j, 2K + j, ...: strided, not contiguous. The
  trainer shards the batch over the D devices of `data` in blocks of B/D
  consecutive rows, so [B, ...] -> [B/K, K, ...] regroups each device's own
  rows and the swap to [K, B/K, ...] leaves axis 1 sharded over `data`:
  every microbatch is spread over all D devices, B/(K·D) rows each (which
  `config_lib.validate` requires to be whole), and no row moves between
  devices. Contiguous chunks would put each microbatch on D/K devices, or
  cost an all-to-all.
  """
  def split(x):
    return jnp.swapaxes(x.reshape(x.shape[0] // k, k, *x.shape[1:]), 0, 1)
  return jax.tree.map(split, tree)


def make_grad_fn(config: mlc.ConfigDict):
  """Returns `grad_fn(params, batch, rng, alpha, batch_stats=None) ->
  (grads, LossTerms, new batch_stats)`.

  The train step's gradient of the objective on `batch` (streams [B, ...])
  with `rng` the step's key: one `value_and_grad` when
  `config.optim.grad_accum_steps` is 1, else the mean of the gradients of K
  microbatches, accumulated in float32 by a `lax.scan` (the program does not
  grow with K), with LossTerms the mean of the microbatches' terms. See
  `make_train_step` for what this computes. BatchNorm statistics (None when
  the restorer has none) pass through the microbatches in order.
  """
  loss_fn = objective.make_objective(config)
  k = config.optim.get("grad_accum_steps", 1)
  mode = config.objective.mode
  num_timesteps = config.diffusion.num_timesteps

  def gradient(params, batch, rng, alpha, draws, stats):
    """(grads, terms, stats after) of one evaluation."""
    loss = lambda p: loss_fn(p, batch, rng, alpha, draws=draws, train=True,
                             batch_stats=stats)
    (_, aux), grads = jax.value_and_grad(loss, has_aux=True)(params)
    terms, stats = aux if stats is not None else (aux, None)
    return grads, terms, stats

  def grad_fn(params, batch: dict[str, jax.Array], rng: jax.Array, alpha,
              batch_stats=None):
    if k == 1:
      return gradient(params, batch, rng, alpha, None, batch_stats)
    # The K = 1 step's draws, for the whole batch, split with it.
    draw_rng, dropout_rng = objective.split_rng(rng)
    draws = None
    if mode != "vanilla":
      draws = objective.sample_draws(draw_rng, batch["syn_gt"].shape,
                                     num_timesteps)

    def accumulate(carry, xs):
      total, stats = carry
      i, micro, micro_draws = xs
      grads, terms, stats = gradient(
          params, micro, jax.random.fold_in(dropout_rng, i), alpha,
          micro_draws, stats)
      total = jax.tree.map(lambda t, g: t + g.astype(jnp.float32), total,
                           grads)
      return (total, stats), terms

    zeros = jax.tree.map(lambda p: jnp.zeros(p.shape, jnp.float32), params)
    (total, stats), terms = jax.lax.scan(
        accumulate, (zeros, batch_stats),
        (jnp.arange(k), *split_microbatches((batch, draws), k)))
    grads = jax.tree.map(lambda g: g / k, total)
    return grads, jax.tree.map(lambda t: jnp.mean(t, axis=0), terms), stats

  return grad_fn


def make_train_step(config: mlc.ConfigDict):
  """Returns the pure `train_step(state, batch, rng) -> (state, metrics)`.

  `rng` is the run's base key; the step folds in `state["step"]`, so a resumed
  run draws exactly what the uninterrupted run would have. Metrics are float32
  scalars: loss/{total,pixel,diffusion,mse,triplet}, grad_norm/<role>, alpha,
  lr, skipped.

  A step whose loss or gradients are not finite is not applied: params,
  optimizer state, EMA and BatchNorm statistics stay as they were, `skipped`
  is 1 and `state["bad_steps"]` counts the streak (the trainer stops on a
  long one).

  Gradient accumulation, `config.optim.grad_accum_steps` = K > 1: the batch
  of B is split into K microbatches of B/K (`split_microbatches`; every
  stream in it) and the step applies the mean of their gradients with one
  optimizer update and one EMA update; it counts as one step (α as at
  K = 1). The loss is the mean of the K microbatch losses, each loss/*
  metric the mean of its microbatch values, grad_norm/* the norm of the
  mean gradient. The Charbonnier and noise-MSE terms are means over samples,
  so their gradient is the whole batch's, up to float32 summation order. The
  triplet hinge relu(d_pos - d_neg + margin) is taken per microbatch on its
  own mean distances, i.e. the hinge the reference computes at batch B/K:
  the mean of the K hinges is at least the whole batch's hinge (Jensen), and
  its gradient equals the whole batch's only when every microbatch's hinge
  is in the whole batch's state (all active or all inactive).

  Random draws at K > 1: t, u (γ), ε and both channel-shuffle coins are
  drawn for the whole batch from the step's key exactly as at K = 1 and
  split with it, so they are the K = 1 step's draws. Critic dropout draws
  per microbatch from a key folded with the microbatch index, so its masks
  differ from K = 1's. Hence with critic dropout 0 and the hinge inactive
  (or `objective.negatives` off) a K > 1 step equals the K = 1 step up to
  float32 round-off. A run is deterministic and resumes exactly; K may
  change on resume (the state does not depend on it), changing only the
  dropout masks and the hinge's microbatches from there on. A BatchNorm
  restorer normalises each microbatch by its own statistics (the
  reference's at batch B/K) and updates the running ones 2K times.
  """
  grad_fn = make_grad_fn(config)
  tx = make_optimizer(config)
  decay = config.optim.ema_decay

  def train_step(state: State, batch: dict[str, jax.Array], rng: jax.Array):
    step = state["step"]
    rng = jax.random.fold_in(rng, step)
    alpha = alpha_at(config, step)

    stats = state.get("batch_stats")
    grads, terms, new_stats = grad_fn(state["params"], batch, rng, alpha,
                                      stats)
    updates, opt = tx.update(grads, state["opt"], state["params"])
    params = optax.apply_updates(state["params"], updates)
    ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p,
                       state["ema"], params)
    grad_norms = {role: optax.tree.norm(g) for role, g in grads.items()}
    # A NaN or inf anywhere makes its role's norm non-finite; one reduction
    # per role compiles far faster than an isfinite per leaf.
    finite = jnp.isfinite(terms.total) & jnp.all(jnp.stack(
        [jnp.isfinite(n) for n in grad_norms.values()]))
    keep_if_bad = lambda new, old: jax.tree.map(
        lambda n, o: jnp.where(finite, n, o), new, old)
    params = keep_if_bad(params, state["params"])
    opt = keep_if_bad(opt, state["opt"])
    ema = keep_if_bad(ema, state["ema"])
    metrics = {f"loss/{k}": v for k, v in terms._asdict().items()}
    for role, n in grad_norms.items():
      metrics[f"grad_norm/{role}"] = n
    metrics["alpha"] = jnp.asarray(alpha, jnp.float32)
    metrics["lr"] = jnp.asarray(config.optim.lr, jnp.float32)
    metrics["skipped"] = 1.0 - finite.astype(jnp.float32)
    new_state = {"step": step + 1, "params": params, "opt": opt, "ema": ema,
                 "bad_steps": jnp.where(finite, 0, state["bad_steps"] + 1)}
    if stats is not None:
      new_state["batch_stats"] = keep_if_bad(new_stats, stats)
    return new_state, metrics

  return train_step
