"""SwinIR (Liang et al., ICCVW 2021) as the reference's `models/net/swinir.py`.

A 3x3 shallow conv, residual Swin Transformer blocks (RSTB: Swin blocks with
(shifted-)window attention and a relative position bias, then a conv, plus
the stage input), a LayerNorm, a conv after the body plus the shallow
features, and a reconstruction head, NHWC. The forward itself reflect-pads
the input to a multiple of `window_size` (check_image_size), subtracts the
DIV2K RGB mean (3 channels; else 0) times `img_range`, and for denoising
(no upsampler) returns `x + conv_last(...)`, un-normalised and cropped back:
the reference's own residual, inside Noise-DA's `input + RestorationNet(input)`.

DEFAULTS are not the reference constructor's, which do not build (window 7
does not tile its img_size 64, so the shifted blocks' mask fails): they are
SwinIR's published colour-denoising model (JingyunLiang/SwinIR,
main_test_swinir.py, task 'color_dn': img_size 128, window 8, embed 180, six
RSTBs of 6 blocks and 6 heads, mlp ratio 2, upscale 1, img_range 1, '1conv',
no upsampler); the other arguments keep the reference's defaults.

As in the reference, `img_size // patch_size` (the "patch resolution"; the
patch embedding only flattens) fixes every block's window and shift at
construction: a resolution of at most `window_size` becomes the window and
turns the shift off. Masks of the shifted blocks are computed for the size
actually run. The upsamplers 'pixelshuffle', 'pixelshuffledirect' and
'nearest+conv' are ported too; `upsampler` '' or None is the denoising head
(any other string raises, where the reference would quietly denoise).
`norm_layer` is always LayerNorm.

Submodules are named after the torch module tree, a Sequential's or
ModuleList's index joined by `_` (`layers.0.residual_group.blocks.1.attn.qkv`
becomes `layers_0/residual_group/blocks_1/attn/qkv`; `conv_after_body.0`
becomes `conv_after_body_0`), so `params_from_torch` / `params_to_torch` are
a rename plus a layout transpose.
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
from dada_jax.models import uformer

DEFAULTS = backbones.RESTORERS["swinir"]

# Parameter count from the reference's torch module: "paper" 11,504,163.
PRESETS = {
    # SwinIR's published colour-denoising model (DEFAULTS).
    "paper": {},
    # Tiny, for tests: two RSTBs of width 8 with 4x4 windows.
    "runlocal": backbones.RUNLOCAL["swinir"],
}

_RGB_MEAN = (0.4488, 0.4371, 0.4040)  # DIV2K, as the reference
_TORCH_CONV_INIT = nn.initializers.variance_scaling(1 / 3, "fan_in", "uniform")
_LINEAR_INIT = nn.initializers.truncated_normal(0.02)
_UPSAMPLERS = ("", None, "pixelshuffle", "pixelshuffledirect", "nearest+conv")


def _attrs(attrs) -> dict:
  unknown = set(attrs) - set(DEFAULTS) - {"dtype"}
  if unknown:
    raise ValueError(f"unknown SwinIR attributes {sorted(unknown)}")
  return {**DEFAULTS, **attrs}


def pad_multiple(**attrs) -> int:
  """1: the forward pads any input to its windows itself and crops back."""
  _attrs(attrs)
  return 1


def _pair(v) -> tuple[int, int]:
  return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def patches_resolution(img_size, patch_size) -> tuple[int, int]:
  """The reference's `input_resolution` of every block."""
  (h, w), (ph, pw) = _pair(img_size), _pair(patch_size)
  return h // ph, w // pw


def window_and_shift(resolution: tuple[int, int], window_size: int,
                     odd: bool) -> tuple[int, int]:
  """A block's (window, shift): shift window // 2 on odd blocks, and when
  min(resolution) <= window the window becomes min(resolution), unshifted."""
  win, shift = window_size, window_size // 2 if odd else 0
  if min(resolution) <= win:
    win, shift = min(resolution), 0
  if not 0 <= shift < win:
    raise ValueError(f"SwinIR: shift {shift} not in [0, {win})")
  return win, shift


