"""Line charts as PNG files, drawn with Pillow alone (no matplotlib).

`line_plot` draws series of (x, y) points over optional shaded bands, with
"nice" ticks and a legend where the data leaves room. It draws at twice the
size and halves the image, which smooths lines and text.
"""

from __future__ import annotations

import math
import os

from PIL import Image, ImageDraw, ImageFont

# Okabe & Ito's colour-blind-safe palette, the most legible on white first.
PALETTE = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (213, 94, 0),
           (204, 121, 167), (86, 180, 233), (0, 0, 0), (240, 228, 66))
_INK, _GRID, _FRAME, _BAND_ALPHA = (0, 0, 0), (232, 232, 232), (96, 96, 96), 64


def _font(size: int):
  """Pillow's built-in font at `size`, else its fixed-size bitmap font."""
  try:
    return ImageFont.load_default(size=size)
  except (TypeError, ImportError, OSError):  # Pillow < 10.1, or no FreeType.
    return ImageFont.load_default()


def _span(values, pad: float) -> tuple[float, float]:
  lo, hi = min(values, default=0.0), max(values, default=1.0)
  d = pad * (hi - lo) if hi > lo else abs(lo) * 0.1 or 1.0
  return lo - d, hi + d


def _ticks(lo: float, hi: float):
  """[lo, hi] widened if need be, and 4-6 (tick, label)s 1/2/5 x 10^k apart."""
  e = math.floor(math.log10(hi - lo))
  steps = [m * 10.0**k for k in range(e + 1, e - 3, -1) for m in (5, 2, 1)]
  for first, last in ((math.ceil, math.floor), (math.floor, math.ceil)):
    ends = [(first(round(lo / d, 6)), last(round(hi / d, 6)), d) for d in steps]
    fits = [(abs(b - a - 4), a, b, d) for a, b, d in ends if 3 <= b - a <= 5]
    if fits:
      _, a, b, d = min(fits)
      return ((min(lo, a * d), max(hi, b * d)),
              [(i * d, _label(i * d, d, max(-a, b) * d))
               for i in range(a, b + 1)])
  raise AssertionError(f"no 1/2/5 ticks for [{lo}, {hi}]")


def _label(v: float, step: float, top: float) -> str:
  """`v` to the step's precision; exponent notation if the axis spans `top`."""
  v, e = (v if abs(v) > step * 1e-6 else 0.0), math.floor(math.log10(step))
  if step >= 1e-4 and top < 1e6:
    return f"{v:.{max(0, -e)}f}"
  return f"{v:.{math.floor(math.log10(max(abs(v), step))) - e + 1}g}"


def _size(draw, text, font) -> tuple[int, int]:
  l, t, r, b = draw.textbbox((0, 0), text, font=font)
  return r - l, b - t


def _put(draw, x, y, text, font, ax=0.0, ay=0.0, fill=_INK) -> None:
  """Draws `text` with its ink box's point (ax, ay) (fractions) at (x, y)."""
  l, t, r, b = draw.textbbox((0, 0), text, font=font)
  draw.text((x - l - ax * (r - l), y - t - ay * (b - t)), text, fill, font)


def _trace(draw, xy, fill, s, marks=None) -> None:
  """A 2s-wide line through `xy`, with circles at `marks` (default: `xy`)."""
  draw.line(xy, fill=fill, width=2 * s, joint="curve")
  for u, v in xy if marks is None else marks:
    draw.ellipse([u - 3.5 * s, v - 3.5 * s, u + 3.5 * s, v + 3.5 * s], fill)


