"""Building blocks shared by the restorer and the critic (NHWC layout).

Module names mirror the PyTorch module paths of the official Noise-DA code with
dots turned into underscores (`input_blocks.1.0.in_layers.2` becomes
`input_blocks_1_0/in_layers_2`), so weight conversion is a mechanical rename
plus a layout transpose (see `dada_jax.torch_io.convert`).
"""

from __future__ import annotations

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

# The reference trains with kaiming-normal (fan_in) weights and zero biases on
# every conv and linear layer: its training script re-initialises them all,
# the last ones included.
KAIMING = nn.initializers.variance_scaling(2.0, "fan_in", "normal")


def output_init(zero: bool) -> nn.initializers.Initializer:
  """Kernel init of a block's output layer: zeros (the block starts by adding
  nothing) or KAIMING."""
  return nn.initializers.zeros if zero else KAIMING


@jax.custom_vjp
def add_bias(y: jax.Array, bias: jax.Array) -> jax.Array:
  """y [B, ..., C] + bias [C]; the bias gradient sums rows first (see
  `sum_rows_first`): XLA:CPU's single reduction over B·H·W was ~10x slower
  on [6, 128, 128, 128]."""
  return y + bias


def sum_rows_first(ts: tuple[jax.Array, ...],
                   keep: tuple[int, ...]) -> tuple[jax.Array, ...]:
  """Sums each float32 array of `ts` (one shape) over every axis but `keep`
  (kept, as size 1): the second-to-last axis first, then the rest.

  XLA:CPU runs one reduction over B·H·W as a tree of reduce-windows (~10x
  slower on [6, 128, 128, 128]) and a short one element after element (~5x
  the round-off over 32x32); two stages avoid both. The barrier stops XLA
  from merging them back into one reduction (arrays summed together share
  one pass).
  """
  ndim = ts[0].ndim
  axes = tuple(a for a in range(ndim) if a not in keep)
  if ndim - 2 in axes and len(axes) > 1:
    ts = jax.lax.optimization_barrier(
        tuple(t.sum(axis=ndim - 2, keepdims=True) for t in ts))
  return tuple(t.sum(axis=axes, keepdims=True) for t in ts)


def _add_bias_bwd(_, dy):
  d_bias, = sum_rows_first((dy.astype(jnp.float32),), (dy.ndim - 1,))
  return dy, d_bias.reshape(-1).astype(dy.dtype)


add_bias.defvjp(lambda y, bias: (y + bias, None), _add_bias_bwd)


class Dropout(nn.Dropout):
  """`nn.Dropout` (same mask, same draws from the same rng) whose keep mask
  is materialised once behind an optimization barrier.

  Without the barrier XLA fuses the threefry hash that makes the mask into
  every consumer: the following convolution's input fusion (and its
  backward), where XLA:TPU's emitter recomputes it per window tap. On the
  paper critic each such conv fusion became 0.4-0.7M LLO instructions and
  10-40 s of TPU compile (see launch/results/tpu_aot/README.md). The mask
  is pred [B, H, W, C]; the values are unchanged.
  """

  @nn.compact
  def __call__(self, inputs, deterministic: bool | None = None, rng=None):
    deterministic = nn.merge_param("deterministic", self.deterministic,
                                   deterministic)
    if self.rate == 0.0 or deterministic:
      return inputs
    if self.rate == 1.0:
      return jnp.zeros_like(inputs)
    keep_prob = 1.0 - self.rate
    if rng is None:
      rng = self.make_rng(self.rng_collection)
    broadcast_shape = list(inputs.shape)
    for dim in self.broadcast_dims:
      broadcast_shape[dim] = 1
    mask = jax.random.bernoulli(rng, p=keep_prob, shape=broadcast_shape)
    mask = jax.lax.optimization_barrier(mask)
    mask = jnp.broadcast_to(mask, inputs.shape)
    return jax.lax.select(mask, inputs / keep_prob, jnp.zeros_like(inputs))


def depthwise_conv(x: jax.Array, kernel: jax.Array,
                   dilation: int = 1) -> jax.Array:
  """torch `Conv2d(C, C, k, padding=dilation * (k // 2), dilation=dilation,
  groups=C, bias=False)` in NHWC: x [B, H, W, C], kernel [k, k, 1, C] (odd
  k) -> [B, H, W, C] in x's dtype.

  XLA:CPU runs a grouped convolution's gradient 6-7x and its forward 20-70x
  slower than the same sum written as k² shifted products
  (launch/results/backbones_cpu/depthwise_cpu.py on this project's 2-core
  host, [1, 512², 254]: forward 4.5-5.0 s vs 0.19-0.22 s, gradient
  11.7-12.7 s vs 1.8-2.0 s), so on CPU it is that sum, accumulated in
  float32; other platforms get the convolution.
  The choice is made when the program is lowered for its platform
  (`lax.platform_dependent`), so an ahead-of-time TPU compile on a CPU host
  still gets the convolution.
  """
  kernel = kernel.astype(x.dtype)
  return jax.lax.platform_dependent(
      x, kernel, cpu=functools.partial(_depthwise_taps, dilation=dilation),
      default=functools.partial(_depthwise_grouped, dilation=dilation))


