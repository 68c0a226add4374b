"""Diffusion math of the critic: β schedules, ᾱ (γ) tables, continuous noise
levels, q_sample, the posterior and an ancestral sampler.

Schedules are computed in NumPy float64 and cast once to float32 tables, the
way the reference registers its buffers. Naming follows Palette/SR3
(`gammas` = ᾱ_t, `q_sample`, `predict_start_from_noise`) so the code reads
side by side with the PyTorch reference.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np


def _warmup_betas(start, end, n, frac):
  betas = end * np.ones(n, np.float64)
  k = int(n * frac)
  betas[:k] = np.linspace(start, end, k, dtype=np.float64)
  return betas


def _cosine_betas(n, s):
  t = np.arange(n + 1, dtype=np.float64) / n + s
  f = np.cos(t / (1 + s) * math.pi / 2) ** 2
  f = f / f[0]
  return np.minimum(1 - f[1:] / f[:-1], 0.999)


SCHEDULES = {
    "quad": lambda n, a, b, s: np.linspace(a**0.5, b**0.5, n,
                                           dtype=np.float64) ** 2,
    "linear": lambda n, a, b, s: np.linspace(a, b, n, dtype=np.float64),
    "warmup10": lambda n, a, b, s: _warmup_betas(a, b, n, 0.1),
    "warmup50": lambda n, a, b, s: _warmup_betas(a, b, n, 0.5),
    "const": lambda n, a, b, s: b * np.ones(n, np.float64),
    "jsd": lambda n, a, b, s: 1.0 / np.linspace(n, 1, n, dtype=np.float64),
    "cosine": lambda n, a, b, s: _cosine_betas(n, s),
}


def make_betas(schedule: str, num_timesteps: int, linear_start: float = 1e-6,
               linear_end: float = 1e-2, cosine_s: float = 8e-3) -> np.ndarray:
  """β_1..β_T as float64 [T]; `schedule` is one of SCHEDULES."""
  if schedule not in SCHEDULES:
    raise ValueError(f"unknown beta schedule {schedule!r}; expected one of "
                     f"{list(SCHEDULES)}")
  return SCHEDULES[schedule](num_timesteps, linear_start, linear_end, cosine_s)


@dataclasses.dataclass(frozen=True)
class Schedule:
  """Float32 [T] tables, identical to the reference's registered buffers."""
  betas: np.ndarray  # float64, kept for exact host-side math
  gammas: jax.Array  # ᾱ_t
  sqrt_recip_gammas: jax.Array
  sqrt_recipm1_gammas: jax.Array
  posterior_log_variance_clipped: jax.Array
  posterior_mean_coef1: jax.Array
  posterior_mean_coef2: jax.Array

  @property
  def num_timesteps(self) -> int:
    return int(self.betas.shape[0])

  def buffers(self) -> dict[str, np.ndarray]:
    """The six tables as float32 NumPy arrays, keyed by the torch buffer name."""
    names = ("gammas", "sqrt_recip_gammas", "sqrt_recipm1_gammas",
             "posterior_log_variance_clipped", "posterior_mean_coef1",
             "posterior_mean_coef2")
    return {n: np.asarray(getattr(self, n), np.float32) for n in names}


def make_schedule(schedule: str = "linear", num_timesteps: int = 1000,
                  linear_start: float = 1e-6, linear_end: float = 1e-2,
                  cosine_s: float = 8e-3) -> Schedule:
  betas = make_betas(schedule, num_timesteps, linear_start, linear_end,
                     cosine_s)
  alphas = 1.0 - betas
  gammas = np.cumprod(alphas)
  gammas_prev = np.append(1.0, gammas[:-1])
  post_var = betas * (1.0 - gammas_prev) / (1.0 - gammas)
  f32 = lambda a: jnp.asarray(np.asarray(a, np.float32))
  return Schedule(
      betas=betas,
      gammas=f32(gammas),
      sqrt_recip_gammas=f32(np.sqrt(1.0 / gammas)),
      sqrt_recipm1_gammas=f32(np.sqrt(1.0 / gammas - 1)),
      posterior_log_variance_clipped=f32(np.log(np.maximum(post_var, 1e-20))),
      posterior_mean_coef1=f32(betas * np.sqrt(gammas_prev) / (1 - gammas)),
      posterior_mean_coef2=f32((1 - gammas_prev) * np.sqrt(alphas)
                               / (1 - gammas)),
  )


