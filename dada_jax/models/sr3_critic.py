"""The SR3 critic: the reference's other noise predictor (`module_name` "sr3").

`~/Noise-DA/models/network.py` builds its `denoise_fn` from
`models/sr3_modules/unet.py` when `module_name` is "sr3" (the `Network`
default) and from guided-diffusion's U-Net otherwise (our `critic.py`). Every
shipped config (`*/configs/*.json`, `configs_demo/*.json`) selects
"guided_diffusion", and their `unet` blocks carry `num_head_channels`, which
the SR3 constructor does not take, so no reference config names SR3 settings.
(Those blocks' shared arguments as SR3 - in 9, inner 64, mults 1-2-4-8,
attn_res [16], 2 res blocks, dropout 0.2, image_size 128, norm_groups 32 -
give 60,659,523 parameters.)

The network, in the reference's terms (NHWC here):
  noise_level_mlp  sinusoid(γ) -> Linear(C, 4C) -> Swish -> Linear(4C, C)
  downs            3x3 conv, then per level `res_blocks` ResnetBlocWithAttn
                   and (but last level) a stride-2 3x3 conv
  mid              ResnetBlocWithAttn with attention, then one without
  ups              per level `res_blocks + 1` ResnetBlocWithAttn on
                   [h, skip] and (but top level) nearest 2x + 3x3 conv
  final_conv       GroupNorm -> Swish -> 3x3 conv
A ResnetBlocWithAttn is h = Block1(x) + Linear(emb); h = Block2(h) (dropout
before its conv); out = h + 1x1conv(x) (identity at equal widths); then
single-head self-attention if the level's resolution is in `attn_res`.

`attn_res` holds resolutions in pixels: level l has resolution
image_size / 2^l, whatever size the input really has. The reference's
default `attn_res=(8)` is the int 8, and `UNet()` with it raises TypeError
(`now_res in attn_res`); our default is (8,), what it means.
`with_noise_level_emb=False` cannot be built by the reference either (its
FeatureWiseAffine gets `nn.Linear(None, ...)`); ours raises ValueError.

γ: the reference feeds `sample_gammas` of shape [B, 1] (`Network.forward`,
`.view(b, -1)`; `p_mean_variance` passes `extract(gammas, t, (1, 1))`, also
[B, 1]). Its PositionalEncoding turns that into [B, 1, C] and
FeatureWiseAffine's `.view(batch, -1, 1, 1)` drops the extra axis, so [B] and
[B, 1] give the same numbers; `SR3UNet` takes either.

Weights: `params_from_torch` / `params_to_torch` map the reference module's
own `state_dict()` (no `denoise_fn.` prefix). Submodule names are the torch
module paths with the index following each attribute joined by "_"
(`downs.1.res_block.block1.block.3` -> `downs_1/res_block/block1/block_3`).
"""

from __future__ import annotations

import math
import re
from typing import Mapping, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dada_jax.models import group_norm
from dada_jax.models import layers

# The reference constructor's defaults (attn_res as the tuple it stands for).
DEFAULTS = dict(in_channel=6, out_channel=3, inner_channel=32, norm_groups=32,
                channel_mults=(1, 2, 4, 8, 8), attn_res=(8,), res_blocks=3,
                dropout=0.0, with_noise_level_emb=True, image_size=128)

PRESETS = {
    # Smoke runs on 32x32 patches: 9 -> 3 channels, two levels, attention
    # at 16x16 (the lower level) and in the middle; 164,803 params.
    "runlocal": dict(in_channel=9, out_channel=3, inner_channel=16,
                     norm_groups=8, channel_mults=(1, 2), attn_res=(16,),
                     res_blocks=1, dropout=0.0, with_noise_level_emb=True,
                     image_size=32),
}


def noise_level_encoding(gammas: jax.Array, dim: int) -> jax.Array:
  """The reference's PositionalEncoding (WaveGrad's): [B] -> [B, 2·(dim//2)]
  float32, sines first, frequencies exp(-ln(1e4)·k / (dim//2))."""
  count = dim // 2
  step = jnp.arange(count, dtype=jnp.float32) / count
  args = gammas.astype(jnp.float32)[:, None] * jnp.exp(
      -math.log(1e4) * step)[None]
  return jnp.concatenate([jnp.sin(args), jnp.cos(args)], axis=-1)