def _depthwise_grouped(x, kernel, dilation):
  pad = dilation * (kernel.shape[0] // 2)
  return jax.lax.conv_general_dilated(
      x, kernel, (1, 1), [(pad, pad)] * 2, rhs_dilation=(dilation, dilation),
      dimension_numbers=("NHWC", "HWIO", "NHWC"),
      feature_group_count=x.shape[-1])


def _depthwise_taps(x, kernel, dilation):
  k = kernel.shape[0]
  pad = dilation * (k // 2)
  h, w = x.shape[1:3]
  padded = jnp.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)))
  out = jnp.zeros(x.shape, jnp.float32)
  for i in range(k):
    for j in range(k):
      tap = padded[:, i * dilation:i * dilation + h,
                   j * dilation:j * dilation + w]
      out = out + (tap * kernel[i, j, 0]).astype(jnp.float32)
  return out.astype(x.dtype)


class DepthwiseConv(nn.Module):
  """`depthwise_conv` with its parameters, as `nn.Conv` with
  `feature_group_count` = C names and shapes them: `kernel` [k, k, 1, C]
  and, with `use_bias`, `bias` [C] (float32). [B, H, W, C] -> [B, H, W, C]
  in `dtype`."""
  kernel_size: int = 3
  dilation: int = 1
  use_bias: bool = True
  kernel_init: nn.initializers.Initializer = KAIMING
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c, k = x.shape[-1], self.kernel_size
    kernel = self.param("kernel", self.kernel_init, (k, k, 1, c), jnp.float32)
    y = depthwise_conv(x.astype(self.dtype), kernel, self.dilation)
    if not self.use_bias:
      return y
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    return add_bias(y, bias.astype(self.dtype))


class Conv(nn.Module):
  """Channels-last convolution with bias, as `nn.Conv` (same parameters:
  `kernel` [*kernel_size, C_in, features], `bias` [features], float32) but
  with `add_bias`'s gradient. Zero padding `padding` on each spatial side;
  `dtype` is the compute dtype. [B, *spatial, C_in] -> [B, *spatial',
  features]."""
  features: int
  kernel_size: tuple[int, ...]
  strides: int = 1
  padding: int = 0
  kernel_init: nn.initializers.Initializer = KAIMING
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    n = x.ndim
    kernel = self.param("kernel", self.kernel_init,
                        (*self.kernel_size, x.shape[-1], self.features),
                        jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (self.features,),
                      jnp.float32)
    spatial = tuple(range(1, n - 1))
    numbers = jax.lax.ConvDimensionNumbers(
        lhs_spec=(0, n - 1) + spatial, rhs_spec=(n - 1, n - 2) + tuple(
            range(n - 2)), out_spec=(0, n - 1) + spatial)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype),
        (self.strides,) * (n - 2), [(self.padding, self.padding)] * (n - 2),
        dimension_numbers=numbers)
    return add_bias(y, bias.astype(self.dtype))


def conv3x3(features: int, name: str, dtype: jnp.dtype,
            kernel_init: nn.initializers.Initializer = KAIMING,
            strides: int = 1) -> Conv:
  """3x3 conv with one pixel of zero padding (torch's `Conv2d(k=3, p=1)`).

  Maps [B, H, W, C] to [B, ceil(H / strides), ceil(W / strides), features];
  parameters stay float32, `dtype` is the compute dtype. Built inside a
  module's compact method, it becomes that module's submodule `name`.
  """
  return Conv(features, (3, 3), strides, 1, kernel_init, dtype, name=name)


def conv1x1(features: int, name: str, dtype: jnp.dtype,
            kernel_init: nn.initializers.Initializer = KAIMING,
            spatial_dims: int = 2) -> Conv:
  """Pointwise conv over `spatial_dims` spatial axes ([B, ..., C])."""
  return Conv(features, (1,) * spatial_dims, 1, 0, kernel_init, dtype,
              name=name)


def avg_pool2(x: jax.Array) -> jax.Array:
  """2x2 average pooling, stride 2, floor mode (drops an odd last row/col)."""
  return nn.avg_pool(x, (2, 2), strides=(2, 2), padding="VALID")


def upsample_nearest2(x: jax.Array) -> jax.Array:
  """Nearest-neighbour 2x upsampling of [B, H, W, C] to [B, 2H, 2W, C]."""
  return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)


@functools.lru_cache(maxsize=None)
def _align_corners_taps(n_in: int, n_out: int):
  """Source indices and weights of 1-D linear resize with align_corners=True."""
  if n_out == 1 or n_in == 1:
    pos = np.zeros(n_out, np.float64)
  else:
    pos = np.arange(n_out, dtype=np.float64) * (n_in - 1) / (n_out - 1)
  lo = np.clip(np.floor(pos).astype(np.int32), 0, n_in - 1)
  hi = np.minimum(lo + 1, n_in - 1)
  frac = (pos - lo).astype(np.float32)
  return lo, hi, frac