def schedule_from_config(diffusion_config) -> Schedule:
  d = diffusion_config
  return make_schedule(d.schedule, d.num_timesteps, d.linear_start,
                       d.linear_end, d.cosine_s)


# --------------------------------------------------------------- training ---

def sample_t_u(rng: jax.Array, batch: int, num_timesteps: int):
  """Draws t ~ U{1, ..., T-1} [B] int32 and u ~ U[0, 1) [B] float32."""
  t_rng, u_rng = jax.random.split(rng)
  t = jax.random.randint(t_rng, (batch,), 1, num_timesteps, dtype=jnp.int32)
  u = jax.random.uniform(u_rng, (batch,), jnp.float32)
  return t, u


def continuous_gammas(schedule: Schedule, t: jax.Array, u: jax.Array):
  """γ = ᾱ[t-1] + (ᾱ[t] - ᾱ[t-1]) · u, a noise level between two steps. [B]."""
  lo = schedule.gammas[t - 1]
  hi = schedule.gammas[t]
  return (hi - lo) * u.reshape(lo.shape) + lo


def q_sample(y0: jax.Array, gammas: jax.Array, noise: jax.Array):
  """sqrt(γ)·y0 + sqrt(1-γ)·ε for y0, noise [B, H, W, C] and gammas [B]."""
  g = gammas.reshape(-1, *([1] * (y0.ndim - 1)))
  return jnp.sqrt(g) * y0 + jnp.sqrt(1 - g) * noise


# ------------------------------------------------------------ sampling ---

def predict_start_from_noise(schedule: Schedule, y_t, t, noise):
  """x̂0 = sqrt(1/ᾱ_t)·y_t - sqrt(1/ᾱ_t - 1)·ε̂, t [B] int."""
  bshape = (-1,) + (1,) * (y_t.ndim - 1)
  return (schedule.sqrt_recip_gammas[t].reshape(bshape) * y_t
          - schedule.sqrt_recipm1_gammas[t].reshape(bshape) * noise)


def q_posterior(schedule: Schedule, y0_hat, y_t, t):
  """Mean and log-variance of q(y_{t-1} | y_t, y0_hat)."""
  bshape = (-1,) + (1,) * (y_t.ndim - 1)
  mean = (schedule.posterior_mean_coef1[t].reshape(bshape) * y0_hat
          + schedule.posterior_mean_coef2[t].reshape(bshape) * y_t)
  return mean, schedule.posterior_log_variance_clipped[t].reshape(bshape)


def p_sample_loop(eps_fn: Callable[[jax.Array, jax.Array], jax.Array],
                  schedule: Schedule, shape, rng: jax.Array,
                  clip: tuple[float, float] | None = (-1.0, 1.0)):
  """Ancestral sampling from pure noise, for visualising what the critic learnt.

  Not used in training or restoration (the critic is discarded after
  training). The reference's unused `p_mean_variance` feeds the critic
  `[cond, y_t, y_t]`, which is not the layout it was trained on; here the
  caller's `eps_fn(y_t, gammas)` decides, e.g. concatenating `[y_t, c, c]`.

  Args:
    eps_fn: (y_t [B, H, W, C], gammas [B]) -> ε̂ [B, H, W, C].
    schedule: the noise schedule.
    shape: (B, H, W, C) of the sample.
    rng: key for the initial noise and every step's noise.
    clip: value range x̂0 is clipped to, or None.

  Returns:
    y_0 [B, H, W, C].
  """
  init_rng, loop_rng = jax.random.split(rng)
  y = jax.random.normal(init_rng, shape, jnp.float32)
  batch = shape[0]

  def step(y, i):
    t = jnp.full((batch,), schedule.num_timesteps - 1 - i, jnp.int32)
    eps = eps_fn(y, schedule.gammas[t])
    y0 = predict_start_from_noise(schedule, y, t, eps)
    if clip is not None:
      y0 = jnp.clip(y0, *clip)
    mean, log_var = q_posterior(schedule, y0, y, t)
    noise = jax.random.normal(jax.random.fold_in(loop_rng, i), shape)
    noise = jnp.where(t.reshape(-1, 1, 1, 1) > 0, noise, 0.0)
    return mean + noise * jnp.exp(0.5 * log_var), None

  y, _ = jax.lax.scan(step, y, jnp.arange(schedule.num_timesteps))
  return y
