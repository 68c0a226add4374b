"""The Denoising-as-Adaptation objective as a pure function of params.

Modes:
  vanilla  Charbonnier on the synthetic pair only (restorer alone).
  dda      the paper: the critic predicts ε in sqrt(γ)·syn_gt + sqrt(1-γ)·ε
           conditioned on the restored synthetic and real images, with the
           per-sample channel shuffle and residual-swapped negatives;
           L = L_pix + α·(MSE(ε, ε̂) + triplet)/2.
  dda_ex   the critic noises an unpaired clean reference image instead of
           syn_gt; no negatives: L = L_pix + α·MSE(ε, ε̂).

Batch (all [B, H, W, 3] float32 in the task's value range): `syn_lq`,
`syn_gt`, `real_lq`, and `ref_clean` for dda_ex.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import flax.struct
import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dada_jax import diffusion
from dada_jax import models

MODES = ("vanilla", "dda", "dda_ex")


@flax.struct.dataclass
class Draws:
  """Every random number one objective evaluation uses.

  t: [B] int32 in [1, T-1]; u: [B] float32 in [0, 1), γ interpolates
  ᾱ[t-1]..ᾱ[t]; swap / negswap: [B] bool, where True the restored real image
  takes the first condition slot (for the positive / negative pair);
  noise: [B, H, W, 3] ε.
  """
  t: jax.Array
  u: jax.Array
  swap: jax.Array
  negswap: jax.Array
  noise: jax.Array


class LossTerms(NamedTuple):
  """Scalar float32 loss terms."""
  total: jax.Array      # L_pix + α·L_diffusion
  pixel: jax.Array      # Charbonnier(syn_gt, syn_lq + G(syn_lq))
  diffusion: jax.Array  # (mse + triplet) / 2 in dda; mse in dda_ex and without
                        # negatives; 0 vanilla
  mse: jax.Array        # MSE(ε, ε̂)
  triplet: jax.Array    # relu(MSE(ε, ε̂) - MSE(ε, ε̂_neg) + margin)


def sample_draws(rng: jax.Array, image_shape, num_timesteps: int) -> Draws:
  """Draws t, u, both shuffle masks and ε for a batch of `image_shape`."""
  b = image_shape[0]
  tu_rng, swap_rng, neg_rng, noise_rng = jax.random.split(rng, 4)
  t, u = diffusion.sample_t_u(tu_rng, b, num_timesteps)
  return Draws(
      t=t, u=u,
      swap=jax.random.uniform(swap_rng, (b,)) > 0.5,
      negswap=jax.random.uniform(neg_rng, (b,)) > 0.5,
      noise=jax.random.normal(noise_rng, image_shape, jnp.float32))


def split_rng(rng: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(draw_rng, dropout_rng): the two keys an objective evaluation takes from
  its `rng`, the first for `sample_draws`, the second for critic dropout."""
  draw_rng, dropout_rng = jax.random.split(rng)
  return draw_rng, dropout_rng


def alpha_ramp(progress, diff_weight: float = 0.2):
  """α(p) = w·(2 / (1 + e^(-5p)) - 1) = w·tanh(2.5p), p clipped to [0, 1].

  The paper sets p = epoch / 300; `dada_jax` expresses p in steps.
  """
  p = jnp.clip(jnp.asarray(progress, jnp.float32), 0.0, 1.0)
  return diff_weight * (2.0 / (1.0 + jnp.exp(-5.0 * p)) - 1.0)


def charbonnier(x, y, eps: float = 1e-3):
  """mean(sqrt((x - y)² + eps²)) over every element."""
  d = (x - y).astype(jnp.float32)
  return jnp.mean(jnp.sqrt(d * d + eps * eps))


def mse(x, y):
  return jnp.mean(jnp.square((x - y).astype(jnp.float32)))


def _swap_slots(swap, first, second):
  m = swap.reshape(-1, 1, 1, 1)
  return jnp.where(m, second, first), jnp.where(m, first, second)


def make_diffusion_loss(config: mlc.ConfigDict, mode: str | None = None):
  """Returns the critic's term as a function of the restorer's residuals.

  diffusion_loss(critic_params, batch, syn_res, real_res, draws, dropout_rng,
  train) -> (diff, mse_pos, triplet), scalars; `syn_res` / `real_res` are
  G(syn_lq) / G(real_lq), [B, H, W, 3]. Split out of the objective so that
  gradients can be followed through each domain's residual separately
  (`dada_jax.sim2real.alignment`).
  """
  mode = mode or config.objective.mode
  critic = models.make_critic(config)
  schedule = diffusion.schedule_from_config(config.diffusion)
  margin = config.objective.triplet_margin
  shuffle = config.objective.get("channel_shuffle", True)
  negatives = mode == "dda" and config.objective.get("negatives", True)

  def critic_apply(critic_params, x, gammas, train, dropout_rng):
    return critic.apply({"params": critic_params}, x, gammas, train=train,
                        rngs={"dropout": dropout_rng})

  def diffusion_loss(critic_params, batch, syn_res, real_res, draws: Draws,
                     dropout_rng, train: bool = True):
    syn_lq, real_lq = batch["syn_lq"], batch["real_lq"]
    b = syn_lq.shape[0]
    syn_out, real_out = syn_lq + syn_res, real_lq + real_res
    gammas = diffusion.continuous_gammas(schedule, draws.t, draws.u)
    clean = batch["ref_clean"] if mode == "dda_ex" else batch["syn_gt"]
    noisy = diffusion.q_sample(clean, gammas, draws.noise)
    swap = draws.swap if shuffle else jnp.zeros_like(draws.swap)
    c1, c2 = _swap_slots(swap, syn_out, real_out)
    critic_in = [jnp.concatenate([noisy, c1, c2], axis=-1)]
    if negatives:
      # Residual-swapped negatives: each input with the other domain's residual.
      negswap = draws.negswap if shuffle else jnp.zeros_like(draws.negswap)
      n1, n2 = _swap_slots(negswap, syn_lq + real_res, real_lq + syn_res)
      critic_in.append(jnp.concatenate([noisy, n1, n2], axis=-1))
    # One critic call on positives and negatives stacked on the batch axis.
    k = len(critic_in)
    eps_hat = critic_apply(critic_params, jnp.concatenate(critic_in),
                           jnp.tile(gammas, k), train, dropout_rng)
    mse_pos = mse(draws.noise, eps_hat[:b])
    if not negatives:  # dda_ex, or the dda ablation: L_noise alone
      return mse_pos, mse_pos, jnp.zeros((), jnp.float32)
    mse_neg = mse(draws.noise, eps_hat[b:])
    triplet = jax.nn.relu(mse_pos - mse_neg + margin)
    return (mse_pos + triplet) / 2.0, mse_pos, triplet

  return diffusion_loss


