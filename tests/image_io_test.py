"""Image reading: every odd but valid input becomes upright 8-bit RGB."""

import numpy as np
import pytest
from PIL import Image

from dada_jax import image_io


def _rgb(h=6, w=10):
  rng = np.random.default_rng(0)
  return rng.integers(0, 256, (h, w, 3), dtype=np.uint8)


def test_rgba_grayscale_palette_and_16bit(tmp_path):
  rgb = _rgb()
  Image.fromarray(np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)]),
                  "RGBA").save(tmp_path / "a.png")
  got = image_io.load_image(tmp_path / "a.png")
  np.testing.assert_array_equal(got.pixels, rgb)
  assert "alpha dropped" in got.note

  gray = rgb[..., 0]
  Image.fromarray(gray, "L").save(tmp_path / "g.png")
  got = image_io.load_image(tmp_path / "g.png")
  np.testing.assert_array_equal(got.pixels, np.repeat(gray[..., None], 3, -1))
  assert "grayscale" in got.note

  g16 = (gray.astype(np.uint16) * 257)
  Image.fromarray(g16).save(tmp_path / "g16.png")
  got = image_io.load_image(tmp_path / "g16.png")
  np.testing.assert_array_equal(got.pixels[..., 1], gray)
  assert "16-bit" in got.note

  pal = Image.fromarray(rgb, "RGB").quantize(colors=16)
  pal.save(tmp_path / "p.png")
  got = image_io.load_image(tmp_path / "p.png")
  np.testing.assert_array_equal(got.pixels, np.asarray(pal.convert("RGB")))
  assert "palette" in got.note


def test_exif_orientation_is_applied(tmp_path):
  rgb = _rgb(4, 8)
  img = Image.fromarray(rgb, "RGB")
  exif = img.getexif()
  exif[0x0112] = 6  # stored rotated: display needs a 90° clockwise turn
  img.save(tmp_path / "r.jpg", exif=exif, quality=100)
  got = image_io.load_image(tmp_path / "r.jpg")
  assert got.pixels.shape == (8, 4, 3)
  assert "EXIF orientation 6" in got.note


@pytest.mark.parametrize("name,content,reason", [
    ("bad.png", b"", "empty file"),
    ("bad.png", b"this is text", "not an image"),
    ("bad.png", None, "cannot read image"),  # truncated
    ("bad.jpg", None, "cannot read image"),  # truncated
])
def test_unreadable_files_name_the_path(tmp_path, name, content, reason):
  path = tmp_path / name
  if content is None:
    Image.fromarray(_rgb(64, 64)).save(path)
    content = path.read_bytes()[:200]
  path.write_bytes(content)
  with pytest.raises(image_io.ImageReadError, match=reason) as e:
    image_io.load_image(path)
  assert str(e.value).startswith(str(path))


@pytest.mark.parametrize("value_range", ["zero_one", "minus_one_one"])
def test_value_range_round_trip(value_range):
  rgb = _rgb()
  x = image_io.to_float(rgb, value_range)
  lo, hi = (0, 1) if value_range == "zero_one" else (-1, 1)
  assert x.min() >= lo and x.max() <= hi and x.dtype == np.float32
  np.testing.assert_array_equal(image_io.to_uint8(x, value_range), rgb)
  # Overshoot is clipped, not wrapped.
  assert image_io.to_uint8(np.full((1, 1, 3), hi + 0.5), value_range).max() == 255


def test_write_png_leaves_no_partial_file(tmp_path):
  path = tmp_path / "out.png"
  with pytest.raises(Exception):
    image_io.write_png(path, np.zeros((2, 2, 5), np.uint8))  # not RGB
  assert list(tmp_path.iterdir()) == []
  image_io.write_png(path, _rgb())
  np.testing.assert_array_equal(image_io.read_rgb8(path), _rgb())


def test_training_sources_read_images_the_same_way(tmp_path):
  """Training and restore see the same upright 8-bit RGB pixels."""
  from dada_jax.data import sources  # pylint: disable=g-import-not-at-top
  img = Image.fromarray(_rgb(4, 8), "RGB")
  exif = img.getexif()
  exif[0x0112] = 8
  img.save(tmp_path / "r.jpg", exif=exif, quality=100)
  Image.fromarray((_rgb(4, 8)[..., 0].astype(np.uint16) * 257)).save(
      tmp_path / "g16.png")
  folder = sources.ImageFolder(tmp_path)
  for i, path in enumerate(sorted(tmp_path.iterdir())):
    np.testing.assert_array_equal(folder[i]["image"],
                                  image_io.read_rgb8(path))
  assert folder[1]["image"].shape == (8, 4, 3)  # r.jpg, rotated upright
