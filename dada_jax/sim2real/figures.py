"""Side-by-side crops of the restorers' outputs, with their residuals.

`pick_crops` chooses the windows where two methods differ most (to be run on
validation blocks only: looking at outputs is choosing); `fixed_crops` fixes
windows in advance without looking at anything (for test blocks).
`comparison_image` tiles the crops, zoomed, over strips of their residuals
against the clean image as a uint8 array; `write_comparison` adds column
titles, row labels and a caption and writes it as a PNG with matplotlib's Agg
canvas, never touching pyplot.
"""

from __future__ import annotations

import os

import numpy as np
from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from dada_jax import outputs as outputs_lib

DPI = 100
GAP = 2          # white pixels between tiles
WHITE = 255
GREY = 128       # a residual of zero
CLEAN = "clean"  # the column whose residual is flat grey by definition
FONT_SIZE = 9
CAPTION_FONT_SIZE = 8
# Margins of the PNG around the tiles, in pixels.
_TOP = 22          # column titles
_TITLE = 24        # the title, when there is one
_BOTTOM = 26       # the caption
_SIDE = 10         # left and right, beyond the widest text


def _window_means(diff: np.ndarray, crop: int, stride: int) -> np.ndarray:
  """Mean of `diff` [N, S, S] over crop x crop windows on a `stride` grid.

  Returns:
    [N, T, T] float64: entry [n, i, j] is the window at top i * stride,
    left j * stride of block n.
  """
  n, s, _ = diff.shape
  integral = np.zeros((n, s + 1, s + 1), np.float64)
  integral[:, 1:, 1:] = diff.cumsum(1).cumsum(2)
  starts = np.arange(0, s - crop + 1, stride)
  ends = starts + crop
  sums = (integral[:, ends[:, None], ends[None, :]]
          - integral[:, starts[:, None], ends[None, :]]
          - integral[:, ends[:, None], starts[None, :]]
          + integral[:, starts[:, None], starts[None, :]])
  return sums / (crop * crop)


