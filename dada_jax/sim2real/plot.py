"""Line charts as PNG files, drawn with matplotlib's Agg canvas.

`make_figure` builds a `matplotlib.figure.Figure` of series of (x, y) points
over optional shaded bands; `line_plot` writes it as a PNG. Neither touches
pyplot, so no global figure state is created or left behind.
"""

from __future__ import annotations

import math
import os

from matplotlib import figure as figure_lib
from matplotlib.backends import backend_agg

from dada_jax import outputs

# Okabe & Ito's colour-blind-safe palette, the most legible on white first.
PALETTE = ((0, 114, 178), (230, 159, 0), (0, 158, 115), (213, 94, 0),
           (204, 121, 167), (86, 180, 233), (0, 0, 0), (240, 228, 66))
BAND_ALPHA = 0.25
DPI = 100


def _finite(points):
  return [p for p in points if all(map(math.isfinite, p))]


def make_figure(series: dict[str, list[tuple[float, float]]], *,
                title: str = "", xlabel: str = "", ylabel: str = "",
                size=(800, 500),
                bands: dict[str, list[tuple[float, float, float]]] | None = None
                ) -> figure_lib.Figure:
  """`series` as a line chart on one set of axes, with an Agg canvas.

  Args:
    series: name -> [(x, y), ...], each a line with circle markers in the next
      `PALETTE` colour. Points with a NaN (or inf) are skipped, so the line
      joins their neighbours.
    title: text above the plot.
    xlabel: text below the x axis.
    ylabel: text left of the y axis, rotated.
    size: (width, height) of the image in pixels.
    bands: name of a series -> [(x, lo, hi), ...], shaded in that series'
      colour, semi-transparent, under the lines (e.g. mean ± std over seeds).

  Returns:
    The figure; its axes are `fig.axes[0]`, its legend lists `series` in order.

  Raises:
    ValueError: `series` is empty, or `bands` names a series not in it.
  """
  if not series:
    raise ValueError("line_plot: `series` is empty; give at least one series")
  if unknown := sorted(set(bands or {}) - set(series)):
    raise ValueError(f"line_plot: bands for unknown series {unknown}")
  fig = figure_lib.Figure(figsize=(size[0] / DPI, size[1] / DPI), dpi=DPI,
                          layout="constrained")
  backend_agg.FigureCanvasAgg(fig)
  ax = fig.add_subplot()
  colour = {name: tuple(c / 255 for c in PALETTE[i % len(PALETTE)])
            for i, name in enumerate(series)}
  for name, band in (bands or {}).items():
    if band := sorted(_finite(band)):
      x, lo, hi = zip(*band)
      ax.fill_between(x, lo, hi, color=colour[name], alpha=BAND_ALPHA,
                      linewidth=0, zorder=1)
  for name, points in series.items():
    x, y = zip(*points) if (points := _finite(points)) else ((), ())
    ax.plot(x, y, "o-", color=colour[name], label=name, markersize=5,
            linewidth=1.5, zorder=2)
  ax.grid(True, color="0.9", linewidth=0.8)
  ax.set_axisbelow(True)
  ax.set(title=title, xlabel=xlabel, ylabel=ylabel)
  ax.legend(loc="best", framealpha=1.0)
  return fig


def line_plot(path: str | os.PathLike,
              series: dict[str, list[tuple[float, float]]], *,
              title: str = "", xlabel: str = "", ylabel: str = "",
              size=(800, 500),
              bands: dict[str, list[tuple[float, float, float]]] | None = None
              ) -> None:
  """Writes `series` as a PNG line chart at `path`, atomically.

  Args:
    path: the PNG file; replaced only once the whole image is written.
    series: name -> [(x, y), ...]; see `make_figure` for this and the rest.
    title: text above the plot.
    xlabel: text below the x axis.
    ylabel: text left of the y axis, rotated.
    size: (width, height) of the image in pixels.
    bands: name of a series -> [(x, lo, hi), ...], shaded under its line.

  Raises:
    ValueError: `series` is empty, or `bands` names a series not in it;
      nothing is written then.
  """
  fig = make_figure(series, title=title, xlabel=xlabel, ylabel=ylabel,
                    size=size, bands=bands)
  with outputs.atomic_write(path) as f:
    fig.savefig(f, format="png", dpi=DPI)
