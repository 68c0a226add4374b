"""The restoration network G: a residual U-Net (the reference `RestorationNet`).

Restored image = x + G(x). At the paper's default (depth 4, width 64) the
network has 8,559,171 parameters.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from dada_jax.models import layers


class ConvBlock(nn.Module):
  """Two 3x3 convs, each followed by LeakyReLU."""
  features: int
  slope: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    for i in (0, 2):
      x = layers.conv3x3(self.features, f"block_{i}", self.dtype)(x)
      x = nn.leaky_relu(x, self.slope)
    return x


def _center_crop(x, h, w):
  dy = (x.shape[1] - h) // 2
  dx = (x.shape[2] - w) // 2
  return x[:, dy:dy + h, dx:dx + w]


class UpBlock(nn.Module):
  """Bilinear (align_corners) 2x up, 3x3 conv, concat skip, ConvBlock."""
  features: int
  slope: float
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x, bridge, origin=None, global_size=None):
    up = layers.upsample_bilinear2_align_corners(x, origin, global_size)
    up = layers.conv3x3(self.features, "conv_up", self.dtype)(up)
    bridge = _center_crop(bridge, up.shape[1], up.shape[2])
    out = jnp.concatenate([up, bridge.astype(up.dtype)], axis=-1)
    return ConvBlock(self.features, self.slope, self.dtype,
                     name="conv_block")(out)


class RestorationNet(nn.Module):
  """Residual U-Net restorer.

  Attributes:
    out_channels: channels of the predicted residual (3).
    depth: number of resolution levels; inputs should be multiples of
      2**(depth - 1) (see `dada_jax.predict` for padding).
    wf: width of the first level; level i has wf * 2**i channels.
    slope: LeakyReLU negative slope.
    last_init: 'kaiming' (the paper's init, initial residual std ~8 on
      unit-range images) or 'zeros' (G starts as the identity map).
    dtype: compute dtype; parameters stay float32.

  Call: x [B, H, W, C] in the task's value range -> residual [B, H, W, out]
  in float32. The restored image is x + residual.

  For tiled inference pass `origin` [B, 2] (the tile's top-left in the whole
  padded image, a multiple of 2**(depth-1)) and `global_size` [B, 2] (the
  whole padded image's H, W): the align_corners upsampling then samples where
  it would in the whole image, so tiles agree with whole-image restoration
  away from their borders.
  """
  out_channels: int = 3
  depth: int = 4
  wf: int = 64
  slope: float = 0.2
  last_init: str = "kaiming"
  dtype: jnp.dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, origin: jax.Array | None = None,
               global_size: jax.Array | None = None) -> jax.Array:
    if self.last_init not in ("kaiming", "zeros"):
      raise ValueError(f"restorer.last_init must be 'kaiming' or 'zeros', "
                       f"got {self.last_init!r}")
    x = x.astype(self.dtype)
    skips = []
    for i in range(self.depth):
      x = ConvBlock(self.wf * 2**i, self.slope, self.dtype,
                    name=f"down_path_{i}")(x)
      if i != self.depth - 1:
        skips.append(x)
        x = layers.avg_pool2(x)
    for j, i in enumerate(reversed(range(self.depth - 1))):
      window = {}
      if origin is not None:
        window = dict(origin=origin // 2**i,
                      global_size=global_size // 2**(i + 1))
      x = UpBlock(self.wf * 2**i, self.slope, self.dtype,
                  name=f"up_path_{j}")(x, skips[i], **window)
    x = layers.conv3x3(self.out_channels, "last", self.dtype,
                       layers.output_init(self.last_init == "zeros"))(x)
    return x.astype(jnp.float32)
