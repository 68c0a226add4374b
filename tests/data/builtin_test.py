"""Tests of dada_jax.data.builtin: photos from pip wheels, or any folder."""

import os
import pickle
import sys

import numpy as np
from PIL import Image
import pytest

from dada_jax import data
from dada_jax import image_io
from dada_jax.data import builtin


def needs(package):
  """Skips unless `package` is installed (located, not imported)."""
  if builtin._package_dir(package) is None:
    pytest.skip(f"{package} not installed: {builtin.PIP_INSTALL[package]}")


def write_pngs(folder, count, h=20, w=30):
  """`count` PNGs im00.png.. whose pixels are all their index."""
  os.makedirs(folder, exist_ok=True)
  for i in range(count):
    Image.fromarray(np.full((h, w, 3), i, np.uint8)).save(
        os.path.join(folder, f"im{i:02d}.png"))
  return str(folder)


def test_split_is_fixed_and_disjoint():
  train = {n for n, (_, _, s) in builtin.BUILTIN.items() if s == "train"}
  test = {n for n, (_, _, s) in builtin.BUILTIN.items() if s == "test"}
  assert train == {"chelsea", "rocket", "kodim23", "sail", "tulips"}
  assert test == {"astronaut", "coffee", "monarch"}
  assert set(builtin.SIZES) == set(builtin.BUILTIN)
  for package, _, _ in builtin.BUILTIN.values():
    assert package in builtin.PIP_INSTALL


@pytest.mark.parametrize("name", sorted(builtin.BUILTIN))
def test_every_photo_loads_with_documented_size(name):
  needs(builtin.BUILTIN[name][0])
  image = image_io.read_rgb8(builtin.available()[name])
  assert image.dtype == np.uint8
  assert image.shape == (*builtin.SIZES[name], 3)
  assert image.std() > 20  # A photo, not a blank or a palette stub.


def test_builtin_splits_and_source_protocol():
  needs("skimage")
  needs("sporco")
  assert not builtin.missing()
  train, test = builtin.BuiltinPhotos("train"), builtin.BuiltinPhotos("test")
  everything = builtin.BuiltinPhotos("all")
  assert (len(train), len(test), len(everything)) == (5, 3, 8)
  assert not set(train.names) & set(test.names)
  assert sorted(train.names + test.names) == everything.names
  assert train.paired is False and train.problems == []
  assert repr(test) == "BuiltinPhotos(split='test', max_side=None)"
  assert list(test[0]) == ["image"]
  assert pickle.loads(pickle.dumps(test)).names == test.names  # For workers.
  data.check_sources([train, test], min_size=256)
  with pytest.raises(data.DataError, match="smaller than the 400x400"):
    data.check_sources([train], min_size=400)  # chelsea is 300x451.


def test_packages_are_located_not_imported():
  needs("sporco")
  before = {p for p in ("skimage", "sporco") if p in sys.modules}
  builtin.BuiltinPhotos("all")[0]  # pylint: disable=expression-not-assigned
  assert {p for p in ("skimage", "sporco") if p in sys.modules} == before


def test_max_side_keeps_aspect_and_is_deterministic():
  needs("skimage")
  small = builtin.BuiltinPhotos("all", max_side=128)
  index = small.names.index("coffee")  # 400x600.
  image = small[index]["image"]
  assert image.shape == (85, 128, 3) and image.dtype == np.uint8
  np.testing.assert_array_equal(image, small[index]["image"])
  big = builtin.BuiltinPhotos("all", max_side=10_000)
  assert big[index]["image"].shape == (400, 600, 3)
  assert small.check_item(index, 100)[0].reason == (
      "image is 85x128, smaller than the 100x100 patch")