def _dense(features: int, name: str, dtype) -> nn.Dense:
  return nn.Dense(features, kernel_init=layers.KAIMING, dtype=dtype,
                  param_dtype=jnp.float32, name=name)


def _norm(groups: int, name: str) -> group_norm.GroupNorm32:
  """torch nn.GroupNorm(groups, C) (eps 1e-5, contiguous channel groups);
  statistics in float32."""
  return group_norm.GroupNorm32(num_groups=groups, name=name)


class FeatureWiseAffine(nn.Module):
  """x + Linear(emb), or with `use_affine_level` (1 + γ)·x + β where
  [γ, β] = Linear(emb) split on channels. Linear is `noise_func_0`.
  x [B, H, W, C], emb [B, E]."""
  out_channels: int
  use_affine_level: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb):
    width = self.out_channels * (1 + self.use_affine_level)
    e = _dense(width, "noise_func_0", self.dtype)(emb)
    e = e.astype(x.dtype)[:, None, None, :]
    if self.use_affine_level:
      scale, shift = jnp.split(e, 2, axis=-1)
      return (1 + scale) * x + shift
    return x + e


class Block(nn.Module):
  """GroupNorm (`block_0`) -> Swish -> dropout (train, if nonzero) -> 3x3
  conv (`block_3`)."""
  out_channels: int
  groups: int
  dropout: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool):
    h = _norm(self.groups, "block_0")(x, silu=True)
    if self.dropout:
      h = nn.Dropout(self.dropout, deterministic=not train)(h)
    return layers.conv3x3(self.out_channels, "block_3", self.dtype)(h)


class ResnetBlock(nn.Module):
  """block2(block1(x) + noise(emb)) + res_conv(x); res_conv is a 1x1 conv
  where the width changes. Only block2 has dropout."""
  out_channels: int
  norm_groups: int
  dropout: float = 0.0
  use_affine_level: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    h = Block(self.out_channels, self.norm_groups, dtype=self.dtype,
              name="block1")(x, train)
    h = FeatureWiseAffine(self.out_channels, self.use_affine_level,
                          self.dtype, name="noise_func")(h, emb)
    h = Block(self.out_channels, self.norm_groups, self.dropout, self.dtype,
              name="block2")(h, train)
    if x.shape[-1] != self.out_channels:
      x = layers.conv1x1(self.out_channels, "res_conv", self.dtype)(x)
    return h + x


class SelfAttention(nn.Module):
  """x + out(attention(qkv(GroupNorm(x)))) over all H·W positions.

  qkv (`qkv`, a bias-free 1x1 conv) gives each head [q, k, v] blocks of C /
  n_head channels; logits are scaled by 1/sqrt(C), the full width (the
  reference's choice), and the softmax runs in float32.
  """
  norm_groups: int
  n_head: int = 1
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, hgt, wid, c = x.shape
    if c % self.n_head:
      raise ValueError(f"SelfAttention: {c} channels, {self.n_head} heads")
    d = c // self.n_head
    h = _norm(self.norm_groups, "norm")(x)
    qkv = nn.Conv(3 * c, (1, 1), use_bias=False, kernel_init=layers.KAIMING,
                  dtype=self.dtype, param_dtype=jnp.float32, name="qkv")(h)
    qkv = qkv.reshape(b, hgt * wid, self.n_head, 3, d)
    q, k, v = qkv[..., 0, :], qkv[..., 1, :], qkv[..., 2, :]
    logits = jnp.einsum("bthd,bshd->bhts", q, k) / math.sqrt(c)
    weights = jax.nn.softmax(logits.astype(jnp.float32), axis=-1)
    a = jnp.einsum("bhts,bshd->bthd", weights.astype(v.dtype), v)
    out = layers.conv1x1(c, "out", self.dtype)(a.reshape(b, hgt, wid, c))
    return out + x


