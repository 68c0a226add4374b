"""The comparison figure: choosing crops, tiling crops and residuals, PNG."""

import inspect
import os

import numpy as np
import pytest
from PIL import Image

from dada_jax.sim2real import figures

COLUMNS = ["input", "dda", "clean"]


def _outputs(n=4, size=32, seed=0):
  rng = np.random.default_rng(seed)
  a = rng.integers(0, 50, (n, size, size, 3), dtype=np.uint8)
  return {"vanilla": a, "dda": a.copy()}


def _rows(n=2, crop=16, seed=0):
  rng = np.random.default_rng(seed)
  rows = []
  for i in range(n):
    gt = rng.integers(60, 200, (crop, crop, 3), dtype=np.uint8)
    noisy = (gt.astype(int) + rng.integers(-20, 21, gt.shape)).astype(np.uint8)
    rows.append({"label": f"block {i}", "gt": gt,
                 "images": {"input": noisy, "dda": gt.copy(), "clean": gt}})
  return rows


def test_pick_crops_finds_a_planted_difference():
  outputs = _outputs()
  outputs["dda"][2, 10:14, 20:24] = 255  # the brightest difference
  outputs["dda"][0, 0:3, 0:3] = 255      # a smaller one in another block
  picks = figures.pick_crops(outputs, "vanilla", "dda", crop=8, k=3)
  # On the stride-4 grid the windows covering the square are (8, 16) and
  # (8, 20); the tie goes to the lower left.
  assert picks[0] == (2, 8, 16)
  block, top, left = picks[0]
  assert top <= 10 and top + 8 >= 14 and left <= 20 and left + 8 >= 24
  assert picks[1] == (0, 0, 0)
  assert picks == figures.pick_crops(outputs, "dda", "vanilla", crop=8, k=3)


def test_pick_crops_one_window_per_block_and_k():
  outputs = _outputs(n=5)
  rng = np.random.default_rng(1)
  outputs["dda"] = rng.integers(0, 256, outputs["dda"].shape, dtype=np.uint8)
  for k in (0, 1, 3, 5, 9):
    picks = figures.pick_crops(outputs, "vanilla", "dda", crop=8, k=k)
    assert len(picks) == min(k, 5)
    assert len({block for block, _, _ in picks}) == len(picks)
    for _, top, left in picks:
      assert top % 4 == 0 and left % 4 == 0 and 0 <= top <= 24 >= left >= 0
  picks = figures.pick_crops(outputs, "vanilla", "dda", crop=8, k=5)
  diff = np.abs(outputs["vanilla"].astype(float) - outputs["dda"])
  scores = [diff[n, t:t + 8, l:l + 8].mean() for n, t, l in picks]
  assert scores == sorted(scores, reverse=True)
  # No difference anywhere: every tie goes to the lower index.
  same = {"a": outputs["vanilla"], "b": outputs["vanilla"]}
  assert figures.pick_crops(same, "a", "b", crop=8, k=3) == [
      (0, 0, 0), (1, 0, 0), (2, 0, 0)]


def test_pick_crops_rejects_bad_arguments():
  outputs = _outputs()
  with pytest.raises(ValueError, match="no outputs"):
    figures.pick_crops(outputs, "vanilla", "oracle", crop=8, k=1)
  with pytest.raises(ValueError, match="crop"):
    figures.pick_crops(outputs, "vanilla", "dda", crop=33, k=1)
  outputs["dda"] = outputs["dda"][:3]
  with pytest.raises(ValueError, match=r"\[N, S, S, 3\]"):
    figures.pick_crops(outputs, "vanilla", "dda", crop=8, k=1)


def test_fixed_crops_are_fixed_in_advance_and_spread():
  assert list(inspect.signature(figures.fixed_crops).parameters) == [
      "num_blocks", "size", "crop", "k"]
  assert figures.fixed_crops(10, 64, 16, 4) == [
      (0, 24, 24), (3, 24, 24), (6, 24, 24), (9, 24, 24)]
  assert figures.fixed_crops(3, 32, 8, 5) == [
      (0, 12, 12), (1, 12, 12), (2, 12, 12)]
  assert figures.fixed_crops(7, 32, 8, 1) == [(0, 12, 12)]
  assert figures.fixed_crops(7, 32, 8, 0) == []