def pick_crops(outputs: dict[str, np.ndarray], a: str, b: str, crop: int,
               k: int) -> list[tuple[int, int, int]]:
  """The k windows where methods `a` and `b` differ most, one per block.

  Use this on validation blocks only: it looks at the outputs to choose.

  Args:
    outputs: method -> uint8 [N, S, S, 3] outputs on the same N blocks.
    a: one method, a key of `outputs`.
    b: the other method.
    crop: side of the square windows in pixels, 1..S.
    k: how many windows to return, >= 0; fewer if there are fewer blocks.

  Returns:
    [(block index, top, left), ...] of min(k, N) crop x crop windows inside
    the blocks, in decreasing order of the mean absolute difference between
    `a`'s and `b`'s outputs over the window (over pixels and channels, as
    floats), at most one per block. Windows lie on a grid with stride
    max(1, crop // 2) from (0, 0). Ties go to the lower block index, then
    the lower top, then the lower left.

  Raises:
    ValueError: a method is missing, the shapes differ or are not
      [N, S, S, 3], or `crop` or `k` is out of range.
  """
  if missing := [m for m in (a, b) if m not in outputs]:
    raise ValueError(f"pick_crops: no outputs for {missing}; have "
                     f"{sorted(outputs)}")
  x, y = np.asarray(outputs[a]), np.asarray(outputs[b])
  if x.shape != y.shape or x.ndim != 4 or x.shape[1] != x.shape[2] or (
      x.shape[3] != 3):
    raise ValueError(f"pick_crops: outputs of {a!r} {x.shape} and {b!r} "
                     f"{y.shape} must both be [N, S, S, 3]")
  size = x.shape[1]
  if not 1 <= crop <= size:
    raise ValueError(f"pick_crops: crop {crop} must be in 1..{size}")
  if k < 0:
    raise ValueError(f"pick_crops: k {k} must be >= 0")
  if k == 0 or x.shape[0] == 0:
    return []
  diff = np.abs(x.astype(np.float64) - y.astype(np.float64)).mean(-1)
  stride = max(1, crop // 2)
  means = _window_means(diff, crop, stride)
  flat = means.reshape(len(means), -1)
  best = flat.argmax(1)  # the first maximum: lower top, then lower left
  score = flat[np.arange(len(flat)), best]
  order = np.argsort(-score, kind="stable")[:k]
  per_row = means.shape[2]
  return [(int(n), int(best[n] // per_row * stride),
           int(best[n] % per_row * stride)) for n in order]


def fixed_crops(num_blocks: int, size: int, crop: int,
                k: int) -> list[tuple[int, int, int]]:
  """k windows fixed in advance, never chosen by looking at outputs.

  Args:
    num_blocks: how many blocks there are, >= 1.
    size: side S of the square blocks in pixels.
    crop: side of the square windows, 1..size.
    k: how many windows, >= 0.

  Returns:
    [(block index, top, left), ...]: the centre crop (top = left =
    (size - crop) // 2) of the blocks np.linspace(0, num_blocks - 1, k)
    rounded, without repeats, in increasing order; so min(k, num_blocks)
    windows at most.

  Raises:
    ValueError: an argument is out of range.
  """
  if num_blocks < 1 or k < 0 or not 1 <= crop <= size:
    raise ValueError(f"fixed_crops: need num_blocks >= 1, k >= 0 and crop "
                     f"in 1..size; got {num_blocks}, {k}, {crop}, {size}")
  blocks = np.unique(np.rint(np.linspace(0, num_blocks - 1, k)).astype(int))
  offset = (size - crop) // 2
  return [(int(n), offset, offset) for n in blocks]


def _tiles(row: dict, columns: list[str]) -> list[np.ndarray]:
  """The row's crops in column order, checked: uint8 [c, c, 3] like "gt"."""
  gt = np.asarray(row["gt"])
  images = row["images"]
  tiles = []
  for column in columns:
    if column in images:
      tiles.append(np.asarray(images[column]))
    elif column == CLEAN:
      tiles.append(gt)
    else:
      raise ValueError(f"comparison_image: row {row.get('label', '')!r} has "
                       f"no image for column {column!r}")
  for tile in (gt, *tiles):
    if tile.dtype != np.uint8 or tile.ndim != 3 or tile.shape[2] != 3 or (
        tile.shape != gt.shape) or tile.shape[0] != tile.shape[1]:
      raise ValueError(f"comparison_image: row {row.get('label', '')!r}: "
                       f"crops must be uint8 [c, c, 3] like its gt "
                       f"{gt.dtype} {gt.shape}; got {tile.dtype} {tile.shape}")
  return tiles


def _residual(tile: np.ndarray, gt: np.ndarray, gain: float) -> np.ndarray:
  res = tile.astype(np.float64) - gt.astype(np.float64)
  return np.clip(np.rint(GREY + gain * res), 0, 255).astype(np.uint8)


def comparison_image(rows: list[dict], columns: list[str], *, zoom: int = 2,
                     residual_gain: float = 4.0) -> np.ndarray:
  """The crops and their residuals tiled as one image.

  Each row of `rows` gives two strips, one under the other: its crops in
  `columns` order, each zoomed `zoom` times by nearest neighbour; then their
  residuals against the clean crop, GREY + residual_gain * (image - gt) per
  pixel and channel, rounded and clipped to 0..255. The "clean" column's
  residual is flat GREY. Tiles are separated by GAP white pixels across and
  down, with no border: for R rows, C columns and crops of side c the image
  is [R * 2 * c * zoom + (2R - 1) * GAP, C * c * zoom + (C - 1) * GAP, 3].

  Args:
    rows: [{"label": str, "images": {column: uint8 [c, c, 3]},
      "gt": uint8 [c, c, 3]}, ...], one crop side c for all; a "clean" column
      missing from "images" shows "gt".
    columns: column names in order, e.g. ["input", "vanilla", "dda",
      "control", "oracle", "clean"].
    zoom: integer magnification, >= 1.
    residual_gain: how much residuals are amplified.

  Returns:
    uint8 [H, W, 3], 0..255.

  Raises:
    ValueError: no rows or columns, zoom < 1, a crop missing or of the wrong
      dtype or shape.
  """
  if not rows or not columns:
    raise ValueError("comparison_image: need at least one row and column")
  if zoom < 1 or int(zoom) != zoom:
    raise ValueError(f"comparison_image: zoom {zoom} must be an integer >= 1")
  zoom = int(zoom)
  tiles = [_tiles(row, columns) for row in rows]
  sides = {t[0].shape[0] for t in tiles}
  if len(sides) != 1:
    raise ValueError(f"comparison_image: rows have different crop sizes "
                     f"{sorted(sides)}")
  side = sides.pop() * zoom
  pitch = side + GAP
  image = np.full((len(rows) * 2 * pitch - GAP, len(columns) * pitch - GAP, 3),
                  WHITE, np.uint8)
  for i, (row, row_tiles) in enumerate(zip(rows, tiles)):
    gt = np.asarray(row["gt"])
    for j, (column, tile) in enumerate(zip(columns, row_tiles)):
      if column == CLEAN:
        residual = np.full_like(tile, GREY)
      else:
        residual = _residual(tile, gt, residual_gain)
      for strip, pixels in enumerate((tile, residual)):
        top, left = (2 * i + strip) * pitch, j * pitch
        image[top:top + side, left:left + side] = (
            pixels.repeat(zoom, 0).repeat(zoom, 1))
  return image


def _text_width(fig: figure_lib.Figure, texts: list[str],
                fontsize: float) -> int:
  """Width in pixels of the widest of `texts` drawn on `fig`'s canvas."""
  renderer = fig.canvas.get_renderer()
  widest = 0.0
  for text in texts:
    if text:
      artist = fig.text(0, 0, text, fontsize=fontsize)
      widest = max(widest, artist.get_window_extent(renderer).width)
      artist.remove()
  return int(np.ceil(widest))


def caption(zoom: int, residual_gain: float) -> str:
  """The one-line caption under the figure."""
  return (f"Residual rows: (output - clean) x {residual_gain:g} around grey "
          f"{GREY}; crops shown {zoom}x (nearest neighbour).")


def comparison_figure(rows: list[dict], columns: list[str], *,
                      title: str = "", zoom: int = 2,
                      residual_gain: float = 4.0) -> figure_lib.Figure:
  """`comparison_image` with titles, labels and caption, on an Agg canvas.

  The tiles are drawn one image pixel per figure pixel at DPI. Each column's
  name is over it, turned 45 degrees if any name is wider than a tile; each
  row's "label" is left of its crops and "residual" left of its residuals;
  the caption (see `caption`) is at the bottom and `title`, if any, at the
  top.

  Args:
    rows: see `comparison_image`.
    columns: see `comparison_image`.
    title: text above the figure.
    zoom: integer magnification of the crops.
    residual_gain: how much residuals are amplified.

  Returns:
    The figure; its one axes, `fig.axes[0]`, holds the image and its texts.

  Raises:
    ValueError: as `comparison_image`.
  """
  image = comparison_image(rows, columns, zoom=zoom,
                           residual_gain=residual_gain)
  h, w = image.shape[:2]
  text = caption(zoom, residual_gain)
  labels = [str(row.get("label", "")) for row in rows]
  fig = figure_lib.Figure(dpi=DPI)
  backend_agg.FigureCanvasAgg(fig)
  fig.patch.set_facecolor("white")
  side = (h + GAP) // (2 * len(rows)) - GAP
  pitch = side + GAP
  label_px = _text_width(fig, labels + ["residual"], FONT_SIZE)
  column_px = _text_width(fig, list(columns), FONT_SIZE)
  # Titles wider than their tiles are turned 45 degrees so none overlap.
  slant = column_px > side
  reach = int(np.ceil(column_px / np.sqrt(2))) if slant else 0
  left = _SIDE + 6 + label_px
  top = _TOP + reach + (_TITLE if title else 0)
  width = max(left + w + _SIDE + max(0, reach - side // 2),
              _text_width(fig, [text], CAPTION_FONT_SIZE) + 2 * _SIDE,
              _text_width(fig, [title], FONT_SIZE + 2) + 2 * _SIDE)
  height = top + h + _BOTTOM
  fig.set_size_inches(width / DPI, height / DPI)
  ax = fig.add_axes((left / width, _BOTTOM / height, w / width, h / height))
  ax.imshow(image, interpolation="nearest", aspect="auto",
            extent=(-0.5, w - 0.5, h - 0.5, -0.5))
  ax.set_axis_off()
  for j, column in enumerate(columns):
    ax.text(j * pitch + side / 2, -4, column, fontsize=FONT_SIZE,
            clip_on=False, rotation=45 if slant else 0,
            rotation_mode="anchor", ha="left" if slant else "center",
            va="bottom")
  for i, row in enumerate(rows):
    for strip, label, colour in ((0, labels[i], "black"),
                                 (1, "residual", "0.4")):
      ax.text(-6, (2 * i + strip) * pitch + side / 2, label, ha="right",
              va="center", fontsize=FONT_SIZE, color=colour, clip_on=False)
  if title:
    fig.text(0.5, 1 - 6 / height, title, ha="center", va="top",
             fontsize=FONT_SIZE + 2)
  fig.text(0.5, 6 / height, text, ha="center", va="bottom",
           fontsize=CAPTION_FONT_SIZE, color="0.25")
  return fig


def write_comparison(path: str | os.PathLike, rows: list[dict],
                     columns: list[str], *, title: str = "", zoom: int = 2,
                     residual_gain: float = 4.0) -> None:
  """Writes the comparison figure as a PNG at `path`, atomically.

  Args:
    path: the PNG file; replaced only once the whole image is written.
    rows: see `comparison_image`.
    columns: see `comparison_image`.
    title: text above the figure.
    zoom: integer magnification of the crops.
    residual_gain: how much residuals are amplified.

  Raises:
    ValueError: as `comparison_image`; nothing is written then.
    OSError: `path` cannot be written (e.g. its folder does not exist);
      nothing is left behind.
  """
  fig = comparison_figure(rows, columns, title=title, zoom=zoom,
                          residual_gain=residual_gain)
  with outputs_lib.atomic_write(path) as f:
    fig.savefig(f, format="png", dpi=DPI)