class Downsample(nn.Module):
  """Stride-2 3x3 conv (`conv`), padding 1."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return layers.conv3x3(x.shape[-1], "conv", self.dtype, strides=2)(x)


class Upsample(nn.Module):
  """Nearest 2x, then a 3x3 conv (`conv`)."""
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return layers.conv3x3(x.shape[-1], "conv", self.dtype)(
        layers.upsample_nearest2(x))


class ResnetBlocWithAttn(nn.Module):
  """`res_block`, then `attn` if with_attn."""
  out_channels: int
  norm_groups: int
  dropout: float = 0.0
  with_attn: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, emb, train: bool):
    x = ResnetBlock(self.out_channels, self.norm_groups, self.dropout,
                    dtype=self.dtype, name="res_block")(x, emb, train)
    if self.with_attn:
      x = SelfAttention(self.norm_groups, dtype=self.dtype, name="attn")(x)
    return x


class SR3UNet(nn.Module):
  """SR3's noise-level-conditioned U-Net predicting ε (see module docstring).

  Attributes are the reference `UNet`'s arguments with its defaults (except
  attn_res, a tuple), and `dtype`, the compute dtype (params stay float32;
  norms, the noise-level encoding and the softmax run in float32).

  Call: x [B, H, W, in_channel], gammas [B] or [B, 1] noise levels ->
  ε̂ [B, H, W, out_channel] float32. H and W must be multiples of
  2^(len(channel_mults) - 1). Dropout (train=True, nonzero `dropout`) draws
  from the 'dropout' rng.
  """
  in_channel: int = 6
  out_channel: int = 3
  inner_channel: int = 32
  norm_groups: int = 32
  channel_mults: Sequence[int] = (1, 2, 4, 8, 8)
  attn_res: Sequence[int] = (8,)
  res_blocks: int = 3
  dropout: float = 0.0
  with_noise_level_emb: bool = True
  image_size: int = 128
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, gammas: jax.Array, train: bool = False):
    if not self.with_noise_level_emb:
      raise ValueError(
          "SR3UNet: with_noise_level_emb=False cannot be built by the "
          "reference either (FeatureWiseAffine gets nn.Linear(None, ...))")
    if x.shape[-1] != self.in_channel:
      raise ValueError(f"SR3UNet expects {self.in_channel} input channels, "
                       f"got {x.shape[-1]}")
    inner, dt = self.inner_channel, self.dtype
    attn_res = tuple(self.attn_res)
    t = noise_level_encoding(gammas.reshape(x.shape[0]), inner)
    t = _dense(4 * inner, "noise_level_mlp_1", dt)(t)
    t = _dense(inner, "noise_level_mlp_3", dt)(nn.swish(t))

    def bloc(out_ch, name, with_attn):
      return ResnetBlocWithAttn(out_ch, self.norm_groups, self.dropout,
                                with_attn, dt, name=name)

    h = layers.conv3x3(inner, "downs_0", dt)(x.astype(dt))
    feats, i, res = [h], 1, self.image_size
    n = len(self.channel_mults)
    for level, mult in enumerate(self.channel_mults):
      for _ in range(self.res_blocks):
        h = bloc(inner * mult, f"downs_{i}", res in attn_res)(h, t, train)
        feats.append(h)
        i += 1
      if level != n - 1:
        h = Downsample(dt, name=f"downs_{i}")(h)
        feats.append(h)
        i += 1
        res //= 2

    h = bloc(h.shape[-1], "mid_0", True)(h, t, train)
    h = bloc(h.shape[-1], "mid_1", False)(h, t, train)

    i = 0
    for level in reversed(range(n)):
      for _ in range(self.res_blocks + 1):
        h = jnp.concatenate([h, feats.pop().astype(h.dtype)], axis=-1)
        h = bloc(inner * self.channel_mults[level], f"ups_{i}",
                 res in attn_res)(h, t, train)
        i += 1
      if level:
        h = Upsample(dt, name=f"ups_{i}")(h)
        i += 1
        res *= 2

    h = Block(self.out_channel, self.norm_groups, dtype=dt,
              name="final_conv")(h, train)
    return h.astype(jnp.float32)



# --- Conversion to and from the reference module's state_dict. ---


def _torch_name(segment: str) -> str:
  """'downs_1' -> 'downs.1', 'noise_level_mlp_3' -> 'noise_level_mlp.3';
  'block1', 'res_conv' stay."""
  m = re.fullmatch(r"(.*?)((?:_\d+)*)", segment)
  return ".".join([m.group(1)] + [p for p in m.group(2).split("_") if p])


def _torch_leaf(name: str, shape: tuple[int, ...]):
  """Our leaf -> (torch leaf, torch shape, our-to-torch axis order or None)."""
  if name in ("bias", "scale"):
    return ("bias" if name == "bias" else "weight"), shape, None
  order = {4: (3, 2, 0, 1), 2: (1, 0)}[len(shape)]  # HWIO -> OIHW, IO -> OI
  return "weight", tuple(shape[a] for a in order), order


def _layout(attrs) -> dict[str, tuple]:
  """{torch key: (our path, our shape, torch shape, axis order)} of
  SR3UNet(**attrs)'s parameters."""
  model = SR3UNet(**attrs)
  side = 2 ** (len(model.channel_mults) - 1)
  shapes = jax.eval_shape(
      model.init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, side, side, model.in_channel), jnp.float32),
      jax.ShapeDtypeStruct((1,), jnp.float32))["params"]
  out = {}

  def walk(tree, path):
    for name, sub in tree.items():
      if isinstance(sub, Mapping):
        walk(sub, path + (name,))
        continue
      leaf, shape, order = _torch_leaf(name, tuple(sub.shape))
      key = ".".join([_torch_name(s) for s in path] + [leaf])
      out[key] = (path + (name,), tuple(sub.shape), shape, order)

  walk(shapes, ())
  return out


