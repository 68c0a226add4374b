"""One-pass restoration with the restorer alone: x + G(x).

Small images are replicate-padded (right/bottom) to a multiple of
2**(depth-1), restored whole and cropped back, as the reference infers. Large
images are cut on the host into fixed-size, overlapping tiles, restored in
fixed-size batches by one compiled function, and blended with linear ramps
over the overlaps, so memory stays bounded whatever the image size.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dada_jax import models


@functools.lru_cache(maxsize=8)
def _compiled_restore(restorer):
  # Only the paper's U-Net takes the tile's place in the whole image (its
  # align-corners upsampling depends on it); other restorers see a tile
  # alone.
  place = isinstance(restorer, models.RestorationNet)

  @jax.jit
  def restore(params, x, origin=None, global_size=None):
    if place:
      return x + restorer.apply(models.as_variables(params), x, origin,
                                global_size)
    return x + restorer.apply(models.as_variables(params), x)
  return restore


def _pad_to(x: np.ndarray, h: int, w: int) -> np.ndarray:
  """Edge-replicates [H, W, C] on the bottom/right up to [h, w, C]."""
  return np.pad(x, ((0, h - x.shape[0]), (0, w - x.shape[1]), (0, 0)),
                mode="edge")


def _round_up(n: int, m: int) -> int:
  return -(-n // m) * m


def _tile_starts(length: int, tile: int, overlap: int) -> list[int]:
  if length <= tile:
    return [0]
  stride = tile - overlap
  starts = list(range(0, length - tile, stride))
  return starts + [length - tile]


def _ramp(length: int, tile: int, start: int, overlap: int) -> np.ndarray:
  """1-D blend weights of one tile along one axis.

  On a side that borders another tile, the outer quarter of the overlap is
  dropped (zero weight: the zero-padded border distorts it most) and the
  weight rises linearly over the middle half of the overlap, so two
  neighbours' weights sum to one everywhere.
  """
  w = np.ones(tile, np.float32)
  if overlap <= 0:
    return w
  margin = overlap // 4
  width = overlap - 2 * margin
  ramp = np.zeros(overlap, np.float32)
  ramp[margin:margin + width] = (np.arange(width, dtype=np.float32) + 0.5) / width
  ramp[margin + width:] = 1.0
  if start > 0:
    w[:overlap] = ramp
  if start + tile < length:
    w[-overlap:] = np.minimum(w[-overlap:], ramp[::-1])
  return w


def tiling_problem(multiple: int, tile: int, overlap: int) -> str | None:
  """Why (tile, overlap) cannot tile an image, or None if they can.

  A tile side is 0 (never tile) or a positive multiple of `multiple` (the
  restorer's pooling grid) larger than twice the overlap; the overlap is a
  multiple of `multiple` too.
  """
  if tile == 0:
    return None
  if tile < 0 or tile % multiple:
    return (f"tile side {tile} must be 0 (never tile) or a positive multiple "
            f"of {multiple}")
  if overlap < 0 or overlap % multiple:
    return (f"tile overlap {overlap} must be a non-negative multiple of "
            f"{multiple}")
  if tile <= 2 * overlap:
    return (f"tile side {tile} must be larger than twice the tile overlap "
            f"{overlap}")
  return None


def dihedral(x, t: int):
  """Transform t in [0, 8) of an [H, W, C] array (numpy or jax): a left-right
  flip when t >= 4, then t % 4 counter-clockwise quarter turns (np.rot90)."""
  x = x[:, ::-1] if t >= 4 else x
  for _ in range(t % 4):
    x = x.swapaxes(0, 1)[::-1]
  return x


def dihedral_inverse(x, t: int):
  """Undoes `dihedral(·, t)`."""
  for _ in range(-t % 4):
    x = x.swapaxes(0, 1)[::-1]
  return x[:, ::-1] if t >= 4 else x


# The 8 transforms by output orientation: [H, W] and [W, H].
_SAME_SIDES, _SWAPPED_SIDES = (0, 2, 4, 6), (1, 3, 5, 7)


@functools.lru_cache(maxsize=8)
def _compiled_ensemble(restorer, multiple: int):
  """jit(params, x [H, W, 3]) -> mean over the 8 transforms t of
  dihedral_inverse(x_t + G(x_t)), each x_t edge-padded as a single pass
  would be: one program, two restorer calls of batch 4."""

  @jax.jit
  def ensemble(params, x):
    total = jnp.zeros_like(x)
    for group in (_SAME_SIDES, _SWAPPED_SIDES):
      views = [dihedral(x, t) for t in group]
      h, w, _ = views[0].shape
      pad = ((0, _round_up(h, multiple) - h), (0, _round_up(w, multiple) - w),
             (0, 0))
      batch = jnp.stack([jnp.pad(v, pad, mode="edge") for v in views])
      out = batch + restorer.apply(models.as_variables(params), batch)
      for y, t in zip(out, group):
        total += dihedral_inverse(y[:h, :w], t)
    return total / 8

  return ensemble


def restore_array(config: mlc.ConfigDict, params, image: np.ndarray, *,
                  tile: int | None | bool = None, overlap: int | None = None,
                  tile_batch: int | None = None,
                  self_ensemble: bool = False) -> np.ndarray:
  """Restores one image.

  Args:
    config: model config (restorer, predict.* defaults).
    params: restorer weights (params, and BatchNorm statistics if any).
    image: [H, W, 3] float32 in the task's value range.
    tile: tile side; None picks tiling when H*W > predict.max_untiled_pixels
      (using predict.tile), False/0 never tiles.
    overlap: tile overlap in pixels (default predict.tile_overlap).
    tile_batch: tiles per compiled call (default predict.tile_batch).
    self_ensemble: average the restorations of the 8 flips and rotations of
      the image (each mapped back; `dihedral`). Untiled, one compiled
      program restores all 8; tiled, the 8 reuse the one tile program.

  Returns:
    [H, W, 3] float32, unclipped (the reference's x + G(x)).
  """
  image = np.asarray(image, np.float32)
  if image.ndim != 3 or image.shape[-1] != 3:
    raise ValueError(f"expected an [H, W, 3] image, got shape {image.shape}")
  h, w, _ = image.shape
  multiple = models.pad_multiple(config)
  restore = _compiled_restore(models.make_restorer(config))
  if tile is None:
    tile = (config.predict.tile
            if h * w > config.predict.max_untiled_pixels else 0)
  if not tile and self_ensemble:
    ensemble = _compiled_ensemble(models.make_restorer(config), multiple)
    return np.asarray(ensemble(params, jnp.asarray(image)))
  if not tile:
    padded = _pad_to(image, _round_up(h, multiple), _round_up(w, multiple))
    out = restore(params, jnp.asarray(padded[None]))
    return np.asarray(out[0, :h, :w])
  tiled = functools.partial(
      _restore_tiled, restore, params, tile=tile, multiple=multiple,
      overlap=config.predict.tile_overlap if overlap is None else overlap,
      batch=tile_batch or config.predict.tile_batch)
  if not self_ensemble:
    return tiled(image)
  total = np.zeros_like(image)
  for t in range(8):
    total += dihedral_inverse(tiled(np.ascontiguousarray(dihedral(image, t))),
                              t)
  return total / 8


def _restore_tiled(restore, params, image, *, tile, multiple, overlap, batch):
  problem = tiling_problem(multiple, tile, overlap)
  if problem:
    raise ValueError(problem)
  h, w, _ = image.shape
  # Pad as whole-image restoration would (so tile origins keep the pooling
  # grid), and an axis shorter than the tile up to it, so every tile has the
  # same shape and one compiled function serves them all.
  src = _pad_to(image, max(_round_up(h, multiple), tile),
                max(_round_up(w, multiple), tile))
  ph, pw, _ = src.shape
  boxes = [(y, x) for y in _tile_starts(ph, tile, overlap)
           for x in _tile_starts(pw, tile, overlap)]
  acc = np.zeros((ph, pw, 3), np.float32)
  weight = np.zeros((ph, pw, 1), np.float32)
  for i in range(0, len(boxes), batch):
    group = boxes[i:i + batch]
    padded_group = group + group[-1:] * (batch - len(group))
    tiles = np.stack([src[y:y + tile, x:x + tile] for y, x in padded_group])
    origin = np.asarray(padded_group, np.int32)
    size = np.tile(np.asarray([[ph, pw]], np.int32), (batch, 1))
    out = np.asarray(restore(params, jnp.asarray(tiles), jnp.asarray(origin),
                             jnp.asarray(size)))
    for (y, x), t in zip(group, out):
      wgt = np.outer(_ramp(ph, tile, y, overlap), _ramp(pw, tile, x, overlap))
      acc[y:y + tile, x:x + tile] += t * wgt[..., None]
      weight[y:y + tile, x:x + tile] += wgt[..., None]
  return (acc / weight)[:h, :w]