def test_images_dir_splits_every_fourth_file(tmp_path):
  folder = write_pngs(tmp_path / "clean", 9)
  train = builtin.BuiltinPhotos("train", images_dir=folder)
  test = builtin.BuiltinPhotos("test", images_dir=folder)
  everything = builtin.BuiltinPhotos("all", images_dir=folder)
  ids = lambda s: [int(s[i]["image"][0, 0, 0]) for i in range(len(s))]
  assert ids(test) == [0, 4, 8]
  assert ids(train) == [1, 2, 3, 5, 6, 7]
  assert ids(everything) == list(range(9))
  assert ids(builtin.BuiltinPhotos("test", images_dir=folder)) == ids(test)
  assert test.names == ["im00.png", "im04.png", "im08.png"]
  assert f"images_dir={folder!r}" in repr(test)
  assert test.check_item(0, 20) == []
  assert "smaller than the 21x21" in test.check_item(0, 21)[0].reason


def test_images_dir_two_images_and_max_side(tmp_path):
  folder = write_pngs(tmp_path / "two", 2, h=50, w=200)
  test = builtin.BuiltinPhotos("test", images_dir=folder, max_side=40)
  train = builtin.BuiltinPhotos("train", images_dir=folder, max_side=40)
  assert (len(test), len(train)) == (1, 1)
  assert test[0]["image"].shape == (10, 40, 3)


@pytest.mark.parametrize("count", [0, 1])
def test_images_dir_with_too_few_images(tmp_path, count):
  folder = write_pngs(tmp_path / "few", count)
  with pytest.raises(data.DataError, match=f"holds {count} image"):
    builtin.BuiltinPhotos(images_dir=folder)


def test_images_dir_that_does_not_exist(tmp_path):
  with pytest.raises(data.DataError, match="nope' does not exist"):
    builtin.BuiltinPhotos(images_dir=tmp_path / "nope")


def test_unreadable_file_is_a_problem_not_a_crash(tmp_path):
  folder = write_pngs(tmp_path / "bad", 3)
  with open(os.path.join(folder, "im00.png"), "wb") as f:
    f.write(b"not a png")
  test = builtin.BuiltinPhotos("test", images_dir=folder)
  (problem,) = test.check_item(0, 1)
  assert problem.path.endswith("im00.png")
  assert problem.reason.startswith("unreadable: cannot read image")


def test_no_packages_gives_install_hint(monkeypatch):
  monkeypatch.setattr(builtin, "_package_dir", lambda package: None)
  assert builtin.available() == {}
  assert len(builtin.missing()) == len(builtin.BUILTIN)
  assert "monarch: sporco/data/monarch.png not found; pip install --no-deps" \
      " sporco" in builtin.missing()
  with pytest.raises(data.DataError,
                     match=r"pip install scikit-image && pip install "
                     r"--no-deps sporco"):
    builtin.BuiltinPhotos("train")


def test_one_missing_package_is_an_error_not_a_smaller_set(monkeypatch):
  needs("sporco")
  real = builtin._package_dir
  monkeypatch.setattr(builtin, "_package_dir",
                      lambda p: None if p == "skimage" else real(p))
  with pytest.raises(data.DataError, match=r"(?s)4 of the 8 built-in photos "
                     r"are missing.*pip install scikit-image.*astronaut: "
                     r"skimage/data/astronaut.png not found"):
    builtin.BuiltinPhotos("test")


def test_feeds_the_training_and_eval_pipelines():
  needs("skimage")
  needs("sporco")
  train = builtin.BuiltinPhotos("train", max_side=128)
  batch = next(data.make_train_iterator(
      train, train, patch_size=32, global_batch_size=2, seed=0,
      process_index=0, process_count=1))
  assert batch["syn_lq"].shape == batch["real_lq"].shape == (2, 32, 32, 3)
  test = builtin.BuiltinPhotos("test", max_side=64)
  shapes = [e["gt"].shape for e in data.make_eval_iterator(test, sigma=25)]
  assert shapes == [(1, 64, 64, 3), (1, 43, 64, 3), (1, 43, 64, 3)]


def test_bad_arguments():
  with pytest.raises(ValueError, match="split='val'"):
    builtin.BuiltinPhotos("val")
  with pytest.raises(ValueError, match="max_side=0"):
    builtin.BuiltinPhotos(max_side=0)