def make_objective(config: mlc.ConfigDict, mode: str | None = None):
  """Returns loss_fn(params, batch, rng, alpha, *, draws=None, train=True,
  batch_stats=None).

  `loss_fn` returns (total [], LossTerms). `rng` feeds critic dropout and,
  when `draws` is None, the draws (see `sample_draws`, `split_rng`); pass
  recorded draws to reproduce a reference evaluation exactly.

  A restorer with BatchNorm (DnCNN) needs `batch_stats` ({"restorer":
  running statistics}); `loss_fn` then returns (total, (LossTerms, new
  batch_stats)), as `Module.apply` does with `mutable`. As in the reference,
  it is called on syn_lq and then on real_lq: with `train`, each call is
  normalised by its own batch's statistics and updates the running ones, in
  that order; without, both use the running ones, which come back unchanged.
  Batch statistics are the whole (global) batch's under a sharded jit, like
  torch's SyncBatchNorm. Other restorers take both domains in one call.
  """
  mode = mode or config.objective.mode
  if mode not in MODES:
    raise ValueError(f"objective mode {mode!r}: expected one of {MODES}")
  restorer = models.make_restorer(config)
  eps = config.objective.charbonnier_eps
  num_timesteps = config.diffusion.num_timesteps
  diffusion_loss = (make_diffusion_loss(config, mode) if mode != "vanilla"
                    else None)

  def residuals(restorer_params, stats, inputs, train):
    """([G(x) for x in inputs], running statistics after them)."""
    if stats is None:  # one call for all inputs
      res = restorer.apply({"params": restorer_params},
                           jnp.concatenate(inputs))
      return jnp.split(res, len(inputs)), None
    out = []
    for x in inputs:
      variables = {"params": restorer_params, models.STATS: stats}
      if train:
        y, new = restorer.apply(variables, x, train=True,
                                mutable=[models.STATS])
        stats = new[models.STATS]
      else:
        y = restorer.apply(variables, x)
      out.append(y)
    return out, stats

  def loss_fn(params: dict[str, Any], batch: dict[str, jax.Array],
              rng: jax.Array, alpha, *, draws: Draws | None = None,
              train: bool = True, batch_stats=None):
    draw_rng, dropout_rng = split_rng(rng)
    syn_lq, syn_gt = batch["syn_lq"], batch["syn_gt"]
    zero = jnp.zeros((), jnp.float32)
    stats = None if batch_stats is None else batch_stats["restorer"]

    def result(total, terms, stats):
      if batch_stats is None:
        return total, terms
      return total, (terms, {**batch_stats, "restorer": stats})

    if mode == "vanilla":
      (syn_res,), stats = residuals(params["restorer"], stats, [syn_lq],
                                    train)
      pixel = charbonnier(syn_gt, syn_lq + syn_res, eps)
      return result(pixel, LossTerms(pixel, pixel, zero, zero, zero), stats)

    if draws is None:
      draws = sample_draws(draw_rng, syn_gt.shape, num_timesteps)
    (syn_res, real_res), stats = residuals(
        params["restorer"], stats, [syn_lq, batch["real_lq"]], train)
    pixel = charbonnier(syn_gt, syn_lq + syn_res, eps)
    diff, mse_pos, triplet = diffusion_loss(
        params["critic"], batch, syn_res, real_res, draws, dropout_rng, train)
    total = alpha * diff + pixel
    return result(total, LossTerms(total, pixel, diff, mse_pos, triplet),
                  stats)

  return loss_fn


def draws_from_reference(t, u, swap, negswap, noise_nchw) -> Draws:
  """Builds Draws from arrays recorded by the PyTorch reference (NCHW noise)."""
  return Draws(
      t=jnp.asarray(np.asarray(t), jnp.int32),
      u=jnp.asarray(np.asarray(u, np.float32).reshape(-1)),
      swap=jnp.asarray(np.asarray(swap, bool)),
      negswap=jnp.asarray(np.asarray(negswap, bool)),
      noise=jnp.asarray(np.transpose(noise_nchw, (0, 2, 3, 1))))