def shift_mask(h: int, w: int, win: int, shift: int) -> jax.Array:
  """uformer.shift_mask (the reference's calculate_mask) built in the graph
  from iotas: [nW, win², win²] float32, -100 across regions, else 0."""
  def region(n, axis):
    i = jax.lax.broadcasted_iota(jnp.int32, (h, w), axis)
    return (i >= n - win).astype(jnp.int32) + (i >= n - shift)
  label = (3 * region(h, 0) + region(w, 1)).astype(jnp.float32)
  label = uformer.window_partition(label[None, :, :, None], win)[..., 0]
  diff = label[:, None, :] - label[:, :, None]
  return jnp.where(diff != 0, -100.0, 0.0).astype(jnp.float32)


def pixel_shuffle(x: jax.Array, r: int) -> jax.Array:
  """torch `PixelShuffle(r)` in NHWC: [B, H, W, C r²] -> [B, rH, rW, C],
  input channel c r² + i r + j going to pixel (r h + i, r w + j) of c."""
  b, h, w, c = x.shape
  x = x.reshape(b, h, w, c // (r * r), r, r)
  return x.transpose(0, 1, 4, 2, 5, 3).reshape(b, h * r, w * r, c // (r * r))


def _dense(features, name, dtype, use_bias=True):
  return nn.Dense(features, use_bias=use_bias, dtype=dtype,
                  param_dtype=jnp.float32, kernel_init=_LINEAR_INIT, name=name)


def _conv(features, kernel, name, dtype):
  return layers.Conv(features, (kernel, kernel), 1, kernel // 2,
                     _TORCH_CONV_INIT, dtype, name=name)


def _layer_norm(x, name):
  """torch LayerNorm(eps=1e-5), two-pass variance in float32, back in x's
  dtype."""
  y = nn.LayerNorm(1e-5, dtype=jnp.float32, param_dtype=jnp.float32,
                   use_fast_variance=False, name=name)(x.astype(jnp.float32))
  return y.astype(x.dtype)


class WindowAttention(nn.Module):
  """Multi-head self-attention inside windows with a learned relative
  position bias. x [B*nW, win², C] (windows batch-major), mask [nW, win²,
  win²] or None -> [B*nW, win², C]."""
  window_size: int
  num_heads: int
  qkv_bias: bool = True
  qk_scale: float | None = None
  attn_drop: float = 0.0
  proj_drop: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, mask=None, train: bool = False):
    b_, n, c = x.shape
    win, heads = self.window_size, self.num_heads
    table = self.param("relative_position_bias_table", _LINEAR_INIT,
                       ((2 * win - 1)**2, heads), jnp.float32)
    qkv = _dense(3 * c, "qkv", self.dtype, self.qkv_bias)(x)
    q, k, v = qkv.reshape(b_, n, 3, heads, c // heads).transpose(2, 0, 3, 1, 4)
    scale = self.qk_scale or (c // heads)**-0.5
    logits = jnp.einsum("bhnd,bhmd->bhnm", q * scale, k).astype(jnp.float32)
    bias = table[uformer.relative_position_index(win).reshape(-1)]
    logits = logits + bias.reshape(n, n, heads).transpose(2, 0, 1)
    if mask is not None:
      nw = mask.shape[0]
      logits = logits.reshape(b_ // nw, nw, heads, n, n) + mask[None, :, None]
      logits = logits.reshape(b_, heads, n, n)
    attn = jax.nn.softmax(logits, axis=-1).astype(q.dtype)
    attn = nn.Dropout(self.attn_drop, deterministic=not train)(attn)
    x = jnp.einsum("bhnm,bhmd->bnhd", attn, v).reshape(b_, n, c)
    x = _dense(c, "proj", self.dtype)(x)
    return nn.Dropout(self.proj_drop, deterministic=not train)(x)


class Mlp(nn.Module):
  """Linear, GELU (erf), dropout, linear, dropout. [..., C] -> [..., C]."""
  hidden: int
  drop: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    x = nn.gelu(_dense(self.hidden, "fc1", self.dtype)(x), approximate=False)
    x = nn.Dropout(self.drop, deterministic=not train)(x)
    x = _dense(c, "fc2", self.dtype)(x)
    return nn.Dropout(self.drop, deterministic=not train)(x)


class SwinTransformerBlock(nn.Module):
  """(Shifted-)window attention and an MLP, each a pre-norm residual branch
  with drop-path. `window_size` / `shift_size` are the effective ones
  (window_and_shift). x [B, H, W, C], H and W multiples of the window ->
  [B, H, W, C]."""
  num_heads: int
  window_size: int
  shift_size: int = 0
  mlp_ratio: float = 4.0
  qkv_bias: bool = True
  qk_scale: float | None = None
  drop: float = 0.0
  attn_drop: float = 0.0
  drop_path: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    b, h, w, c = x.shape
    win, shift = self.window_size, self.shift_size
    if h % win or w % win:
      # The reference's window_partition fails here too (a view error).
      raise ValueError(f"SwinIR: a {h}x{w} feature map is not tiled by this "
                       f"block's {win}x{win} windows (shrunk to its img_size "
                       "// patch_size); choose img_size so it divides "
                       "window_size")
    shortcut = x
    y = _layer_norm(x, "norm1")
    mask = None
    if shift > 0:
      y = jnp.roll(y, (-shift, -shift), axis=(1, 2))
      mask = shift_mask(h, w, win, shift)
    windows = WindowAttention(win, self.num_heads, self.qkv_bias,
                              self.qk_scale, self.attn_drop, self.drop,
                              self.dtype, name="attn")(
                                  uformer.window_partition(y, win), mask, train)
    y = uformer.window_reverse(windows, win, h, w)
    if shift > 0:
      y = jnp.roll(y, (shift, shift), axis=(1, 2))
    x = shortcut + uformer.drop_path(self, y, self.drop_path, train)
    y = Mlp(int(c * self.mlp_ratio), self.drop, self.dtype, name="mlp")(
        _layer_norm(x, "norm2"), train)
    return x + uformer.drop_path(self, y, self.drop_path, train)


def _resi_conv(x, kind: str, name: str, dtype):
  """The conv before a residual, built in the calling module: '1conv' a 3x3
  conv (submodule `name`); '3conv' 3x3 to C/4, LeakyReLU(0.2), 1x1,
  LeakyReLU(0.2), 3x3 back to C (`name`_0, _2, _4, the Sequential's
  indices). [B, H, W, C] -> [B, H, W, C]."""
  c = x.shape[-1]
  if kind == "1conv":
    return _conv(c, 3, name, dtype)(x)
  if kind == "3conv":
    x = nn.leaky_relu(_conv(c // 4, 3, f"{name}_0", dtype)(x), 0.2)
    x = nn.leaky_relu(_conv(c // 4, 1, f"{name}_2", dtype)(x), 0.2)
    return _conv(c, 3, f"{name}_4", dtype)(x)
  raise ValueError(f"SwinIR resi_connection must be '1conv' or '3conv', got "
                   f"{kind!r}")


class BasicLayer(nn.Module):
  """`depth` Swin blocks, the odd ones shifted. [B, H, W, C] -> same."""
  resolution: tuple[int, int]  # img_size // patch_size: fixes the windows
  depth: int
  num_heads: int
  window_size: int
  drop_path: tuple[float, ...]
  block_kwargs: dict
  use_checkpoint: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    block = SwinTransformerBlock
    if self.use_checkpoint:
      block = nn.remat(block, static_argnums=(2,))
    for i in range(self.depth):
      win, shift = window_and_shift(self.resolution, self.window_size, i % 2)
      x = block(self.num_heads, win, shift, drop_path=self.drop_path[i],
                dtype=self.dtype, name=f"blocks_{i}",
                **self.block_kwargs)(x, train)
    return x


class RSTB(nn.Module):
  """Residual Swin Transformer block: `depth` Swin blocks (the odd ones
  shifted), the resi_connection conv, plus the input. [B, H, W, C] ->
  [B, H, W, C]."""
  resolution: tuple[int, int]  # img_size // patch_size: fixes the windows
  depth: int
  num_heads: int
  window_size: int
  drop_path: tuple[float, ...]
  block_kwargs: dict
  resi_connection: str = "1conv"
  use_checkpoint: bool = False
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    y = BasicLayer(self.resolution, self.depth, self.num_heads,
                   self.window_size, self.drop_path, self.block_kwargs,
                   self.use_checkpoint, self.dtype, name="residual_group")(
                       x, train)
    return _resi_conv(y, self.resi_connection, "conv", self.dtype) + x


class PatchEmbed(nn.Module):
  """The reference's patch embedding only flattens; what it holds is the
  optional LayerNorm `norm`. [B, H, W, C] -> [B, H, W, C]."""
  patch_norm: bool = True

  @nn.compact
  def __call__(self, x):
    return _layer_norm(x, "norm") if self.patch_norm else x


class SwinIR(nn.Module):
  """SwinIR restorer (its forward's own residual included).

  Attributes are the reference constructor's (DEFAULTS; `norm_layer` is
  always LayerNorm): `img_size` (int or (H, W)) with `patch_size` fixes the
  blocks' windows and shifts and `ape`'s table (not the input size),
  `in_chans` input and output channels, `embed_dim` width, `depths` /
  `num_heads` per RSTB, `window_size`, `mlp_ratio`, `qkv_bias`, `qk_scale`,
  `drop_rate` / `attn_drop_rate` / `drop_path_rate` (train only, the
  'dropout' rng), `ape` (absolute position embedding; inputs of exactly the
  patch resolution after padding), `patch_norm`, `use_checkpoint`
  (rematerialise blocks), `upscale`, `img_range`, `upsampler` ('' / None
  denoising, 'pixelshuffle', 'pixelshuffledirect', 'nearest+conv'),
  `resi_connection` '1conv' | '3conv'. `dtype` is the compute dtype;
  parameters, LayerNorm, softmax and the image-level arithmetic stay float32.

  Call: x [B, H, W, in_chans] of any size (torch reflect padding needs the
  pad, < window_size, to be smaller than H and W) -> [B, H*upscale,
  W*upscale, in_chans] float32 (the reference's forward, NHWC).
  """
  img_size: int | tuple[int, int] = 128
  patch_size: int | tuple[int, int] = 1
  in_chans: int = 3
  embed_dim: int = 180
  depths: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
  num_heads: tuple[int, ...] = (6, 6, 6, 6, 6, 6)
  window_size: int = 8
  mlp_ratio: float = 2.0
  qkv_bias: bool = True
  qk_scale: float | None = None
  drop_rate: float = 0.0
  attn_drop_rate: float = 0.0
  drop_path_rate: float = 0.1
  ape: bool = False
  patch_norm: bool = True
  use_checkpoint: bool = False
  upscale: int = 1
  img_range: float = 1.0
  upsampler: str | None = ""
  resi_connection: str = "1conv"
  dtype: jnp.dtype = jnp.float32

  def _drop_paths(self):
    """Per-RSTB drop-path rates, linspace(0, rate, sum(depths)) sliced."""
    d = list(self.depths)
    rates = [float(r) for r in np.linspace(0, self.drop_path_rate, sum(d),
                                           dtype=np.float32)]
    return [tuple(rates[sum(d[:i]):sum(d[:i + 1])]) for i in range(len(d))]

  def _features(self, x, train):
    """forward_features: [B, H, W, C] -> [B, H, W, C]."""
    b, h, w, c = x.shape
    resolution = patches_resolution(self.img_size, self.patch_size)
    x = PatchEmbed(self.patch_norm, name="patch_embed")(x)
    if self.ape:
      n = resolution[0] * resolution[1]
      table = self.param("absolute_pos_embed", _LINEAR_INIT, (1, n, c),
                         jnp.float32)
      if h * w != n:
        raise ValueError(f"SwinIR ape: {h}x{w} tokens (after padding), the "
                         f"table has {n} ({resolution}); run that size")
      x = x + table.reshape(1, h, w, c).astype(x.dtype)
    x = nn.Dropout(self.drop_rate, deterministic=not train)(x)
    block_kwargs = dict(mlp_ratio=self.mlp_ratio, qkv_bias=self.qkv_bias,
                        qk_scale=self.qk_scale, drop=self.drop_rate,
                        attn_drop=self.attn_drop_rate)
    for i, rates in enumerate(self._drop_paths()):
      x = RSTB(resolution, self.depths[i], self.num_heads[i], self.window_size,
               rates, block_kwargs, self.resi_connection, self.use_checkpoint,
               self.dtype, name=f"layers_{i}")(x, train)
    return _layer_norm(x, "norm")

  @nn.compact
  def __call__(self, x: jax.Array, train: bool = False) -> jax.Array:
    if len(self.depths) != len(self.num_heads):
      raise ValueError("SwinIR depths and num_heads differ in length")
    if self.upsampler not in _UPSAMPLERS:
      raise ValueError(f"SwinIR upsampler must be one of {_UPSAMPLERS}, got "
                       f"{self.upsampler!r}")
    _, h, w, c = x.shape
    x = x.astype(jnp.float32)
    ws = self.window_size
    pad_h, pad_w = (ws - h % ws) % ws, (ws - w % ws) % ws
    if pad_h >= h or pad_w >= w:  # torch's reflect padding refuses these
      raise ValueError(f"SwinIR: a {h}x{w} input cannot be reflect-padded "
                       f"by ({pad_h}, {pad_w}) to a multiple of {ws}")
    x = jnp.pad(x, ((0, 0), (0, pad_h), (0, pad_w), (0, 0)), mode="reflect")
    mean = jnp.asarray(_RGB_MEAN if c == 3 else (0.0,), jnp.float32)
    x = (x - mean) * self.img_range

    dim, num_feat, up = self.embed_dim, 64, self.upscale
    conv = lambda f, name: _conv(f, 3, name, self.dtype)
    first = conv(dim, "conv_first")(x)
    res = _resi_conv(self._features(first, train), self.resi_connection,
                     "conv_after_body", self.dtype) + first
    if self.upsampler in ("pixelshuffle", "nearest+conv"):
      y = nn.leaky_relu(conv(num_feat, "conv_before_upsample_0")(res), 0.01)
    if self.upsampler == "pixelshuffle":
      if up & (up - 1) == 0:
        for i in range(int(math.log2(up))):
          y = pixel_shuffle(conv(4 * num_feat, f"upsample_{2 * i}")(y), 2)
      elif up == 3:
        y = pixel_shuffle(conv(9 * num_feat, "upsample_0")(y), 3)
      else:
        raise ValueError(f"SwinIR pixelshuffle: scale {up} is not supported "
                         "(2^n and 3)")
      x = conv(c, "conv_last")(y)
    elif self.upsampler == "pixelshuffledirect":
      x = pixel_shuffle(conv(up * up * c, "upsample_0")(res), up)
    elif self.upsampler == "nearest+conv":
      lrelu = lambda t: nn.leaky_relu(t, 0.2)
      y = lrelu(conv(num_feat, "conv_up1")(layers.upsample_nearest2(y)))
      if up == 4:
        y = lrelu(conv(num_feat, "conv_up2")(layers.upsample_nearest2(y)))
      x = conv(c, "conv_last")(lrelu(conv(num_feat, "conv_hr")(y)))
    else:  # denoising / JPEG: the forward's own residual
      x = x + conv(c, "conv_last")(res)
    x = x.astype(jnp.float32) / self.img_range + mean
    return x[:, :h * up, :w * up]


# ---- Conversion to and from the reference's state_dict ---------------------


def _torch_key(path: tuple[str, ...]) -> str:
  """('layers_0', 'residual_group', 'blocks_1', 'mlp', 'fc1', 'kernel') ->
  'layers.0.residual_group.blocks.1.mlp.fc1.weight'."""
  *modules, leaf = path
  parts = []
  for seg in modules:
    m = re.fullmatch(r"(.+?)_(\d+)", seg)
    parts.extend(m.groups() if m else (seg,))
  leaf = {"kernel": "weight", "scale": "weight"}.get(leaf, leaf)
  return ".".join(parts + [leaf])


def _hashable(attrs: dict) -> tuple:
  return tuple(sorted((k, tuple(v) if isinstance(v, list) else v)
                      for k, v in attrs.items()))


@functools.lru_cache(maxsize=16)
def _layout_cached(key: tuple):
  a = _attrs({k: v for k, v in key if k != "dtype"})
  model = SwinIR(**a)
  res = patches_resolution(a["img_size"], a["patch_size"])
  ws = a["window_size"]
  size = [-(-r // ws) * ws for r in res]
  x = jax.ShapeDtypeStruct((1, *size, a["in_chans"]), jnp.float32)
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  params = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(shapes)[0]:
    names = tuple(p.key for p in path)
    shape = leaf.shape
    if names[-1] == "kernel":
      shape = shape[::-1] if len(shape) == 2 else tuple(
          shape[i] for i in (3, 2, 0, 1))
    params[_torch_key(names)] = (names, shape)
  buffers = {}
  for i, depth in enumerate(a["depths"]):
    for j in range(depth):
      win, shift = window_and_shift(res, ws, j % 2)
      prefix = f"layers.{i}.residual_group.blocks.{j}"
      buffers[f"{prefix}.attn.relative_position_index"] = (
          uformer.relative_position_index(win))
      if shift:
        if res[0] % win or res[1] % win:
          raise ValueError(f"the reference cannot build SwinIR with patch "
                           f"resolution {res} and window {win}: its shifted "
                           "blocks' mask needs the window to tile it")
        buffers[f"{prefix}.attn_mask"] = uformer.shift_mask(*res, win, shift)
  return params, buffers


def _layout(**attrs):
  """({torch key: (flax path, torch shape)} of the parameters, {torch key:
  value} of the buffers: relative_position_index, int64, and the shifted
  blocks' attn_mask, float32, for the patch resolution)."""
  return _layout_cached(_hashable(attrs))


def params_from_torch(state: Mapping[str, np.ndarray], **attrs) -> dict:
  """Our variables {"params": ...} from the reference module's state_dict
  (keys as the reference names them, no `RestorationNet.` prefix), strict like
  `load_state_dict(strict=True)`: one ValueError names every missing,
  unexpected and misshapen key, and any buffer (relative_position_index,
  attn_mask) that differs from the one recomputed here (buffers are not
  params).

  Linear weights [out, in] become kernels [in, out]; conv weights OIHW
  become HWIO; values are float32 numpy arrays.
  """
  return torch_layout.variables_from_torch(state, *_layout(**attrs),
                                           "SwinIR")


def params_to_torch(variables, **attrs) -> dict[str, np.ndarray]:
  """The reference module's state_dict from our variables {"params": ...}
  (the bare params tree is accepted too): its keys, shapes and dtypes
  (float32 parameters and attn_mask buffers, int64 relative_position_index),
  ready for its `load_state_dict(strict=True)`."""
  return torch_layout.variables_to_torch(variables, *_layout(**attrs),
                                         "SwinIR")
