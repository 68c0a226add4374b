"""Uformer (Wang et al., CVPR 2022) as the reference's `models/net/uformer.py`.

A 4-level U-shaped encoder-decoder of LeWin Transformer blocks (window
self-attention with a relative position bias, shifted windows in every odd
block, and a locally-enhanced feed-forward), NHWC. The forward returns the
output projection (a 3x3 conv) and adds no residual itself; Noise-DA's
wrapper adds the input.

Tokens stay [B, H, W, C]: the reference flattens them to [B, H*W, C] row-major
and recovers H = W = sqrt(H*W), so it only runs square inputs; here H and W
are carried separately and a square input gives the same numbers.

Window sizes and shifts are fixed at construction from `img_size`, as the
reference does: a level whose resolution `img_size // 2**i` is at most
`win_size` uses that resolution as its window and never shifts. The shifted-
window masks are computed for the size actually run.

Left as the reference has them: `modulator` and `cross_modulator` reach the
decoder layers only; the cross-modulator branch computes `norm_cross(x)` and
attends from the un-normed x (norm_cross's parameters exist, unused); LeFF
takes no dropout; a modulator on a level whose window shrank fails (here with
a ValueError). Not ported: the forward's optional `mask` (Noise-DA's wrapper
never passes one) and `token_mlp='fastleff'` (needs the torch_dwconv CUDA
package). The reference's 'conv' token projection passes `bias=True` as
SepConv2d's dilation, which torch 2.13 rejects; here it is dilation 1.

Submodules are named after the torch module tree, a Sequential's or
ModuleList's index joined to its name below the top level
(`encoderlayer_0.blocks.1.mlp.linear1.0` becomes
`encoderlayer_0/blocks_1/mlp/linear1_0`), so `params_from_torch` /
`params_to_torch` are a rename plus a layout transpose.
"""

from __future__ import annotations

from collections.abc import Mapping
import functools
import math
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dada_jax import backbones
from dada_jax.models import layers
from dada_jax.models import torch_layout

DEFAULTS = backbones.RESTORERS["uformer"]

# Uformer-T/S/B as the Uformer authors build them (ZhendongWang6/Uformer,
# utils/model_utils.py `get_arch`, 'Uformer_T' / 'Uformer_S' / 'Uformer_B':
# win_size 8, linear projection, LeFF, modulator on; img_size is their
# training patch, 128, which is also Noise-DA's patch_size in
# Denoising/configs/options_train.json). Parameter counts from the
# reference's torch module: T 5,563,213; S 21,836,637; B 51,966,386.
PRESETS = {
    "T": dict(img_size=128, embed_dim=16, win_size=8, modulator=True),
    "S": dict(img_size=128, embed_dim=32, win_size=8, modulator=True),
    "B": dict(img_size=128, embed_dim=32, win_size=8, modulator=True,
              depths=(1, 2, 8, 8, 2, 8, 8, 2, 1)),
    # Tiny, for tests: 4 channels at level 0, 4x4 windows.
    "runlocal": backbones.RUNLOCAL["uformer"],
}

_LEVELS = 4  # 2x downsamplings
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
_LINEAR_INIT = nn.initializers.truncated_normal(0.02)


def _attrs(attrs) -> dict:
  unknown = set(attrs) - set(DEFAULTS) - {"dtype"}
  if unknown:
    raise ValueError(f"unknown Uformer attributes {sorted(unknown)}")
  return {**DEFAULTS, **attrs}


def window_and_shift(resolution: int, win_size: int,
                     shift_size: int) -> tuple[int, int]:
  """A block's (window, shift) at a level of `resolution` (from img_size):
  the reference shrinks the window to the resolution and drops the shift
  when the resolution is at most the window."""
  if resolution <= win_size:
    win_size, shift_size = resolution, 0
  if not 0 <= shift_size < win_size:
    raise ValueError(f"Uformer: shift {shift_size} not in [0, {win_size}) "
                     f"(level resolution {resolution}); img_size too small")
  return win_size, shift_size


