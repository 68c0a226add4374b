"""The critic: a guided-diffusion U-Net that predicts ε from a noisy clean image
and two restored conditions, conditioned on a continuous noise level γ.

Paper config (in 9, inner 64, mults 1-2-4-8, 2 res blocks, attn_res [16],
32 head channels): 62,643,075 parameters. `attn_res` is compared with the
downsample rate (1, 2, 4, 8 for four levels), so with [16] the only attention
block is the one in the middle, exactly as in the reference.
"""

from __future__ import annotations

import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from dada_jax.models import group_norm
from dada_jax.models import layers


class ResBlock(nn.Module):
  """Residual block with scale-shift (FiLM) conditioning and optional up/down."""
  out_channels: int
  dropout: float
  use_scale_shift_norm: bool = True
  resample: str | None = None  # "up" (nearest 2x), "down" (2x2 mean) or None
  zero_init_out: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    c_in = x.shape[-1]
    h = group_norm.GroupNorm32(name="in_layers_0")(x, silu=True)
    if self.resample == "up":
      h, x = layers.upsample_nearest2(h), layers.upsample_nearest2(x)
    elif self.resample == "down":
      h, x = layers.avg_pool2(h), layers.avg_pool2(x)
    h = layers.conv3x3(self.out_channels, "in_layers_2", self.dtype)(h)

    emb_width = 2 * self.out_channels if self.use_scale_shift_norm else (
        self.out_channels)
    emb_out = nn.Dense(emb_width, kernel_init=layers.KAIMING, dtype=self.dtype,
                       name="emb_layers_1")(nn.silu(emb))
    emb_out = emb_out.astype(h.dtype)[:, None, None, :]
    if self.use_scale_shift_norm:
      h = group_norm.GroupNorm32(name="out_layers_0")(
          h, film=jnp.split(emb_out, 2, axis=-1), silu=True)
    else:
      h = group_norm.GroupNorm32(name="out_layers_0")(h + emb_out, silu=True)
    # Named as nn.Dropout auto-names itself: the same rng stream.
    h = layers.Dropout(self.dropout, deterministic=not train,
                       name="Dropout_0")(h)
    h = layers.conv3x3(self.out_channels, "out_layers_3", self.dtype,
                       layers.output_init(self.zero_init_out))(h)

    # A 1x1 conv where the width changes (the reference's 3x3 option,
    # use_conv, is never enabled by its UNet).
    if self.out_channels != c_in:
      x = layers.conv1x1(self.out_channels, "skip_connection", self.dtype)(x)
    return x + h


class Downsample(nn.Module):
  """Stride-2 3x3 conv (`op`) or 2x2 average pool; used without resblock_updown."""
  use_conv: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    if not self.use_conv:
      return layers.avg_pool2(x)
    return layers.conv3x3(x.shape[-1], "op", self.dtype, strides=2)(x)


class Upsample(nn.Module):
  """Nearest 2x upsampling, then an optional 3x3 conv (`conv`)."""
  use_conv: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = layers.upsample_nearest2(x)
    if not self.use_conv:
      return x
    return layers.conv3x3(x.shape[-1], "conv", self.dtype)(x)


class AttentionBlock(nn.Module):
  """Self-attention over spatial positions, legacy QKV head layout.

  The qkv projection's output channels are ordered per head as
  [q_h, k_h, v_h] blocks of `head_channels` each (guided-diffusion's
  QKVAttentionLegacy); the softmax runs in float32.
  """
  head_channels: int
  zero_init_out: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    if c % self.head_channels:
      raise ValueError(f"attention: {c} channels are not divisible by "
                       f"num_head_channels={self.head_channels}")
    heads, ch = c // self.head_channels, self.head_channels
    seq = x.reshape(b, hgt * wid, c)
    qkv = layers.conv1x1(3 * c, "qkv", self.dtype, spatial_dims=1)(
        group_norm.GroupNorm32(name="norm")(seq))
    qkv = qkv.reshape(b, hgt * wid, heads, 3, ch)
    scale = 1.0 / math.sqrt(math.sqrt(ch))
    q, k, v = qkv[..., 0, :] * scale, qkv[..., 1, :] * scale, qkv[..., 2, :]
    logits = jnp.einsum("bthc,bshc->bhts", q, k)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    a = jnp.einsum("bhts,bshc->bthc", weights.astype(v.dtype), v)
    a = a.reshape(b, hgt * wid, c)
    out = layers.conv1x1(c, "proj_out", self.dtype,
                         layers.output_init(self.zero_init_out), 1)(a)
    return (seq + out).reshape(b, hgt, wid, c)


