"""Does the critic's gradient point the restorer toward the real domain?

Where the real domain has ground truth (the simulated one does), the answer
can be measured directly instead of waiting for PSNR to move. For a batch
with `syn_lq`, `syn_gt`, `real_lq` and `real_gt` ([B, H, W, 3], the task's
value range), every restorer gradient below is compared by cosine with

  oracle      ∇θ Charbonnier(real_gt, real_lq + G(real_lq)), the direction
              supervised training on the real domain would take;

  pixel       ∇θ Charbonnier(syn_gt, syn_lq + G(syn_lq)): synthetic training
  diff        ∇θ of the diffusion term (mse + triplet) / 2, α excluded
  diff_syn    its part through G(syn_lq) (more synthetic supervision)
  diff_real   its part through G(real_lq): the adaptation signal proper

A positive cos(diff_real, oracle) means a descent step on the critic's loss
also lowers the real-domain error; near zero means the critic gives the
restorer no usable real-domain signal. `out_cos_real` is the same question
asked of the outputs: cos(∂L_diff/∂G(real_lq), ∂L_oracle/∂G(real_lq)).
Norms are reported so the α-weighted term can be compared with the pixel one.
Each cosine is also given over the kernels alone (`cos_<g>_kernels`, every
leaf named "bias" left out): a bias gradient can only shift the output by a
constant, and such a shift can dominate a cosine without any of the
structure that removes noise.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np
import optax

from dada_jax import models
from dada_jax import objective

GRADIENTS = ("pixel", "diff", "diff_syn", "diff_real")


def _cos(a, b):
  return optax.tree.vdot(a, b) / (optax.tree.norm(a) * optax.tree.norm(b)
                                  + 1e-30)


def _kernels(tree):
  """`tree` with every leaf named "bias" zeroed (same structure)."""
  return jax.tree_util.tree_map_with_path(
      lambda path, x: jnp.zeros_like(x) if getattr(
          path[-1], "key", None) == "bias" else x, tree)


def make_alignment_fn(config: mlc.ConfigDict):
  """Returns jitted `alignment(params, batch, rng) -> {name: float32 []}`.

  `params` holds "restorer" and "critic"; the critic runs in eval mode (no
  dropout) on draws from `rng`. Keys: cos_<g> for g in GRADIENTS (against
  the oracle gradient), cos_<g>_kernels (biases left out), out_cos_real,
  norm_<g> and norm_oracle.
  """
  restorer = models.make_restorer(config)
  diffusion_loss = objective.make_diffusion_loss(config, "dda")
  eps = config.objective.charbonnier_eps
  num_timesteps = config.diffusion.num_timesteps

  @jax.jit
  def alignment(params, batch, rng):
    theta = params["restorer"]
    apply = lambda x: lambda p: restorer.apply({"params": p}, x)
    syn_res, vjp_syn = jax.vjp(apply(batch["syn_lq"]), theta)
    real_res, vjp_real = jax.vjp(apply(batch["real_lq"]), theta)
    draws = objective.sample_draws(rng, batch["syn_gt"].shape, num_timesteps)

    def diff(s, r):
      return diffusion_loss(params["critic"], batch, s, r, draws, rng,
                            train=False)[0]

    d_syn, d_real = jax.grad(diff, argnums=(0, 1))(syn_res, real_res)
    d_pixel = jax.grad(lambda s: objective.charbonnier(
        batch["syn_gt"], batch["syn_lq"] + s, eps))(syn_res)
    d_oracle = jax.grad(lambda r: objective.charbonnier(
        batch["real_gt"], batch["real_lq"] + r, eps))(real_res)
    grads = {"pixel": vjp_syn(d_pixel)[0], "diff_syn": vjp_syn(d_syn)[0],
             "diff_real": vjp_real(d_real)[0]}
    grads["diff"] = jax.tree.map(jnp.add, grads["diff_syn"],
                                 grads["diff_real"])
    oracle = vjp_real(d_oracle)[0]
    out = {f"cos_{k}": _cos(grads[k], oracle) for k in GRADIENTS}
    out.update({f"cos_{k}_kernels": _cos(_kernels(grads[k]), _kernels(oracle))
                for k in GRADIENTS})
    out.update({f"norm_{k}": optax.tree.norm(grads[k]) for k in GRADIENTS})
    out["norm_oracle"] = optax.tree.norm(oracle)
    out["out_cos_real"] = _cos(d_real, d_oracle)
    return out

  return alignment


def mean_alignment(alignment, params, batches, rng) -> dict[str, float]:
  """`alignment` averaged over `batches` (each with its own fold of rng)."""
  rows = [jax.device_get(alignment(params, b, jax.random.fold_in(rng, i)))
          for i, b in enumerate(batches)]
  return {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