def pad_multiple(**attrs) -> int:
  """Inputs' H and W must be multiples of this: every level's windows tile
  it (level i is 1 / 2**i of the input) and the skips line up."""
  a = _attrs(attrs)
  return backbones.uformer_multiple(a["img_size"], a["win_size"], _LEVELS)


def relative_position_index(win: int) -> np.ndarray:
  """[win², win²] int64: the bias-table row of each (query, key) pair of a
  window, (dy + win - 1) * (2 win - 1) + (dx + win - 1)."""
  yx = np.stack(np.meshgrid(np.arange(win), np.arange(win), indexing="ij"))
  yx = yx.reshape(2, -1)
  rel = (yx[:, :, None] - yx[:, None, :]) + (win - 1)
  return (rel[0] * (2 * win - 1) + rel[1]).astype(np.int64)


def shift_mask(h: int, w: int, win: int, shift: int) -> np.ndarray:
  """[nW, win², win²] float32: -100 between tokens of a shifted window that
  came from different regions of the unshifted image, else 0."""
  label = np.zeros((h, w), np.float32)
  cuts = (slice(0, -win), slice(-win, -shift), slice(-shift, None))
  for i, rows in enumerate(cuts):
    for j, cols in enumerate(cuts):
      label[rows, cols] = 3 * i + j
  label = window_partition(label[None, :, :, None], win)[..., 0]  # [nW, N]
  diff = label[:, None, :] - label[:, :, None]
  return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def window_partition(x, win: int):
  """[B, H, W, C] -> [B * H/win * W/win, win², C], windows batch-major then
  row-major (numpy or jax arrays)."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // win, win, w // win, win, c).transpose(0, 1, 3, 2, 4, 5)
  return x.reshape(-1, win * win, c)


def window_reverse(windows: jax.Array, win: int, h: int, w: int) -> jax.Array:
  """Inverse of window_partition: [B * nW, win², C] -> [B, H, W, C]."""
  c = windows.shape[-1]
  x = windows.reshape(-1, h // win, w // win, win, win, c)
  return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, h, w, c)


def upsample_bilinear2(x: jax.Array) -> jax.Array:
  """torch `Upsample(scale_factor=2, mode='bilinear', align_corners=False)`:
  [B, H, W, C] -> [B, 2H, 2W, C]; output 2k takes 1/4 of row k-1 and 3/4 of
  row k, output 2k+1 3/4 of row k and 1/4 of row k+1 (edges clamped)."""
  for axis in (1, 2):
    n = x.shape[axis]
    prev = jnp.concatenate([jax.lax.slice_in_dim(x, 0, 1, axis=axis),
                            jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)], axis)
    nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis),
                           jax.lax.slice_in_dim(x, n - 1, n, axis=axis)], axis)
    out = jnp.stack([0.25 * prev + 0.75 * x, 0.75 * x + 0.25 * nxt], axis + 1)
    x = out.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1:])
  return x


def _dense(features, name, dtype, use_bias=True):
  return nn.Dense(features, use_bias=use_bias, dtype=dtype,
                  param_dtype=jnp.float32, kernel_init=_LINEAR_INIT, name=name)


def _conv(features, kernel, stride, pad, name, dtype):
  return layers.Conv(features, (kernel, kernel), stride, pad,
                     _TORCH_CONV_INIT, dtype, name=name)


def _layer_norm(x, name):
  """torch LayerNorm(eps=1e-5), computed in float32, back in x's dtype."""
  # Two-pass variance (flax's default E[x²] - E[x]² loses digits on the
  # 2-4 channel levels of small models).
  y = nn.LayerNorm(1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
                   use_fast_variance=False, name=name)(x.astype(jnp.float32))
  return y.astype(x.dtype)


def _gelu(x):
  return nn.gelu(x, approximate=False)  # torch nn.GELU() is the erf form


