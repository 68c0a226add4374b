"""The matplotlib line chart: PNG size and content, legend, NaNs and bands."""

import math
import os

import numpy as np
import pytest
from PIL import Image

from dada_jax.sim2real import plot

LABELS = {"title": "PSNR ± std", "xlabel": "step", "ylabel": "dB"}


def _pixels(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB")), image.size, image.format


def _near(pixels, colour, tol=2):
  """How many pixels are within `tol` of `colour` in every channel."""
  return int((np.abs(pixels.astype(int) - colour).max(-1) <= tol).sum())


def _axes_box(fig, pixels):
  """The pixels inside the axes' frame (rows counted from the top)."""
  x0, y0, x1, y1 = fig.axes[0].get_window_extent().extents
  h = pixels.shape[0]
  return pixels[round(h - y1) + 2:round(h - y0) - 2, round(x0) + 2:round(x1) - 2]


def test_png_size_content_and_legend(tmp_path):
  series = {"a": [(0, 1), (1, 3), (2, 2)], "b": [(0, 2), (1, 1), (2, 4)]}
  path = tmp_path / "curves.png"
  plot.line_plot(path, series, size=(640, 360), **LABELS)
  pixels, size, fmt = _pixels(path)
  assert (size, fmt) == ((640, 360), "PNG")
  assert os.listdir(tmp_path) == ["curves.png"]
  # The same figure, to find the axes in the image and read its artists.
  fig = plot.make_figure(series, size=(640, 360), **LABELS)
  ax = fig.axes[0]
  inside = _axes_box(fig, pixels)
  assert _near(pixels, (255, 255, 255), 0) > pixels[..., 0].size / 2
  for colour in plot.PALETTE[:2]:
    assert _near(inside, colour) > 50, colour
  assert _near(pixels, plot.PALETTE[2], 10) == 0
  assert [t.get_text() for t in ax.get_legend().get_texts()] == ["a", "b"]
  assert (ax.get_title(), ax.get_xlabel(), ax.get_ylabel()) == (
      "PSNR ± std", "step", "dB")
  for line, (name, points) in zip(ax.get_lines(), series.items()):
    assert line.get_label() == name and line.get_marker() == "o"
    np.testing.assert_array_equal(line.get_xydata(), points)


@pytest.mark.parametrize("points", [[(3.0, 7.0)], [(0, 5), (1, 5), (2, 5)]])
def test_single_point_and_flat_series(tmp_path, points):
  plot.line_plot(tmp_path / "flat.png", {"flat": points})
  pixels, size, _ = _pixels(tmp_path / "flat.png")
  assert size == (800, 500)
  fig = plot.make_figure({"flat": points})
  assert _near(_axes_box(fig, pixels), plot.PALETTE[0]) > 20
  lo, hi = fig.axes[0].get_ylim()
  assert lo < points[0][1] < hi


def test_nan_points_are_skipped():
  nan = math.nan
  fig = plot.make_figure(
      {"loss": [(0, 1.0), (1, nan), (nan, 2.0), (2, 0.5), (3, 0.25)],
       "gone": [(nan, nan)]},
      bands={"loss": [(0, 0.5, 1.5), (1, nan, 2.0)], "gone": [(0, nan, 1)]})
  loss, gone = fig.axes[0].get_lines()
  np.testing.assert_array_equal(loss.get_xydata(),
                                [(0, 1.0), (2, 0.5), (3, 0.25)])
  assert gone.get_xydata().size == 0 and gone.get_label() == "gone"
  assert len(fig.axes[0].collections) == 1  # The all-NaN band draws nothing.
  assert np.isfinite(fig.axes[0].get_ylim()).all()


def test_empty_series_and_unknown_band_raise(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    plot.line_plot(tmp_path / "empty.png", {})
  with pytest.raises(ValueError, match="unknown series"):
    plot.line_plot(tmp_path / "band.png", {"a": [(0, 1), (1, 2)]},
                   bands={"b": [(0, 0, 1)]})
  assert not list(tmp_path.iterdir())


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
  path = tmp_path / "plot.png"
  path.write_bytes(b"old")

  def fail(unused_fig, f, **unused_kwargs):
    f.write(b"partial")
    raise OSError("disk full")

  monkeypatch.setattr(plot.figure_lib.Figure, "savefig", fail)
  with pytest.raises(OSError, match="disk full"):
    plot.line_plot(path, {"a": [(0, 1), (1, 2)]})
  assert path.read_bytes() == b"old" and os.listdir(tmp_path) == ["plot.png"]


def test_bands_are_blended_under_the_lines(tmp_path):
  series = {"mean": [(0, 1), (1, 2), (2, 1.5)]}
  band = [(2, 1.0, 2.0), (0, 0.5, 1.5), (1, 1.5, 2.5)]
  plot.line_plot(tmp_path / "band.png", series, bands={"mean": band})
  plot.line_plot(tmp_path / "plain.png", series)
  banded, _, _ = _pixels(tmp_path / "band.png")
  plain, _, _ = _pixels(tmp_path / "plain.png")
  a = plot.BAND_ALPHA
  blend = np.array(plot.PALETTE[0]) * a + 255 * (1 - a)
  assert _near(banded, blend) > 50 * max(1, _near(plain, blend))
  assert _near(banded, plot.PALETTE[0]) > 20
  ax = plot.make_figure(series, bands={"mean": band}).axes[0]
  (fill,) = ax.collections
  assert fill.get_zorder() < ax.get_lines()[0].get_zorder()
  # The band's outline, sorted by x: upper edge forwards, lower edge back.
  outline = fill.get_paths()[0].vertices
  assert {(0, 1.5), (1, 2.5), (2, 2.0), (2, 1.0), (0, 0.5)} <= set(
      map(tuple, outline.tolist()))
