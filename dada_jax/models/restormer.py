"""Restormer (Zamir et al., CVPR 2022), as Noise-DA's models/net/restormer.py.

A 4-level encoder-decoder of transposed-attention Transformer blocks
(MDTA + gated-dconv FFN), NHWC. The forward returns the last conv's output
and adds no residual itself (the reference leaves `# + inp_img` commented
out); Noise-DA's wrapper adds the input.

Submodules are named after the torch module tree with a Sequential's index
absorbed into its name (`encoder_level1.0.attn.qkv` becomes
`encoder_level1_0/attn/qkv`; `down1_2.body.0` becomes `down1_2/body_0`), so
`params_from_torch` / `params_to_torch` are a rename plus a layout transpose.
"""

from __future__ import annotations

from collections.abc import Mapping
import re

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dada_jax import backbones
from dada_jax.models import layers
from dada_jax.models import torch_layout

DEFAULTS = backbones.RESTORERS["restormer"]

PRESETS = {
    "runlocal": backbones.RUNLOCAL["restormer"],  # tiny, for tests
    # Restormer's published image-restoration size (the reference defaults).
    "paper": {},
}

# torch nn.Sequential containers: their members' indices join the name.
_SEQUENTIALS = ("encoder_level1", "encoder_level2", "encoder_level3", "latent",
                "decoder_level3", "decoder_level2", "decoder_level1",
                "refinement", "body")


def pad_multiple(**attrs) -> int:
  """Inputs' H and W must be multiples of this (three 2x downsamplings)."""
  del attrs
  return 8


def _conv(features, kernel, bias, dtype, name, groups=1):
  """torch `Conv2d(k, padding=k // 2, groups, bias)`; kernel HWIO float32.
  groups is 1 or `features` (depthwise)."""
  if groups > 1:
    assert groups == features, (groups, features)
    return layers.DepthwiseConv(kernel, use_bias=bias, dtype=dtype, name=name)
  pad = kernel // 2
  return nn.Conv(features, (kernel, kernel), padding=((pad, pad), (pad, pad)),
                 feature_group_count=groups, use_bias=bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=layers.KAIMING,
                 name=name)


