"""NAFNet (Chen et al., "Simple Baselines for Image Restoration", ECCV 2022).

Noise-DA's models/net/NAFNet.py holds only the NAFNet block; the network
around it is built here as its authors publish it (megvii-research/NAFNet,
basicsr/models/archs/NAFNet_arch.py), NHWC:

  pad right / bottom with zeros to a multiple of 2**len(enc_blk_nums)
  intro 3x3 conv to `width`
  per level: NAFBlocks (`encoders.i`), keep the skip, 2x2 stride-2 conv
    doubling the channels (`downs.i`)
  NAFBlocks at the bottom (`middle_blks`)
  per level back up: 1x1 conv (no bias) to twice the channels and
    PixelShuffle(2) (`ups.i`), add the skip, NAFBlocks (`decoders.i`)
  ending 3x3 conv to img_channel, + the (padded) input, crop to H, W.

The block is the published NAFBlock: LayerNorm2d (over channels, eps 1e-6)
-> 1x1 -> depthwise 3x3 -> SimpleGate -> simplified channel attention
(x * conv1x1(mean over H, W)) -> 1x1 -> dropout, added as `inp + x * beta`;
then LayerNorm2d -> 1x1 -> SimpleGate -> 1x1 -> dropout, added as
`y + x * gamma`. Noise-DA's copy of the block differs from the published one
in two ways, both attributes here with the published behaviour as default:
  * `dilation`: its depthwise 3x3 conv takes a dilation (padding = dilation),
    a required argument there; published 1.
  * `beta_gamma_init`: it initialises beta and gamma to ones; the published
    block to zeros (each block starts as the identity). Only training from
    scratch sees this; loaded weights replace both.
`drop_out_rate` (the block's argument, which the published network leaves at
0) is passed to every block; dropout acts only with `train=True` and an rng
named "dropout".

Parameters carry the published state_dict's names: a ModuleList's or
Sequential's indices join the name (`encoders.0.1.conv1` is
`encoders_0_1/conv1`, `ups.0.0` is `ups_0_0`, `sca.1` is `sca_1`), so
published checkpoints (`unwrap_published` takes their nesting) convert by a
rename plus a layout transpose.
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
from dada_jax.models.restormer import pixel_shuffle2

# NAFNet-SIDD-width32, the published SIDD denoising model
# (options/test/SIDD/NAFNet-width32.yml; the published constructor's own
# defaults are width 16, one middle block and no levels).
DEFAULTS = backbones.RESTORERS["nafnet"]

PRESETS = {
    "runlocal": backbones.RUNLOCAL["nafnet"],  # tiny, for tests
    "width32": {},  # NAFNet-SIDD-width32
    "width64": dict(width=64),  # NAFNet-SIDD-width64
}

# torch containers whose members' indices join the name.
_CONTAINERS = ("encoders", "decoders", "downs", "ups", "middle_blks", "sca")


def pad_multiple(**attrs) -> int:
  """Sides the network runs without its own zero padding: 2**levels. Any
  size works (the network pads and crops itself, as published)."""
  return 2 ** len(attrs.get("enc_blk_nums", DEFAULTS["enc_blk_nums"]))


def _conv(features, kernel, dtype, name, *, stride=1, groups=1, dilation=1,
          bias=True):
  """torch `Conv2d(kernel, stride, padding=dilation * (kernel // 2))` for
  odd kernels, no padding for even ones (the strided 2x2 `downs`); kernel
  HWIO float32. groups is 1 or `features` (depthwise)."""
  if groups > 1:
    assert groups == features and stride == 1, (groups, features, stride)
    return layers.DepthwiseConv(kernel, dilation, use_bias=bias, dtype=dtype,
                                name=name)
  pad = dilation * (kernel // 2) if kernel % 2 else 0
  return nn.Conv(features, (kernel, kernel), strides=(stride, stride),
                 padding=((pad, pad), (pad, pad)), kernel_dilation=dilation,
                 feature_group_count=groups, use_bias=bias, dtype=dtype,
                 param_dtype=jnp.float32, kernel_init=layers.KAIMING,
                 name=name)


class LayerNorm2d(nn.Module):
  """NAFNet's LayerNorm2d: per pixel over the channels (the last axis),
  (x - mean) / sqrt(biased var + eps) * weight + bias. The published custom
  backward is this function's exact gradient, which autodiff gives.
  Statistics in float32; [..., C] -> [..., C] in x's dtype."""
  eps: float = 1e-6

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    x32 = x.astype(jnp.float32)
    mu = x32.mean(-1, keepdims=True)
    var = jnp.square(x32 - mu).mean(-1, keepdims=True)
    y = (x32 - mu) / jnp.sqrt(var + self.eps) * scale + bias
    return y.astype(x.dtype)