def _check(found: dict[str, tuple], expected: dict[str, tuple], what: str):
  """One ValueError naming every missing, unexpected and misshapen key."""
  problems = []
  missing = sorted(set(expected) - set(found))
  unexpected = sorted(set(found) - set(expected))
  misshapen = [f"{k} {found[k]} (expected {expected[k]})"
               for k in sorted(set(found) & set(expected))
               if found[k] != expected[k]]
  if missing:
    problems.append("missing keys: " + ", ".join(missing))
  if unexpected:
    problems.append("unexpected keys: " + ", ".join(unexpected))
  if misshapen:
    problems.append("wrong shapes: " + ", ".join(misshapen))
  if problems:
    raise ValueError(f"{what} does not fit SR3UNet: " + "; ".join(problems))


def params_from_torch(state: Mapping[str, np.ndarray], **attrs) -> dict:
  """SR3UNet(**attrs) variables {"params": float32 NumPy} from the reference UNet's
  `state_dict()`, checked strictly as `load_state_dict(strict=True)`.

  Conv weights OIHW -> HWIO, linear OI -> IO. Raises one ValueError naming
  every missing, unexpected and wrongly shaped key.
  """
  layout = _layout(attrs)
  _check({k: tuple(np.shape(v)) for k, v in state.items()},
         {k: v[2] for k, v in layout.items()}, "state dict")
  params = {}
  for key, (path, _, _, order) in layout.items():
    value = np.asarray(state[key], np.float32)
    if order is not None:
      value = np.transpose(value, np.argsort(order))
    node = params
    for seg in path[:-1]:
      node = node.setdefault(seg, {})
    node[path[-1]] = np.ascontiguousarray(value)
  return {"params": params}


def params_to_torch(variables, **attrs) -> dict[str, np.ndarray]:
  """The reference UNet's `state_dict()` (float32 NumPy, its keys and shapes)
  from SR3UNet(**attrs) variables {"params": ...};
  `load_state_dict(strict=True)` takes it."""
  params = variables["params"]
  layout = _layout(attrs)
  flat = {}

  def walk(tree, path):
    for name, sub in tree.items():
      if isinstance(sub, Mapping):
        walk(sub, path + (name,))
      else:
        flat[path + (name,)] = sub

  walk(params, ())
  _check({"/".join(p): tuple(np.shape(v)) for p, v in flat.items()},
         {"/".join(v[0]): v[1] for v in layout.values()}, "params")
  out = {}
  for key, (path, _, _, order) in layout.items():
    value = np.asarray(flat[path], np.float32)
    out[key] = np.ascontiguousarray(
        value if order is None else np.transpose(value, order))
  return out