def _resize_axis_align_corners(x: jax.Array, axis: int, n_out: int):
  n = x.shape[axis]
  if n_out != 2 * n or n == 1:
    lo, hi, frac = _align_corners_taps(n, n_out)
    shape = [1] * x.ndim
    shape[axis] = n_out
    frac = jnp.asarray(frac, x.dtype).reshape(shape)
    return (jnp.take(x, jnp.asarray(lo), axis=axis) * (1 - frac)
            + jnp.take(x, jnp.asarray(hi), axis=axis) * frac)
  # For 2x, output 2k samples at k - k/(2n-1) and output 2k+1 at
  # k + (n-1-k)/(2n-1): neighbour shifts and an interleave, no gather (whose
  # gradient is a scatter-add; this made the paper restorer's forward and
  # backward 1.5x faster on 2 CPU cores).
  k = np.arange(n, dtype=np.float64)
  shape = [1] * x.ndim
  shape[axis] = n
  w = lambda v: jnp.asarray(v.astype(np.float32).reshape(shape), x.dtype)
  a, b = k / (2 * n - 1), (n - 1 - k) / (2 * n - 1)
  first, last = (jax.lax.slice_in_dim(x, i, i + 1, axis=axis) for i in (0, n - 1))
  prev = jnp.concatenate([first, jax.lax.slice_in_dim(x, 0, n - 1, axis=axis)],
                         axis=axis)
  nxt = jnp.concatenate([jax.lax.slice_in_dim(x, 1, n, axis=axis), last],
                        axis=axis)
  even = prev * w(a) + x * w(1.0 - a)
  odd = x * w(1.0 - b) + nxt * w(b)
  out = jnp.stack([even, odd], axis=axis + 1)
  return out.reshape(*x.shape[:axis], 2 * n, *x.shape[axis + 1:])


def _resize_axis_in_window(x, axis, offset_out, global_in):
  """2x align_corners resize of a window of a larger image along `axis`.

  With align_corners=True the sampling grid depends on the whole image's size,
  so a crop restored alone is sampled differently from the same pixels
  restored in the whole image. Here the window [B, ..] starts at output index
  `offset_out` [B] (int) of an image whose input length is `global_in` [B]
  (int), and taps are taken where the whole-image resize takes them; taps
  outside the window are clamped to its edge. Integer arithmetic keeps the
  positions exact.
  """
  n_in = x.shape[axis]
  i_out = offset_out[:, None] + jnp.arange(2 * n_in, dtype=jnp.int32)[None]
  num = i_out * (global_in[:, None] - 1)
  den = jnp.maximum(2 * global_in[:, None] - 1, 1)
  lo = num // den - offset_out[:, None] // 2
  frac = ((num % den) / den).astype(x.dtype)
  hi = jnp.clip(lo + 1, 0, n_in - 1)
  lo = jnp.clip(lo, 0, n_in - 1)
  shape = [x.shape[0]] + [1] * (x.ndim - 1)
  shape[axis] = 2 * n_in
  take = lambda idx: jnp.take_along_axis(x, idx.reshape(shape), axis=axis)
  frac = frac.reshape(shape)
  return take(lo) * (1 - frac) + take(hi) * frac


def upsample_bilinear2_align_corners(x: jax.Array, origin=None,
                                     global_size=None) -> jax.Array:
  """Bilinear 2x upsampling with align_corners=True, as torch's nn.Upsample.

  `jax.image.resize` samples at half-pixel centres (align_corners=False), which
  is a different function; this applies the two taps per axis explicitly.

  Args:
    x: [B, H, W, C].
    origin: optional [B, 2] int, where this window's output starts in the
      whole upsampled image (tiled inference).
    global_size: optional [B, 2] int, the whole image's input size (H, W).
  """
  _, h, w, _ = x.shape
  if origin is None:
    x = _resize_axis_align_corners(x, 1, 2 * h)
    return _resize_axis_align_corners(x, 2, 2 * w)
  x = _resize_axis_in_window(x, 1, origin[:, 0], global_size[:, 0])
  return _resize_axis_in_window(x, 2, origin[:, 1], global_size[:, 1])


def gamma_embedding(gammas: jax.Array, dim: int, max_period: float = 10000.0):
  """Sinusoidal embedding of continuous noise levels.

  Args:
    gammas: [B] noise levels (the critic is fed ᾱ-like values in [0, 1]).
    dim: embedding width.
    max_period: controls the lowest frequency.

  Returns:
    [B, dim] float32, cosines first then sines (zero-padded when dim is odd),
    the reference's order.
  """
  half = dim // 2
  freqs = jnp.exp(-math.log(max_period)
                  * jnp.arange(half, dtype=jnp.float32) / half)
  args = gammas.astype(jnp.float32)[:, None] * freqs[None]
  emb = jnp.concatenate([jnp.cos(args), jnp.sin(args)], axis=-1)
  if dim % 2:
    emb = jnp.concatenate([emb, jnp.zeros_like(emb[:, :1])], axis=-1)
  return emb