def drop_path(module: nn.Module, x: jax.Array, rate: float,
              train: bool) -> jax.Array:
  """timm DropPath: in training, zero each sample's branch with probability
  `rate` and scale the kept ones by 1 / (1 - rate) ('dropout' rng)."""
  if not train or rate == 0.0:
    return x
  keep = 1.0 - rate
  mask = jax.random.bernoulli(module.make_rng("dropout"), keep,
                              (x.shape[0],) + (1,) * (x.ndim - 1))
  return x * (mask / keep).astype(x.dtype)


class DepthwiseConv(nn.Module):
  """torch `Conv2d(C, C, k, padding=k // 2, groups=C)`: kernel [k, k, 1, C],
  bias [C]. [B, H, W, C] -> [B, H, W, C]."""
  kernel_size: int = 3
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, k = x.shape[-1], self.kernel_size
    kernel = self.param("kernel", _TORCH_CONV_INIT, (k, k, 1, c), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    y = layers.depthwise_conv(x.astype(self.dtype), kernel)
    return layers.add_bias(y, bias.astype(self.dtype))


class EmbeddingTable(nn.Module):
  """An `nn.Embedding`'s weight, used whole: [num, dim] float32, N(0, 1)."""
  num: int
  dim: int

  @nn.compact
  def __call__(self):
    return self.param("embedding", nn.initializers.normal(1.0),
                      (self.num, self.dim), jnp.float32)


class LinearProjection(nn.Module):
  """q from x, k and v from `kv` (or x). x [B, N, C], kv [M, C] shared by
  the batch -> q [B, heads, N, C/heads], k, v [B, heads, M or N, C/heads]."""
  heads: int
  qkv_bias: bool = True
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kv=None):
    b, n, c = x.shape
    inner = (c // self.heads) * self.heads
    kv = x if kv is None else jnp.broadcast_to(kv.astype(x.dtype),
                                               (b,) + kv.shape)
    q = _dense(inner, "to_q", self.dtype, self.qkv_bias)(x)
    k_v = _dense(2 * inner, "to_kv", self.dtype, self.qkv_bias)(kv)
    q = q.reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)
    k_v = k_v.reshape(b, -1, 2, self.heads, c // self.heads)
    k, v = k_v.transpose(2, 0, 3, 1, 4)
    return q, k, v


class SepConv(nn.Module):
  """Depthwise 3x3 (pad 1), ReLU, pointwise 1x1: [B, l, l, C] -> [..., out]."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = nn.relu(DepthwiseConv(3, self.dtype, name="depthwise")(x))
    return _conv(self.features, 1, 1, 0, "pointwise", self.dtype)(x)


class ConvProjection(nn.Module):
  """q, k, v by SepConv over each window's l x l token grid (x [B, l*l, C])
  -> each [B, heads, l*l, C/heads]."""
  heads: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kv=None):
    if kv is not None:
      raise ValueError("ConvProjection takes no separate key/value tokens")
    b, n, c = x.shape
    l = math.isqrt(n)
    grid = x.reshape(b, l, l, c)
    inner = (c // self.heads) * self.heads

    def project(name):
      y = SepConv(inner, self.dtype, name=name)(grid).reshape(b, n, inner)
      return y.reshape(b, n, self.heads, -1).transpose(0, 2, 1, 3)

    return project("to_q"), project("to_k"), project("to_v")


def _attend(q, k, v, scale, attn_drop, train, bias=None, mask=None):
  """softmax(q·scale kᵀ + bias + mask) v, summed in the reference's order,
  softmax in float32: q [B, h, N, d], k, v [B, h, M, d], bias and mask
  broadcastable to [B, h, N, M] -> [B, N, h·d]."""
  logits = jnp.einsum("bhnd,bhmd->bhnm", q * scale, k).astype(jnp.float32)
  if bias is not None:
    logits = logits + bias
  if mask is not None:
    logits = logits + mask
  attn = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
  attn = nn.Dropout(attn_drop, deterministic=not train)(attn)
  out = jnp.einsum("bhnm,bhmd->bnhd", attn, v)
  return out.reshape(out.shape[0], out.shape[1], -1)


class WindowAttention(nn.Module):
  """Multi-head self-attention inside windows with a learned relative
  position bias. x [nW*B, win², C], mask [nW, win², win²] or None ->
  [nW*B, win², C]."""
  win_size: int
  num_heads: int
  token_projection: str = "linear"
  qkv_bias: bool = True
  qk_scale: float | None = None
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    b_, n, c = x.shape
    win, heads = self.win_size, self.num_heads
    table = self.param("relative_position_bias_table", _LINEAR_INIT,
                       ((2 * win - 1)**2, heads), jnp.float32)
    if self.token_projection == "linear":
      q, k, v = LinearProjection(heads, self.qkv_bias, self.dtype,
                                 name="qkv")(x)
    elif self.token_projection == "conv":
      q, k, v = ConvProjection(heads, self.dtype, name="qkv")(x)
    else:
      raise ValueError(f"Uformer token_projection must be 'linear' or 'conv', "
                       f"got {self.token_projection!r}")
    bias = table[relative_position_index(win).reshape(-1)]
    bias = bias.reshape(n, n, heads).transpose(2, 0, 1)  # [heads, N, N]
    if mask is not None:  # windows are batch-major: window i is mask[i % nW]
      mask = np.tile(mask[:, None], (b_ // mask.shape[0], 1, 1, 1))
    scale = self.qk_scale or (c // heads)**-0.5
    x = _attend(q, k, v, scale, self.attn_drop, train, bias, mask)
    x = _dense(c, "proj", self.dtype)(x)
    return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class Attention(nn.Module):
  """Global attention of x [B, N, C] onto the tokens kv [M, C] (the
  cross-modulator), no position bias -> [B, N, C]."""
  num_heads: int
  qkv_bias: bool = True
  qk_scale: float | None = None
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, kv, train: bool = False):
    c = x.shape[-1]
    q, k, v = LinearProjection(self.num_heads, self.qkv_bias, self.dtype,
                               name="qkv")(x, kv)
    scale = self.qk_scale or (c // self.num_heads)**-0.5
    x = _attend(q, k, v, scale, self.attn_drop, train)
    x = _dense(c, "proj", self.dtype)(x)
    return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class Mlp(nn.Module):
  """Linear, GELU, dropout, linear, dropout. [..., C] -> [..., C]."""
  hidden: int
  drop: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    x = _gelu(_dense(self.hidden, "fc1", self.dtype)(x))
    x = nn.Dropout(self.drop, deterministic=not train)(x)
    x = _dense(c, "fc2", self.dtype)(x)
    return nn.Dropout(self.drop, deterministic=not train)(x)


class LeFF(nn.Module):
  """Locally-enhanced feed-forward: linear + GELU, depthwise 3x3 + GELU,
  linear (no dropout, as the reference). [B, H, W, C] -> [B, H, W, C]."""
  hidden: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    c = x.shape[-1]
    x = _gelu(_dense(self.hidden, "linear1_0", self.dtype)(x))
    x = _gelu(DepthwiseConv(3, self.dtype, name="dwconv_0")(x))
    return _dense(c, "linear2_0", self.dtype)(x)


class LeWinTransformerBlock(nn.Module):
  """(Shifted-)window attention and LeFF/MLP, each a pre-norm residual
  branch with drop-path. x [B, H, W, C] -> [B, H, W, C].

  `win_size` / `shift_size` are the effective ones (see window_and_shift);
  the modulators are `modulator_size` tokens (the layer's nominal win²).
  """
  num_heads: int
  win_size: int
  shift_size: int = 0
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  qk_scale: float | None = None
  drop: float = 0.0
  attn_drop: float = 0.0
  drop_path: float = 0.0
  token_projection: str = "linear"
  token_mlp: str = "leff"
  modulator_size: int = 0
  modulator: bool = False
  cross_modulator: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    b, h, w, c = x.shape
    win, shift = self.win_size, self.shift_size
    if h % win or w % win:
      raise ValueError(f"Uformer: a {h}x{w} level is not tiled by {win}x{win} "
                       "windows; pad inputs to pad_multiple()")
    if self.modulator and self.modulator_size != win * win:
      # The reference adds a [win_size², C] table to [win², C] windows here
      # and fails; so do we, with a clearer message.
      raise ValueError(f"Uformer: modulator of {self.modulator_size} tokens "
                       f"on {win}x{win} windows (img_size too small)")
    if self.cross_modulator:
      table = EmbeddingTable(self.modulator_size, c, name="cross_modulator")()
      # The reference builds norm_cross(x) and then attends from x, not from
      # the normed tokens; norm_cross's parameters exist but go unused.
      _layer_norm(x, "norm_cross")
      cross = Attention(self.num_heads, self.qkv_bias, self.qk_scale,
                        self.attn_drop, self.drop, self.dtype,
                        name="cross_attn")(x.reshape(b, h * w, c), table, train)
      x = x + cross.reshape(b, h, w, c)

    shortcut = x
    y = _layer_norm(x, "norm1")
    mask = None
    if shift > 0:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
      mask = shift_mask(h, w, win, shift)
    windows = window_partition(y, win)
    if self.modulator:
      windows = windows + EmbeddingTable(self.modulator_size, c,
                                         name="modulator")().astype(y.dtype)
    windows = WindowAttention(win, self.num_heads, self.token_projection,
                              self.qkv_bias, self.qk_scale, self.attn_drop,
                              self.drop, self.dtype, name="attn")(
                                  windows, mask, train)
    y = window_reverse(windows, win, h, w)
    if shift > 0:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    x = shortcut + drop_path(self, y, self.drop_path, train)

    hidden = int(c * self.mlp_ratio)
    y = _layer_norm(x, "norm2")
    if self.token_mlp == "leff":
      y = LeFF(hidden, self.dtype, name="mlp")(y, train)
    elif self.token_mlp in ("ffn", "mlp"):
      y = Mlp(hidden, self.drop, self.dtype, name="mlp")(y, train)
    else:
      raise ValueError(f"Uformer token_mlp must be 'leff', 'ffn' or 'mlp' "
                       f"('fastleff' needs torch_dwconv), got {self.token_mlp!r}")
    return x + drop_path(self, y, self.drop_path, train)


class BasicUformerLayer(nn.Module):
  """`depth` LeWin blocks at one level; with shift_flag the odd ones shift
  by win_size // 2. x [B, H, W, C] -> [B, H, W, C]."""
  resolution: int  # img_size // 2**level: fixes windows and shifts
  depth: int
  num_heads: int
  win_size: int
  drop_path: tuple[float, ...]
  block_kwargs: dict
  shift_flag: bool = True
  use_checkpoint: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    block = LeWinTransformerBlock
    if self.use_checkpoint:
      block = nn.remat(block, static_argnums=(2,))
    for i in range(self.depth):
      shift = self.win_size // 2 if self.shift_flag and i % 2 else 0
      win, shift = window_and_shift(self.resolution, self.win_size, shift)
      x = block(self.num_heads, win, shift, drop_path=self.drop_path[i],
                modulator_size=self.win_size**2, dtype=self.dtype,
                name=f"blocks_{i}", **self.block_kwargs)(x, train)
    return x


class InputProj(nn.Module):
  """3x3 conv + LeakyReLU(0.01). [B, H, W, dd_in] -> [B, H, W, features]."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = _conv(self.features, 3, 1, 1, "proj_0", self.dtype)(x)
    return nn.leaky_relu(x, 0.01)


class OutputProj(nn.Module):
  """3x3 conv. [B, H, W, C] -> [B, H, W, features]."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return _conv(self.features, 3, 1, 1, "proj_0", self.dtype)(x)


class Downsample(nn.Module):
  """4x4 conv, stride 2, pad 1. [B, H, W, C] -> [B, H/2, W/2, features]."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return _conv(self.features, 4, 2, 1, "conv_0", self.dtype)(x)


class Upsample(nn.Module):
  """Bilinear 2x (half-pixel) then 3x3 conv. [B, H, W, C] -> [B, 2H, 2W,
  features]."""
  features: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = upsample_bilinear2(x)
    return _conv(self.features, 3, 1, 1, "deconv_1", self.dtype)(x)


class Uformer(nn.Module):
  """Uformer restorer (no residual of its own).

  Attributes are the reference constructor's (DEFAULTS): `img_size` fixes
  each level's window and shift (not the input size), `dd_in` input and
  `in_chans` output channels, `embed_dim` level-0 width (level i: 2**i x),
  `depths` / `num_heads` per layer (4 encoder, bottleneck, 4 decoder),
  `token_projection` 'linear' | 'conv', `token_mlp` 'leff' | 'ffn' | 'mlp',
  `modulator` / `cross_modulator` (decoder layers only, as the reference),
  `drop_rate` / `attn_drop_rate` / `drop_path_rate` (train only),
  `use_checkpoint` (rematerialise blocks). `dtype` is the compute dtype;
  parameters, LayerNorm and softmax stay float32.

  Call: x [B, H, W, dd_in], H and W multiples of pad_multiple() -> [B, H, W,
  in_chans] float32 (the reference's output projection, NHWC).
  """
  img_size: int = 256
  in_chans: int = 3
  dd_in: int = 3
  embed_dim: int = 32
  depths: tuple[int, ...] = (2, 2, 2, 2, 2, 2, 2, 2, 2)
  num_heads: tuple[int, ...] = (1, 2, 4, 8, 16, 16, 8, 4, 2)
  win_size: int = 8
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  qk_scale: float | None = None
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.1
  use_checkpoint: bool = False
  token_projection: str = "linear"
  token_mlp: str = "leff"
  shift_flag: bool = True
  modulator: bool = False
  cross_modulator: bool = False
  dtype: jnp.dtype = jnp.float32

  def _drop_paths(self):
    """Per-layer drop-path rates, as the reference slices them."""
    d = list(self.depths)
    enc = [float(r) for r in np.linspace(0, self.drop_path_rate, sum(d[:4]),
                                         dtype=np.float32)]
    dec = enc[::-1]
    rates = [enc[sum(d[:i]):sum(d[:i + 1])] for i in range(4)]
    rates.append([self.drop_path_rate] * d[4])
    rates += [dec[sum(d[5:5 + i]):sum(d[5:6 + i])] for i in range(4)]
    return [tuple(r) for r in rates]

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if len(self.depths) != 9 or len(self.num_heads) != 9:
      raise ValueError("Uformer depths and num_heads need 9 entries")
    m = pad_multiple(img_size=self.img_size, win_size=self.win_size)
    if x.shape[1] % m or x.shape[2] % m:
      raise ValueError(f"Uformer input {x.shape[1]}x{x.shape[2]} is not a "
                       f"multiple of {m} (pad_multiple)")
    rates = self._drop_paths()
    common = dict(mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                  qk_scale=self.qk_scale, drop=self.drop_rate,
                  attn_drop=self.attn_drop_rate,
                  token_projection=self.token_projection,
                  token_mlp=self.token_mlp)
    decoder = dict(common, modulator=self.modulator,
                   cross_modulator=self.cross_modulator)

    def layer(i, level, kwargs, name):
      return BasicUformerLayer(self.img_size // 2**level, self.depths[i],
                               self.num_heads[i], self.win_size, rates[i],
                               kwargs, self.shift_flag, self.use_checkpoint,
                               self.dtype, name=name)

    dim = self.embed_dim
    y = InputProj(dim, self.dtype, name="input_proj")(x)
    y = nn.Dropout(self.drop_rate, deterministic=not train)(y)
    skips = []
    for i in range(_LEVELS):
      y = layer(i, i, common, f"encoderlayer_{i}")(y, train)
      skips.append(y)
      y = Downsample(dim * 2**(i + 1), self.dtype, name=f"dowsample_{i}")(y)
    y = layer(4, _LEVELS, common, "conv")(y, train)
    for j in range(_LEVELS):
      level = _LEVELS - 1 - j
      y = Upsample(dim * 2**level, self.dtype, name=f"upsample_{j}")(y)
      y = jnp.concatenate([y, skips[level]], axis=-1)
      y = layer(5 + j, level, decoder, f"decoderlayer_{j}")(y, train)
    y = OutputProj(self.in_chans, self.dtype, name="output_proj")(y)
    return y.astype(jnp.float32)


# ---- Conversion to and from the reference's state_dict ---------------------


def _torch_key(path: tuple[str, ...]) -> str:
  """('encoderlayer_0', 'blocks_1', 'mlp', 'linear1_0', 'kernel') ->
  'encoderlayer_0.blocks.1.mlp.linear1.0.weight'. Top-level names keep their
  underscores (the reference names them `encoderlayer_0`, `dowsample_0`)."""
  *modules, leaf = path
  parts = [modules[0]]
  for seg in modules[1:]:
    m = re.fullmatch(r"(.+?)_(\d+)", seg)
    parts.extend(m.groups() if m else (seg,))
  leaf = {"kernel": "weight", "scale": "weight", "embedding": "weight"}.get(
      leaf, leaf)
  return ".".join(parts + [leaf])


def _hashable(attrs: dict) -> tuple:
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                      for k, v in attrs.items()))


@functools.lru_cache(maxsize=16)
def _layout_cached(key: tuple):
  a = {k: v for k, v in key if k != "dtype"}
  model = Uformer(**_attrs(a))
  m = pad_multiple(**a)
  x = jax.ShapeDtypeStruct((1, m, m, model.dd_in), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  params, buffers = {}, {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    names = tuple(p.key for p in path)
    shape = leaf.shape
    if names[-1] == "kernel":
      shape = shape[::-1] if len(shape) == 2 else tuple(
          shape[i] for i in (3, 2, 0, 1))
    params[_torch_key(names)] = (names, shape)
    if names[-1] == "relative_position_bias_table":
      win = (math.isqrt(shape[0]) + 1) // 2
      buffers[_torch_key(names[:-1] + ("relative_position_index",))] = (
          relative_position_index(win))
  return params, buffers


def _layout(**attrs):
  """({torch key: (flax path, torch shape)} of the parameters,
  {torch key: value} of the relative_position_index buffers)."""
  return _layout_cached(_hashable(attrs))


def params_from_torch(state: Mapping[str, np.ndarray], **attrs) -> dict:
  """Our variables {"params": ...} from the reference module's state_dict
  (keys as the reference names them, no `RestorationNet.` prefix), strict like
  `load_state_dict(strict=True)`: one ValueError names every missing,
  unexpected and misshapen key, and any relative_position_index buffer that
  differs from the one recomputed here (buffers are not params).

  Linear weights [out, in] become kernels [in, out]; conv weights OIHW
  become HWIO; values are float32 numpy arrays.
  """
  return torch_layout.variables_from_torch(state, *_layout(**attrs),
                                           "Uformer")


def params_to_torch(params, **attrs) -> dict[str, np.ndarray]:
  """The reference module's state_dict from our params: its keys, shapes
  and dtypes (float32 parameters, int64 relative_position_index buffers),
  ready for its `load_state_dict(strict=True)`. `params` is the tree under
  "params" (a {"params": ...} dict is accepted too)."""
  return torch_layout.variables_to_torch(params, *_layout(**attrs),
                                         "Uformer")