def pixel_unshuffle2(x: jax.Array) -> jax.Array:
  """torch `PixelUnshuffle(2)` in NHWC: [B, H, W, C] -> [B, H/2, W/2, 4C],
  output channel c*4 + i*2 + j holding input pixel (2h + i, 2w + j) of c."""
  b, h, w, c = x.shape
  x = x.reshape(b, h // 2, 2, w // 2, 2, c)
  return x.transpose(0, 1, 3, 5, 2, 4).reshape(b, h // 2, w // 2, 4 * c)


def pixel_shuffle2(x: jax.Array) -> jax.Array:
  """torch `PixelShuffle(2)` in NHWC: [B, H, W, 4C] -> [B, 2H, 2W, C], the
  inverse of `pixel_unshuffle2`."""
  b, h, w, c4 = x.shape
  x = x.reshape(b, h, w, c4 // 4, 2, 2)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, 2 * h, 2 * w, c4 // 4)


class ChannelLayerNorm(nn.Module):
  """LayerNorm over channels (the last axis), eps 1e-5 inside the sqrt.

  'BiasFree' divides x itself (not x - mean) by the std and has no bias;
  any other `kind` is the usual 'WithBias' form. Statistics in float32;
  [..., C] -> [..., C] in x's dtype.
  """
  kind: str

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    x32 = x.astype(jnp.float32)
    var = x32.var(-1, keepdims=True)
    if self.kind == "BiasFree":
      y = x32 / jnp.sqrt(var + 1e-5) * scale
    else:
      bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
      y = (x32 - x32.mean(-1, keepdims=True)) / jnp.sqrt(var + 1e-5)
      y = y * scale + bias
    return y.astype(x.dtype)


class LayerNorm(nn.Module):
  """The reference's wrapper: its norm is the submodule `body`."""
  kind: str

  @nn.compact
  def __call__(self, x):
    return ChannelLayerNorm(self.kind, name="body")(x)


class FeedForward(nn.Module):
  """Gated-Dconv FFN: 1x1 to 2*hidden, depthwise 3x3, GELU(first half) *
  second half, 1x1 back. hidden = int(dim * ffn_expansion_factor)."""
  ffn_expansion_factor: float
  bias: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    dim = x.shape[-1]
    hidden = int(dim * self.ffn_expansion_factor)
    x = _conv(hidden * 2, 1, self.bias, self.dtype, "project_in")(x)
    x = _conv(hidden * 2, 3, self.bias, self.dtype, "dwconv",
              groups=hidden * 2)(x)
    x1, x2 = jnp.split(x, 2, axis=-1)
    x = nn.gelu(x1, approximate=False) * x2  # torch F.gelu is the erf form
    return _conv(dim, 1, self.bias, self.dtype, "project_out")(x)


def _l2_normalize(x, axis):
  """torch F.normalize: x / max(||x||, 1e-12)."""
  norm = jnp.sqrt(jnp.sum(jnp.square(x), axis=axis, keepdims=True))
  return x / jnp.maximum(norm, 1e-12)


class Attention(nn.Module):
  """MDTA: attention across channels within each head.

  q, k, v: 1x1 then depthwise 3x3 conv, split in thirds. Per head, q and k
  [c, H*W] are L2-normalised over pixels, the [c, c] logits scaled by the
  learnable `temperature` [heads, 1, 1] and softmaxed. [B, H, W, C] ->
  [B, H, W, C].
  """
  num_heads: int
  bias: bool
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    b, h, w, c = x.shape
    temperature = self.param("temperature", nn.initializers.ones,
                             (self.num_heads, 1, 1), jnp.float32)
    qkv = _conv(c * 3, 1, self.bias, self.dtype, "qkv")(x)
    qkv = _conv(c * 3, 3, self.bias, self.dtype, "qkv_dwconv",
                groups=c * 3)(qkv)

    def heads(t):  # [B, H, W, C] -> [B, heads, C / heads, H * W]
      return t.reshape(b, h * w, self.num_heads, -1).transpose(0, 2, 3, 1)

    q, k, v = (heads(t) for t in jnp.split(qkv, 3, axis=-1))
    q = _l2_normalize(q.astype(jnp.float32), -1)
    k = _l2_normalize(k.astype(jnp.float32), -1)
    attn = jnp.einsum("bnip,bnjp->bnij", q, k) * temperature
    attn = jax.nn.softmax(attn, axis=-1).astype(self.dtype)
    out = jnp.einsum("bnij,bnjp->bnip", attn, v.astype(self.dtype))
    out = out.transpose(0, 3, 1, 2).reshape(b, h, w, c)
    return _conv(c, 1, self.bias, self.dtype, "project_out")(out)


class TransformerBlock(nn.Module):
  """x + attn(norm1(x)), then + ffn(norm2(x)); [B, H, W, C] -> same."""
  num_heads: int
  ffn_expansion_factor: float
  bias: bool
  LayerNorm_type: str  # pylint: disable=invalid-name
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    x = x + Attention(self.num_heads, self.bias, self.dtype, name="attn")(
        LayerNorm(self.LayerNorm_type, name="norm1")(x))
    return x + FeedForward(self.ffn_expansion_factor, self.bias, self.dtype,
                           name="ffn")(
                               LayerNorm(self.LayerNorm_type, name="norm2")(x))


class PatchEmbed(nn.Module):
  """3x3 conv `proj` without bias (whatever `bias` says):
  [B, H, W, C] -> [B, H, W, embed_dim]."""
  embed_dim: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return _conv(self.embed_dim, 3, False, self.dtype, "proj")(x)


class Downsample(nn.Module):
  """3x3 conv (no bias) to n_feat // 2, PixelUnshuffle(2):
  [B, H, W, n_feat] -> [B, H/2, W/2, 2 * (n_feat // 2)]."""
  n_feat: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return pixel_unshuffle2(
        _conv(self.n_feat // 2, 3, False, self.dtype, "body_0")(x))


class Upsample(nn.Module):
  """3x3 conv (no bias) to 2 * n_feat, PixelShuffle(2):
  [B, H, W, n_feat] -> [B, 2H, 2W, n_feat // 2]."""
  n_feat: int
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    return pixel_shuffle2(
        _conv(self.n_feat * 2, 3, False, self.dtype, "body_0")(x))


class Restormer(nn.Module):
  """The reference Restormer; attributes are its constructor's arguments.

  Attributes:
    inp_channels / out_channels: image channels in and out.
    dim: level-1 width; level i has dim * 2**i channels (decoder level 1
      and the refinement run at 2 * dim).
    num_blocks: Transformer blocks of levels 1-4 (decoders repeat 1-3).
    num_refinement_blocks: blocks after decoder level 1.
    heads: attention heads of levels 1-4.
    ffn_expansion_factor: FFN hidden width = int(width * this).
    bias: biases on every conv but the patch embedding (which has none).
    LayerNorm_type: 'BiasFree', anything else means 'WithBias'.
    dual_pixel_task: add a 1x1-conv skip from the patch embedding before
      the output conv (dual-pixel defocus deblurring, inp_channels=6).
    dtype: compute dtype; parameters stay float32.

  Call: x [B, H, W, inp_channels], H and W multiples of 8, any value range
  -> [B, H, W, out_channels] float32, the output conv's result (no input
  added). `train` is accepted for a uniform interface and changes nothing.
  """
  inp_channels: int = 3
  out_channels: int = 3
  dim: int = 48
  num_blocks: tuple[int, ...] = (4, 6, 6, 8)
  num_refinement_blocks: int = 4
  heads: tuple[int, ...] = (1, 2, 4, 8)
  ffn_expansion_factor: float = 2.66
  bias: bool = False
  LayerNorm_type: str = "BiasFree"  # pylint: disable=invalid-name
  dual_pixel_task: bool = False
  dtype: jnp.dtype = jnp.float32

  def _blocks(self, x, name, count, num_heads):
    for i in range(count):
      x = TransformerBlock(num_heads, self.ffn_expansion_factor, self.bias,
                           self.LayerNorm_type, self.dtype,
                           name=f"{name}_{i}")(x)
    return x

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    dim, nb, hd, dt = self.dim, self.num_blocks, self.heads, self.dtype
    inp_enc1 = PatchEmbed(dim, dt, name="patch_embed")(x.astype(dt))
    enc1 = self._blocks(inp_enc1, "encoder_level1", nb[0], hd[0])
    enc2 = self._blocks(Downsample(dim, dt, name="down1_2")(enc1),
                        "encoder_level2", nb[1], hd[1])
    enc3 = self._blocks(Downsample(dim * 2, dt, name="down2_3")(enc2),
                        "encoder_level3", nb[2], hd[2])
    latent = self._blocks(Downsample(dim * 4, dt, name="down3_4")(enc3),
                          "latent", nb[3], hd[3])

    up3 = Upsample(dim * 8, dt, name="up4_3")(latent)
    dec3 = _conv(dim * 4, 1, self.bias, dt, "reduce_chan_level3")(
        jnp.concatenate([up3, enc3], axis=-1))
    dec3 = self._blocks(dec3, "decoder_level3", nb[2], hd[2])

    up2 = Upsample(dim * 4, dt, name="up3_2")(dec3)
    dec2 = _conv(dim * 2, 1, self.bias, dt, "reduce_chan_level2")(
        jnp.concatenate([up2, enc2], axis=-1))
    dec2 = self._blocks(dec2, "decoder_level2", nb[1], hd[1])

    # Level 1 keeps the concatenation's 2 * dim channels (no 1x1 reduction).
    up1 = Upsample(dim * 2, dt, name="up2_1")(dec2)
    dec1 = self._blocks(jnp.concatenate([up1, enc1], axis=-1),
                        "decoder_level1", nb[0], hd[0])
    dec1 = self._blocks(dec1, "refinement", self.num_refinement_blocks, hd[0])
    if self.dual_pixel_task:
      dec1 = dec1 + _conv(dim * 2, 1, self.bias, dt, "skip_conv")(inp_enc1)
    out = _conv(self.out_channels, 3, self.bias, dt, "output")(dec1)
    return out.astype(jnp.float32)


# --- Conversion from / to the reference's state_dict -----------------------


def _torch_module(path: tuple[str, ...]) -> str:
  """('encoder_level1_0', 'attn', 'qkv') -> 'encoder_level1.0.attn.qkv'."""
  parts = []
  for seg in path:
    m = re.fullmatch(r"(.+)_(\d+)", seg)
    parts.extend(m.groups() if m and m.group(1) in _SEQUENTIALS else (seg,))
  return ".".join(parts)


def _layout(**attrs) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """{torch key: (Flax params path, torch shape)} for these attributes."""
  model = Restormer(**attrs)
  x = jax.ShapeDtypeStruct((1, 8, 8, model.inp_channels), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  out = {}
  for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = tuple(k.key for k in keys)
    shape = tuple(leaf.shape)
    name = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    if path[-1] == "kernel":  # HWIO -> OIHW
      shape = (shape[3], shape[2], shape[0], shape[1])
    out[f"{_torch_module(path[:-1])}.{name}"] = (path, shape)
  return out


def params_from_torch(state: Mapping[str, np.ndarray], **attrs) -> dict:
  """{"params": ...} (float32) from the reference `Restormer(**attrs)`'s
  `state_dict()` (keys without any `RestorationNet.` prefix; numpy arrays
  or CPU tensors). Strict: see `torch_layout.check_state`."""
  layout = _layout(**attrs)
  torch_layout.check_state(
      state, {k: shape for k, (_, shape) in layout.items()})
  params = {}
  for key, (path, _) in layout.items():
    value = np.asarray(state[key], np.float32)
    if path[-1] == "kernel":  # OIHW -> HWIO; depthwise [C,1,h,w] -> [h,w,1,C]
      value = value.transpose(2, 3, 1, 0)
    node = params
    for seg in path[:-1]:
      node = node.setdefault(seg, {})
    node[path[-1]] = value
  return {"params": params}


def params_to_torch(variables, **attrs) -> dict[str, np.ndarray]:
  """The reference `Restormer(**attrs).state_dict()` (float32 numpy) from
  Flax variables {"params": ...}."""
  params = variables["params"]
  state = {}
  for key, (path, _) in _layout(**attrs).items():
    value = params
    for seg in path:
      value = value[seg]
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1)
    state[key] = np.array(value)  # a writable, contiguous copy
  return state