def line_plot(path, series: dict[str, list[tuple[float, float]]], *,
              title: str = "", xlabel: str = "", ylabel: str = "",
              size=(800, 500),
              bands: dict[str, list[tuple[float, float, float]]] | None = None
              ) -> None:
  """Draws `series` as a PNG line chart at `path`.

  The legend goes in a corner of the plot that no line or band edge crosses,
  else right of the plot. The built-in font covers ASCII, "±" and "°".

  Args:
    path: the PNG file; written to path + ".tmp" first, then renamed.
    series: name -> [(x, y), ...], each a line with circle markers in the next
      `PALETTE` colour. Points with a NaN (or inf) are skipped.
    title: text above the plot.
    xlabel: text below the x axis.
    ylabel: text left of the y axis, rotated.
    size: (width, height) of the image in pixels.
    bands: name of a series -> [(x, lo, hi), ...], shaded in that series'
      colour, semi-transparent, under the lines (e.g. mean ± std over seeds).

  Raises:
    ValueError: `series` is empty, or `bands` names a series not in it.
  """
  if not series:
    raise ValueError("line_plot: `series` is empty; give at least one series")
  if unknown := sorted(set(bands or {}) - set(series)):
    raise ValueError(f"line_plot: bands for unknown series {unknown}")
  finite = lambda v: [p for p in v if all(map(math.isfinite, p))]
  series = {k: finite(v) for k, v in series.items()}
  bands = {k: b for k, v in (bands or {}).items() if (b := sorted(finite(v)))}
  colour = {name: PALETTE[i % len(PALETTE)] for i, name in enumerate(series)}
  edges = [[(p[0], p[i]) for p in b] for b in bands.values() for i in (1, 2)]
  points = [p for v in [*series.values(), *edges] for p in v]
  (x_lo, x_hi), x_labels = _ticks(*_span([p[0] for p in points], 0.03))
  (y_lo, y_hi), y_labels = _ticks(*_span([p[1] for p in points], 0.05))
  base = max(10, round(min(size) / 38))
  font = _font(2 * base)
  s = 2 if isinstance(font, ImageFont.FreeTypeFont) else 1
  w, h, base = size[0] * s, size[1] * s, base * s
  big = _font(round(base * 1.25))
  image = Image.new("RGB", (w, h), "white")
  draw = ImageDraw.Draw(image)
  gap, tick, th = base // 2, base // 3, _size(draw, "0.9Ag", font)[1]
  left = max(gap + (th + gap if ylabel else 0) + tick + gap +
             max(_size(draw, t, font)[0] for _, t in y_labels),
             gap + _size(draw, x_labels[0][1], font)[0] // 2)
  top = gap + th // 2 + (_size(draw, title, big)[1] + gap if title else 0)
  bottom = tick + 2 * gap + th + (th + gap if xlabel else 0)
  right = gap + max(gap, _size(draw, x_labels[-1][1], font)[0] // 2)
  row, swatch = round(th * 1.6), 2 * base
  box_w = 2 * gap + swatch + gap + max(_size(draw, n, font)[0] for n in series)
  box_h = row * len(series) + gap
  x0, y0, x1, y1 = left, top, w - right, h - bottom
  px = lambda x: x0 + (x - x_lo) / (x_hi - x_lo) * (x1 - x0)
  py = lambda y: y1 - (y - y_lo) / (y_hi - y_lo) * (y1 - y0)
  lines = [v for v in series.values() if v] + edges
  samples = [(px(a[0] + t * (b[0] - a[0])), py(a[1] + t * (b[1] - a[1])))
             for r in lines for a, b in zip(r, r[1:] + r[-1:])
             for t in (i / 16 for i in range(16))]
  corners = [(cx, cy) for cy in (y0 + gap, y1 - gap - box_h)
             for cx in (x1 - gap - box_w, x0 + gap)]
  hits = [sum(cx - gap <= u <= cx + box_w + gap and
              cy - gap <= v <= cy + box_h + gap for u, v in samples)
          for cx, cy in corners]
  if min(hits) or box_h > y1 - y0 - 2 * gap:
    x1 = w - right - box_w - gap
    bx, by = x1 + 2 * gap, y0
  else:
    bx, by = corners[hits.index(min(hits))]
  for v, text in x_labels:
    draw.line([(px(v), y0), (px(v), y1)], fill=_GRID, width=s)
    draw.line([(px(v), y1), (px(v), y1 + tick)], fill=_FRAME, width=s)
    _put(draw, px(v), y1 + tick + gap, text, font, 0.5)
  for v, text in y_labels:
    draw.line([(x0, py(v)), (x1, py(v))], fill=_GRID, width=s)
    draw.line([(x0 - tick, py(v)), (x0, py(v))], fill=_FRAME, width=s)
    _put(draw, x0 - tick - gap, py(v), text, font, 1.0, 0.5)
  for name, band in bands.items():
    ImageDraw.Draw(image, "RGBA").polygon(
        [(px(x), py(hi)) for x, _, hi in band] +
        [(px(x), py(lo)) for x, lo, _ in band[::-1]],
        fill=colour[name] + (_BAND_ALPHA,))
  draw.rectangle([x0, y0, x1, y1], outline=_FRAME, width=s)
  if title:
    _put(draw, (x0 + x1) / 2, gap, title, big, 0.5)
  if xlabel:
    _put(draw, (x0 + x1) / 2, h - gap, xlabel, font, 0.5, 1.0)
  if ylabel:
    text = Image.new("L", _size(draw, ylabel, font))
    _put(ImageDraw.Draw(text), 0, 0, ylabel, font, fill=255)
    image.paste(_INK, (gap, round((y0 + y1 - text.width) / 2)),
                text.rotate(90, expand=True))
  for name, pts in series.items():
    _trace(draw, [(px(x), py(y)) for x, y in pts], colour[name], s)
  draw.rectangle([bx, by, bx + box_w, by + box_h], "white", _FRAME, s)
  for i, name in enumerate(series):
    cy = by + gap / 2 + row * (i + 0.5)
    _trace(draw, [(bx + gap, cy), (bx + gap + swatch, cy)], colour[name], s,
           marks=[(bx + gap + swatch / 2, cy)])
    _put(draw, bx + 2 * gap + swatch, cy, name, font, 0.0, 0.5)
  tmp = os.fspath(path) + ".tmp"
  image.reduce(s).save(tmp, "PNG")
  os.replace(tmp, path)