class CriticUNet(nn.Module):
  """Noise-level-conditioned U-Net predicting ε.

  Attributes mirror the reference `UNet` arguments; `zero_init_outputs` zeroes
  the ResBlock output convs, attention projections and the final conv (the
  guided-diffusion module default). The reference's training script
  re-initialises every conv with kaiming-normal, so the paper runs with
  `zero_init_outputs=False`.

  Call: x [B, H, W, in_channels] (noisy image and two conditions,
  concatenated on channels), gammas [B] continuous noise levels in [0, 1]
  -> ε̂ [B, H, W, out_channels] float32.
  """
  in_channels: int = 9
  out_channels: int = 3
  inner_channels: int = 64
  channel_mults: Sequence[int] = (1, 2, 4, 8)
  res_blocks: int = 2
  attn_res: Sequence[int] = (16,)
  num_head_channels: int = 32
  dropout: float = 0.2
  use_scale_shift_norm: bool = True
  resblock_updown: bool = True
  conv_resample: bool = True
  zero_init_outputs: bool = False
  dtype: jnp.dtype = jnp.float32
  # None: no rematerialisation. Otherwise each ResBlock's activations are
  # recomputed in the backward pass, keeping what this jax.checkpoint_policies
  # name saves ("": nothing but the block's inputs).
  remat_policy: str | None = None

  @nn.compact
  def __call__(self, x: jax.Array, gammas: jax.Array, *, train: bool = False):
    if x.shape[-1] != self.in_channels:
      raise ValueError(f"critic expects {self.in_channels} input channels, "
                       f"got {x.shape[-1]}")
    inner, dt, zero = self.inner_channels, self.dtype, self.zero_init_outputs
    emb_dim = 4 * inner
    emb = layers.gamma_embedding(gammas.reshape(-1), inner)
    emb = nn.Dense(emb_dim, kernel_init=layers.KAIMING, dtype=dt,
                   name="cond_embed_0")(emb)
    emb = nn.Dense(emb_dim, kernel_init=layers.KAIMING, dtype=dt,
                   name="cond_embed_2")(nn.silu(emb))

    block_cls = ResBlock
    if self.remat_policy is not None:
      policy = (getattr(jax.checkpoint_policies, self.remat_policy)
                if self.remat_policy else None)
      # Same module path and parameters; `train` (argument 3) is static.
      block_cls = nn.remat(ResBlock, static_argnums=(3,), policy=policy)

    def res(out_ch, name, **kw):
      return block_cls(out_ch, self.dropout, self.use_scale_shift_norm,
                       zero_init_out=zero, dtype=dt, name=name, **kw)

    def attn(name):
      return AttentionBlock(self.num_head_channels, zero, dt, name=name)

    ch = int(self.channel_mults[0] * inner)
    h = layers.conv3x3(ch, "input_blocks_0_0", dt)(x.astype(dt))
    hs, block, ds = [h], 1, 1
    n_levels = len(self.channel_mults)
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.res_blocks):
        ch = int(mult * inner)
        h = res(ch, f"input_blocks_{block}_0")(h, emb, train)
        if ds in self.attn_res:
          h = attn(f"input_blocks_{block}_1")(h)
        hs.append(h)
        block += 1
      if level != n_levels - 1:
        name = f"input_blocks_{block}_0"
        if self.resblock_updown:
          h = res(ch, name, resample="down")(h, emb, train)
        else:
          h = Downsample(self.conv_resample, dt, name=name)(h)
        hs.append(h)
        block += 1
        ds *= 2

    h = res(ch, "middle_block_0")(h, emb, train)
    h = attn("middle_block_1")(h)
    h = res(ch, "middle_block_2")(h, emb, train)

    block = 0
    for level, mult in reversed(list(enumerate(self.channel_mults))):
      for i in range(self.res_blocks + 1):
        h = jnp.concatenate([h, hs.pop().astype(h.dtype)], axis=-1)
        ch = int(inner * mult)
        h = res(ch, f"output_blocks_{block}_0")(h, emb, train)
        sub = 1
        if ds in self.attn_res:
          h = attn(f"output_blocks_{block}_{sub}")(h)
          sub += 1
        if level and i == self.res_blocks:
          name = f"output_blocks_{block}_{sub}"
          if self.resblock_updown:
            h = res(ch, name, resample="up")(h, emb, train)
          else:
            h = Upsample(self.conv_resample, dt, name=name)(h)
          ds //= 2
        block += 1

    h = group_norm.GroupNorm32(name="out_0")(h, silu=True)
    h = layers.conv3x3(self.out_channels, "out_2", dt,
                       layers.output_init(zero))(h)
    return h.astype(jnp.float32)
