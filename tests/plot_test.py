"""The Pillow line chart: size, colours, degenerate input and bands."""

import math

import numpy as np
import pytest
from PIL import Image

from dada_jax import plot


def _pixels(path):
  with Image.open(path) as image:
    return np.asarray(image.convert("RGB")), image.size, image.format


def _count(pixels, colour):
  return int(np.all(pixels == colour, axis=-1).sum())


def test_size_and_series_colours(tmp_path):
  path = tmp_path / "curves.png"
  plot.line_plot(path, {"a": [(0, 1), (1, 3), (2, 2)],
                        "b": [(0, 2), (1, 1), (2, 4)]},
                 title="PSNR", xlabel="step", ylabel="dB", size=(640, 360))
  pixels, size, fmt = _pixels(path)
  assert (size, fmt) == ((640, 360), "PNG")
  assert not (tmp_path / "curves.png.tmp").exists()
  for colour in plot.PALETTE[:2]:
    assert _count(pixels, colour) > 20, colour
  assert _count(pixels, plot.PALETTE[2]) == 0
  assert _count(pixels, (255, 255, 255)) > pixels.shape[0] * pixels.shape[1] / 2


@pytest.mark.parametrize("points", [[(3.0, 7.0)], [(0, 5), (1, 5), (2, 5)]])
def test_single_point_and_flat_series(tmp_path, points):
  plot.line_plot(tmp_path / "flat.png", {"flat": points})
  pixels, size, _ = _pixels(tmp_path / "flat.png")
  assert size == (800, 500)
  assert _count(pixels, plot.PALETTE[0]) > 20


def test_nan_points_are_skipped(tmp_path):
  nan = math.nan
  plot.line_plot(tmp_path / "nan.png",
                 {"loss": [(0, 1.0), (1, nan), (nan, 2.0), (2, 0.5), (3, 0.25)]})
  with_nan, _, _ = _pixels(tmp_path / "nan.png")
  plot.line_plot(tmp_path / "clean.png",
                 {"loss": [(0, 1.0), (2, 0.5), (3, 0.25)]})
  clean, _, _ = _pixels(tmp_path / "clean.png")
  np.testing.assert_array_equal(with_nan, clean)
  plot.line_plot(tmp_path / "all_nan.png", {"loss": [(nan, nan)]})
  assert _pixels(tmp_path / "all_nan.png")[1] == (800, 500)


def test_empty_series_and_unknown_band_raise(tmp_path):
  with pytest.raises(ValueError, match="empty"):
    plot.line_plot(tmp_path / "empty.png", {})
  with pytest.raises(ValueError, match="unknown series"):
    plot.line_plot(tmp_path / "band.png", {"a": [(0, 1), (1, 2)]},
                   bands={"b": [(0, 0, 1)]})
  assert not list(tmp_path.iterdir())


def test_bands_are_blended_under_the_lines(tmp_path):
  series = {"mean": [(0, 1), (1, 2), (2, 1.5)]}
  band = [(0, 0.5, 1.5), (1, 1.5, 2.5), (2, 1.0, 2.0)]
  plot.line_plot(tmp_path / "band.png", series, bands={"mean": band})
  plot.line_plot(tmp_path / "plain.png", series)
  banded, _, _ = _pixels(tmp_path / "band.png")
  plain, _, _ = _pixels(tmp_path / "plain.png")
  alpha = plot._BAND_ALPHA / 255
  blend = np.round(np.array(plot.PALETTE[0]) * alpha + 255 * (1 - alpha))
  assert _count(banded, blend) > 50 * max(1, _count(plain, blend))
  assert _count(banded, plot.PALETTE[0]) > 20


def test_ticks_are_nice():
  for lo, hi in [(0.05, 1.05), (-3, 3), (26.8, 32.2), (1e-7, 5e-7),
                 (1234567, 1234999), (-0.12, 4.12)]:
    (a, b), ticks = plot._ticks(lo, hi)
    assert 4 <= len(ticks) <= 6 and a <= lo and b >= hi
    assert all(a - 1e-12 <= v <= b + 1e-12 for v, _ in ticks)
    steps = np.diff([v for v, _ in ticks])
    mantissa = steps[0] / 10 ** math.floor(math.log10(steps[0]))
    assert np.allclose(steps, steps[0]) and round(mantissa, 6) in (1, 2, 5)
    assert len({label for _, label in ticks}) == len(ticks)