def simple_gate(x: jax.Array) -> jax.Array:
  """SimpleGate: first half of the channels times the second half."""
  x1, x2 = jnp.split(x, 2, axis=-1)
  return x1 * x2


class NAFBlock(nn.Module):
  """[B, H, W, c] -> [B, H, W, c]; attributes as the block's constructor
  (c is the input's channels). See the module docstring."""
  DW_Expand: int = 2  # pylint: disable=invalid-name
  FFN_Expand: int = 2  # pylint: disable=invalid-name
  drop_out_rate: float = 0.0
  dilation: int = 1
  beta_gamma_init: float = 0.0
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, inp, train: bool = False):
    c, dt = inp.shape[-1], self.dtype
    dw = c * self.DW_Expand
    init = nn.initializers.constant(self.beta_gamma_init)
    beta = self.param("beta", init, (c,), jnp.float32)
    gamma = self.param("gamma", init, (c,), jnp.float32)

    x = LayerNorm2d(name="norm1")(inp)
    x = _conv(dw, 1, dt, "conv1")(x)
    x = _conv(dw, 3, dt, "conv2", groups=dw, dilation=self.dilation)(x)
    x = simple_gate(x)
    pooled = x.astype(jnp.float32).mean((1, 2), keepdims=True).astype(dt)
    x = x * _conv(dw // 2, 1, dt, "sca_1")(pooled)
    x = _conv(c, 1, dt, "conv3")(x)
    if self.drop_out_rate > 0:
      x = nn.Dropout(self.drop_out_rate, deterministic=not train,
                     name="dropout1")(x)
    y = inp + x * beta.astype(dt)

    x = _conv(c * self.FFN_Expand, 1, dt, "conv4")(LayerNorm2d(name="norm2")(y))
    x = _conv(c, 1, dt, "conv5")(simple_gate(x))
    if self.drop_out_rate > 0:
      x = nn.Dropout(self.drop_out_rate, deterministic=not train,
                     name="dropout2")(x)
    return y + x * gamma.astype(dt)


class NAFNet(nn.Module):
  """The published NAFNet; its constructor's arguments plus the block's.

  Attributes:
    img_channel: image channels in and out.
    width: level-0 channels; level i has width * 2**i.
    middle_blk_num: NAFBlocks at the bottom level.
    enc_blk_nums / dec_blk_nums: NAFBlocks per encoder level (top first) /
      per decoder level (bottom first); as published, they have equal length.
    dilation: the depthwise conv's dilation in every block (Noise-DA's block
      argument; published 1).
    drop_out_rate: every block's dropout (published network: 0).
    beta_gamma_init: initial beta and gamma (published 0, Noise-DA's 1).
    dtype: compute dtype; parameters and norm statistics stay float32.

  Call: x [B, H, W, img_channel], any H and W, any value range ->
  [B, H, W, img_channel] float32: the network's output, which already adds
  the input (`ending(...) + inp`; Noise-DA's wrapper adds it once more).
  `train` switches dropout on (needs rng "dropout" when drop_out_rate > 0).
  """
  img_channel: int = 3
  width: int = 32
  middle_blk_num: int = 12
  enc_blk_nums: tuple[int, ...] = (2, 2, 4, 8)
  dec_blk_nums: tuple[int, ...] = (2, 2, 2, 2)
  dilation: int = 1
  drop_out_rate: float = 0.0
  beta_gamma_init: float = 0.0
  dtype: jnp.dtype = jnp.float32

  def _blocks(self, x, name, count, train):
    for j in range(count):
      x = NAFBlock(drop_out_rate=self.drop_out_rate, dilation=self.dilation,
                   beta_gamma_init=self.beta_gamma_init, dtype=self.dtype,
                   name=f"{name}_{j}")(x, train)
    return x

  @nn.compact
  def __call__(self, x, train: bool = False):
    _, h, w, _ = x.shape
    m, dt = 2 ** len(self.enc_blk_nums), self.dtype
    inp = jnp.pad(x.astype(dt), ((0, 0), (0, -h % m), (0, -w % m), (0, 0)))

    x = _conv(self.width, 3, dt, "intro")(inp)
    skips, chan = [], self.width
    for i, num in enumerate(self.enc_blk_nums):
      x = self._blocks(x, f"encoders_{i}", num, train)
      skips.append(x)
      x = _conv(2 * chan, 2, dt, f"downs_{i}", stride=2)(x)
      chan *= 2
    x = self._blocks(x, "middle_blks", self.middle_blk_num, train)
    for i, (num, skip) in enumerate(zip(self.dec_blk_nums, skips[::-1])):
      x = pixel_shuffle2(_conv(2 * chan, 1, dt, f"ups_{i}_0", bias=False)(x))
      chan //= 2
      x = self._blocks(x + skip, f"decoders_{i}", num, train)
    x = _conv(self.img_channel, 3, dt, "ending")(x) + inp
    return x[:, :h, :w].astype(jnp.float32)


# --- Conversion from / to the published state_dict -------------------------


def unwrap_published(obj) -> dict:
  """The state_dict inside a published NAFNet checkpoint (`torch.load` of
  e.g. NAFNet-SIDD-width32.pth): under `params` (BasicSR's param_key) or
  `state_dict`, or `obj` itself; a DataParallel `module.` prefix dropped."""
  for key in ("params", "state_dict"):
    if isinstance(obj, Mapping) and key in obj and isinstance(obj[key],
                                                              Mapping):
      obj = obj[key]
      break
  return {k[len("module."):] if k.startswith("module.") else k: v
          for k, v in obj.items()}


def _torch_module(path: tuple[str, ...]) -> str:
  """('encoders_0_1', 'sca_1') -> 'encoders.0.1.sca.1'."""
  parts = []
  for seg in path:
    m = re.fullmatch(r"([a-z_]+?)((?:_\d+)+)", seg)
    if m and m.group(1) in _CONTAINERS:
      parts.append(m.group(1))
      parts.extend(m.group(2)[1:].split("_"))
    else:
      parts.append(seg)
  return ".".join(parts)


def _layout(**attrs) -> dict[str, tuple[tuple[str, ...], tuple[int, ...]]]:
  """{torch key: (Flax params path, torch shape)} for these attributes, in
  no particular order."""
  model = NAFNet(**attrs)
  x = jax.ShapeDtypeStruct((1, 1, 1, model.img_channel), jnp.float32)
  params = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)["params"]
  out = {}
  for keys, leaf in jax.tree_util.tree_flatten_with_path(params)[0]:
    path = tuple(k.key for k in keys)
    shape = tuple(leaf.shape)
    if path[-1] == "kernel":  # HWIO -> OIHW
      shape = (shape[3], shape[2], shape[0], shape[1])
    elif path[-1] in ("beta", "gamma"):
      shape = (1, shape[0], 1, 1)
    name = {"kernel": "weight", "scale": "weight"}.get(path[-1], path[-1])
    out[f"{_torch_module(path[:-1])}.{name}"] = (path, shape)
  return out