def test_comparison_image_layout_and_residuals():
  rows = _rows()
  rows[0]["images"]["dda"][3, 5] += 10  # +10 in every channel
  rows[1]["images"]["dda"][0, 0] = 0
  image = figures.comparison_image(rows, COLUMNS, zoom=2, residual_gain=4.0)
  # 2 rows x (crops + residuals) of 32 px, 3 gaps; 3 columns of 32 px, 2 gaps.
  assert image.shape == (4 * 32 + 3 * 2, 3 * 32 + 2 * 2, 3)
  assert image.dtype == np.uint8
  pitch = 32 + 2

  def tile(strip, column):
    return image[strip * pitch:strip * pitch + 32,
                 column * pitch:column * pitch + 32]

  for i, row in enumerate(rows):
    for j, column in enumerate(COLUMNS):
      crop = row["images"][column]
      np.testing.assert_array_equal(tile(2 * i, j),
                                    crop.repeat(2, 0).repeat(2, 1))
    assert (tile(2 * i + 1, 2) == 128).all()  # clean: exactly grey
  residual = tile(1, 1)
  np.testing.assert_array_equal(residual[6:8, 10:12], 128 + 40)
  residual[6:8, 10:12] = 128
  assert (residual == 128).all()
  assert (tile(3, 1)[:2, :2] == 0).all()  # large negative: clipped at 0
  expected = np.clip(128 + 4 * (rows[0]["images"]["input"].astype(int)
                                - rows[0]["gt"]), 0, 255)
  np.testing.assert_array_equal(tile(1, 0), expected.repeat(2, 0).repeat(2, 1))
  # Gaps are white.
  assert (image[32:34] == 255).all() and (image[:, 32:34] == 255).all()


def test_comparison_image_rejects_bad_rows():
  rows = _rows()
  del rows[1]["images"]["dda"]
  with pytest.raises(ValueError, match="no image for column 'dda'"):
    figures.comparison_image(rows, COLUMNS)
  rows = _rows()
  rows[0]["images"]["dda"] = rows[0]["images"]["dda"].astype(np.float32)
  with pytest.raises(ValueError, match="uint8"):
    figures.comparison_image(rows, COLUMNS)


def test_write_comparison_png(tmp_path):
  path = tmp_path / "comparison.png"
  rows = _rows()
  figures.write_comparison(path, rows, COLUMNS, title="SIDD validation")
  assert os.listdir(tmp_path) == ["comparison.png"]
  with Image.open(path) as png:
    assert png.format == "PNG"
    width, height = png.size
    pixels = np.asarray(png.convert("RGB"))
  image = figures.comparison_image(rows, COLUMNS)
  assert image.shape[1] < width < image.shape[1] + 800
  assert image.shape[0] < height < image.shape[0] + 200
  fig = figures.comparison_figure(rows, COLUMNS, title="SIDD validation")
  texts = [t.get_text() for t in fig.axes[0].texts]
  assert texts[:3] == COLUMNS and "block 1" in texts and "residual" in texts
  fig_texts = [t.get_text() for t in fig.texts]
  assert "SIDD validation" in fig_texts
  assert any("x 4" in t and "2x" in t for t in fig_texts)
  # The flat grey residual of the clean column is drawn.
  assert (np.abs(pixels.astype(int) - 128).max(-1) == 0).sum() > 30 * 30
  # Titles wider than their tiles are turned so they do not overlap.
  for row in rows:
    row["images"]["no_negatives"] = row["gt"]
  columns = ["input", "no_negatives", "clean"]
  wide = figures.comparison_figure(rows, columns, zoom=8)
  assert {t.get_rotation() for t in wide.axes[0].texts} == {0}
  narrow = figures.comparison_figure(rows, columns, zoom=1)
  assert [t.get_rotation() for t in narrow.axes[0].texts[:3]] == [45] * 3


def test_write_comparison_bad_path_leaves_nothing(tmp_path):
  with pytest.raises(FileNotFoundError):
    figures.write_comparison(tmp_path / "missing" / "fig.png", _rows(),
                             COLUMNS)
  assert not list(tmp_path.iterdir())
  with pytest.raises(ValueError):
    figures.write_comparison(tmp_path / "fig.png", [], COLUMNS)
  assert not list(tmp_path.iterdir())