def params_from_torch(state: Mapping[str, np.ndarray], **attrs) -> dict:
  """{"params": ...} (float32) from a published `NAFNet(**attrs)`'s
  `state_dict()` (numpy arrays or CPU tensors; see `unwrap_published` for
  checkpoint files). Strict like load_state_dict(strict=True): one
  ValueError names every missing, unexpected and misshapen key."""
  layout = _layout(**attrs)
  torch_layout.check_state(
      state, {k: shape for k, (_, shape) in layout.items()})
  params = {}
  for key, (path, _) in layout.items():
    value = np.asarray(state[key], np.float32)
    if path[-1] == "kernel":  # OIHW -> HWIO; depthwise [C,1,h,w] -> [h,w,1,C]
      value = value.transpose(2, 3, 1, 0)
    elif path[-1] in ("beta", "gamma"):  # [1, C, 1, 1] -> [C]
      value = value.reshape(-1)
    node = params
    for seg in path[:-1]:
      node = node.setdefault(seg, {})
    node[path[-1]] = value
  return {"params": params}


def params_to_torch(variables, **attrs) -> dict[str, np.ndarray]:
  """The published `NAFNet(**attrs).state_dict()` (float32 numpy, the
  published key order) from Flax variables {"params": ...}."""
  params = variables["params"]
  layout = _layout(**attrs)
  state = {}
  for key in sorted(layout, key=_torch_order):
    path, shape = layout[key]
    value = params
    for seg in path:
      value = value[seg]
    value = np.asarray(value, np.float32)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1)
    state[key] = np.array(value.reshape(shape))  # writable, contiguous
  return state


_MODULE_ORDER = ("intro", "ending", "encoders", "decoders", "middle_blks",
                 "ups", "downs")
_BLOCK_ORDER = ("beta", "gamma", "conv1", "conv2", "conv3", "sca", "conv4",
                "conv5", "norm1", "norm2")


def _torch_order(key: str):
  """Sort key giving the published module's state_dict order (registration
  order, a module's own parameters before its children's: intro, ending,
  encoders, decoders, middle_blks, ups, downs; in a block beta, gamma,
  conv1-3, sca, conv4-5, norm1-2; weight before bias)."""
  parts = key.split(".")
  rank = [_MODULE_ORDER.index(parts[0])]
  for p in parts[1:]:
    if p.isdigit():
      rank.append(int(p))
    elif p in _BLOCK_ORDER:
      rank.append(_BLOCK_ORDER.index(p))
    else:
      rank.append(("weight", "bias").index(p))
  return rank
