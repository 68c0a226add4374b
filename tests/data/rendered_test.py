"""RenderedPairs, camera.render and the rendered stream kind's wiring."""

import dataclasses
import os
import types

import numpy as np
from PIL import Image
import pytest

from dada_jax import config_lib
from dada_jax import data
from dada_jax.data import camera
from dada_jax.data import degrade
from dada_jax.data import rendered
from dada_jax.data import sources
from dada_jax.data import train_data
from dada_jax.data.common import Problem


def _photo(h, w, seed):
  """A smooth colour gradient plus mild noise, uint8 [h, w, 3]."""
  rng = np.random.default_rng(seed)
  y, x = np.mgrid[0:h, 0:w] / max(h, w)
  base = np.stack([0.3 + 0.4 * x, 0.3 + 0.4 * y, 0.6 - 0.3 * x * y], -1)
  image = base + 0.05 * rng.standard_normal((h, w, 3))
  return np.clip(np.round(image * 255), 0, 255).astype(np.uint8)


class FakePhotos:
  """A tiny clean photo source: {"image": uint8 [H, W, 3]} of `shapes`."""

  paired = False

  def __init__(self, shapes=((70, 90), (50, 60)), seed=0):
    self.images = [_photo(h, w, seed + i) for i, (h, w) in enumerate(shapes)]
    self.names = [f"photo{i}" for i in range(len(shapes))]
    self.problems = []
    self.checked = []  # (index, min_size) of every check_item call

  def __len__(self):
    return len(self.images)

  def __getitem__(self, index):
    return {"image": self.images[index]}

  def __repr__(self):
    return "FakePhotos()"

  def check_item(self, index, min_size):
    self.checked.append((index, min_size))
    h, w = self.images[index].shape[:2]
    if min(h, w) < min_size:
      return [Problem(self.names[index], f"{h}x{w} < {min_size}")]
    return []


def _pairs(task="denoise", domain="real", seed=0, photos=None, **kwargs):
  if "block_size" not in kwargs:
    kwargs.setdefault("patch_size", 24)
  return rendered.RenderedPairs(photos or FakePhotos(), task, domain, seed,
                                **kwargs)


def _assert_items_equal(a, b):
  assert set(a) == set(b)
  for k in a:
    np.testing.assert_array_equal(a[k], b[k])


class _SerialPool:
  """A ThreadPoolExecutor stand-in whose map is lazy (the builtin map): were
  `check_sources` to check a rendered source item by item, it would fail at
  its first item instead of submitting 2^24 checks (hours)."""

  def __init__(self, *args, **kwargs):
    del args, kwargs

  def __enter__(self):
    return self

  def __exit__(self, *exc):
    return False

  def map(self, fn, *iterables):
    return map(fn, *iterables)


@pytest.fixture(autouse=True)
def serial_checks(monkeypatch):
  """`check_sources` (sources.py only) checks items with `_SerialPool`."""
  futures = types.SimpleNamespace(ThreadPoolExecutor=_SerialPool)
  monkeypatch.setattr(sources, "concurrent",
                      types.SimpleNamespace(futures=futures))


# ---------------------------------------------------------------- items


@pytest.mark.parametrize("task,domain,mode", [
    ("denoise", "real", "patch"), ("denoise", "synthetic", "block"),
    ("derain", "real", "patch"), ("deblur", "synthetic", "block")])
def test_items_are_a_pure_function_of_seed_and_index(task, domain, mode):
  size = {"patch_size": 20} if mode == "patch" else {"block_size": 20}
  a = _pairs(task, domain, seed=3, **size)
  b = _pairs(task, domain, seed=3, **size)
  forward = [a[i] for i in range(4)]
  backward = [b[i] for i in reversed(range(4))][::-1]
  for x, y in zip(forward, backward):
    _assert_items_equal(x, y)
  _assert_items_equal(a[2], forward[2])  # re-read
  other = _pairs(task, domain, seed=4, **size)
  assert not np.array_equal(other[0]["lq"], forward[0]["lq"])
  assert not np.array_equal(forward[0]["lq"], forward[1]["lq"])
  assert not np.array_equal(forward[0]["lq"], forward[0]["gt"])


@pytest.mark.parametrize("task", ["denoise", "derain", "deblur"])
@pytest.mark.parametrize("size", [{"patch_size": 32}, {"block_size": 32}])
def test_domains_share_the_clean_target(task, size):
  real = _pairs(task, "real", seed=5, **size)
  syn = _pairs(task, "synthetic", seed=5, **size)
  clean = _pairs(task, "clean", seed=5, paired=False, **size)
  clean_paired = _pairs(task, "clean", seed=5, **size)
  for i in (0, 3):
    r, s, c = real[i], syn[i], clean[i]
    assert set(r) == set(s) == {"lq", "gt"} and set(c) == {"image"}
    np.testing.assert_array_equal(r["gt"], c["image"])
    np.testing.assert_array_equal(s["gt"], c["image"])
    # The degradations differ from the target and from each other.
    assert not np.array_equal(r["lq"], r["gt"])
    assert not np.array_equal(s["lq"], s["gt"])
    assert not np.array_equal(r["lq"], s["lq"])
    # Domain clean, paired: lq is the target itself.
    np.testing.assert_array_equal(clean_paired[i]["lq"], c["image"])
    np.testing.assert_array_equal(clean_paired[i]["gt"], c["image"])
  # Unpaired real is the paired lq.
  unpaired = _pairs(task, "real", seed=5, paired=False, **size)
  np.testing.assert_array_equal(unpaired[1]["image"], real[1]["lq"])


def test_denoise_real_noise_is_zero_mean_and_spatially_correlated():
  real = _pairs("denoise", "real", seed=0, patch_size=40)
  syn = _pairs("denoise", "synthetic", seed=0, patch_size=40,
               sigma_range=(15.0, 50.0))
  for i in range(4):
    r = real[i]
    lq, gt = r["lq"] / 255.0, r["gt"] / 255.0
    stats = degrade.noise_stats(lq, gt)
    assert stats["std"] > 2 / 255  # noise, not just rounding
    assert stats["lag1_corr"] > 0.3, stats  # demosaicked: correlated
    assert abs(float((lq - gt).mean())) < 0.25 * stats["std"] + 1 / 255
    s = syn[i]
    white = degrade.noise_stats(s["lq"] / 255.0, s["gt"] / 255.0)
    assert white["std"] > 10 / 255
    assert abs(white["lag1_corr"]) < 0.1, white
    assert abs(float((s["lq"] / 255.0 - s["gt"] / 255.0).mean())) < 0.01


def test_denoise_clean_target_is_the_noiseless_camera_render():
  src = _pairs("denoise", "clean", seed=2, block_size=20)
  block = src.blocks()[0]
  rng = np.random.default_rng([2, 0])
  cam = camera.sample_camera_params(rng, src.shot_noise_range)
  m = src.margin
  crop = src._crop(0, block["top"] - m, block["left"] - m, 20 + 2 * m)
  want = np.clip(np.round(camera.render(crop, cam)[m:-m, m:-m] * 255),
                 0, 255).astype(np.uint8)
  np.testing.assert_array_equal(src[0]["lq"], want)
  # The render is not the photo window itself (a camera changed its colours).
  photo = FakePhotos().images[0]
  t, l = block["top"], block["left"]
  assert not np.array_equal(src[0]["gt"], photo[t:t + 20, l:l + 20])


@pytest.mark.parametrize("task", ["derain", "deblur"])
def test_derain_deblur_clean_target_is_the_photo_window(task):
  photos = FakePhotos()
  blocks = _pairs(task, "real", seed=1, block_size=24, photos=photos)
  for i, b in enumerate(blocks.blocks()):
    p = photos.names.index(b["photo"])
    t, l, s = b["top"], b["left"], b["size"]
    item = blocks[i]
    np.testing.assert_array_equal(item["gt"],
                                  photos.images[p][t:t + s, l:l + s])
    assert not np.array_equal(item["lq"], item["gt"])
  patches = _pairs(task, "synthetic", seed=1, patch_size=24, photos=photos)
  m = patches.margin
  for i in range(3):
    p, top, left, side = patches.window(i, np.random.default_rng([1, i]))
    assert side == 24 + 2 * m
    window = photos.images[p][top + m:top + m + 24, left + m:left + m + 24]
    item = patches[i]
    np.testing.assert_array_equal(item["gt"], window)
    assert not np.array_equal(item["lq"], item["gt"])


# ---------------------------------------------------------------- camera


def test_camera_render_without_rng_is_deterministic_and_noise_free():
  cam = camera.sample_camera_params(np.random.default_rng(0), (2e-3, 2e-3))
  x = _photo(16, 20, 0) / 255.0
  clean = camera.render(x, cam)
  assert clean.shape == x.shape and clean.min() >= 0 and clean.max() <= 1
  np.testing.assert_array_equal(camera.render(x, cam), clean)
  noisy = camera.render(x, cam, np.random.default_rng(1))
  assert np.abs(noisy - clean).mean() > 1e-3
  np.testing.assert_array_equal(
      noisy, camera.render(x, cam, np.random.default_rng(1)))
  # With the sensor noise (nearly) off, the noisy render is the clean one.
  quiet = dataclasses.replace(cam, shot_noise=1e-10, read_noise=0.0)
  np.testing.assert_allclose(
      camera.render(x, quiet, np.random.default_rng(2)), camera.render(x, quiet),
      atol=1e-3)
  np.testing.assert_allclose(camera.render(x, quiet), clean)  # no noise used


def test_camera_render_noise_averages_to_the_clean_render():
  cam = camera.sample_camera_params(np.random.default_rng(3), (3e-4, 3e-4))
  grey = np.full((16, 16, 3), 0.5)
  clean = camera.render(grey, cam)
  # Without noise, the camera's round trip returns a flat grey as it was.
  np.testing.assert_allclose(clean, 0.5, atol=1e-6)
  rng = np.random.default_rng(4)
  noisy = np.stack([camera.render(grey, cam, rng) for _ in range(64)])
  std = noisy.std()
  assert std > 0.01  # each render is visibly noisy
  # The ISP's curves leave a second-order bias only, far below the noise.
  bias = noisy.mean(axis=(0, 1, 2)) - clean.mean(axis=(0, 1))
  assert np.abs(bias).max() < 0.1 * std, (bias, std)


# ---------------------------------------------------------------- layouts


def test_blocks_grid_listing_and_draws():
  photos = FakePhotos()  # 70x90: a 2x2 grid of 32; 50x60: 1x1
  src = _pairs("derain", "synthetic", seed=7, block_size=32, draws=2,
               photos=photos)
  assert len(src) == 5 * 2
  listing = src.blocks()
  assert len(listing) == len(src)
  assert listing[0] == {"photo": "photo0", "top": 3, "left": 13, "size": 32,
                        "draw": 0, "seed": [7, 0]}
  cells = [(b["photo"], b["top"], b["left"]) for b in listing]
  assert cells[:5] == [("photo0", 3, 13), ("photo0", 3, 45),
                       ("photo0", 35, 13), ("photo0", 35, 45),
                       ("photo1", 9, 14)]
  assert cells[5:] == cells[:5]  # the grids in order, then the draws
  assert [b["draw"] for b in listing] == [0] * 5 + [1] * 5
  assert [b["seed"] for b in listing] == [[7, i] for i in range(10)]
  # Two draws of one block: the same target, different degradations.
  np.testing.assert_array_equal(src[1]["gt"], src[6]["gt"])
  assert not np.array_equal(src[1]["lq"], src[6]["lq"])
  for item in (src[0], src[9]):
    assert item["lq"].shape == (32, 32, 3) and item["lq"].dtype == np.uint8
  with pytest.raises(IndexError):
    src[10]  # pylint: disable=pointless-statement


def _overlap(a, b):
  return (a["top"] < b["top"] + b["size"] and b["top"] < a["top"] + a["size"]
          and a["left"] < b["left"] + b["size"]
          and b["left"] < a["left"] + a["size"])


@pytest.mark.parametrize("per_photo", [0, 1, 3])
def test_blocks_of_a_photo_never_overlap_and_are_capped(per_photo):
  photos = FakePhotos(((70, 90), (50, 60), (64, 100)))
  src = _pairs("denoise", "real", block_size=16, blocks_per_photo=per_photo,
               photos=photos)
  listing = src.blocks()
  full = {"photo0": 4 * 5, "photo1": 3 * 3, "photo2": 4 * 6}
  for name, grid in full.items():
    mine = [b for b in listing if b["photo"] == name]
    assert len(mine) == (min(grid, per_photo) if per_photo else grid)
    assert len({(b["top"], b["left"]) for b in mine}) == len(mine)
    for j, a in enumerate(mine):
      h, w = photos.images[photos.names.index(name)].shape[:2]
      assert 0 <= a["top"] and a["top"] + 16 <= h
      assert 0 <= a["left"] and a["left"] + 16 <= w
      assert not any(_overlap(a, b) for b in mine[j + 1:])
  assert len(src) == len(listing)


def test_photo_smaller_than_a_block_is_a_problem():
  some = _pairs("denoise", "real", block_size=40,
                photos=FakePhotos(((70, 90), (30, 60))))
  assert {b["photo"] for b in some.blocks()} == {"photo0"}  # no cells
  problems = some.check(0)
  assert [p.path for p in problems] == ["photo1"]
  none = _pairs("denoise", "real", block_size=80,
                photos=FakePhotos(((70, 90), (50, 60))))
  assert len(none) == 0 and none.blocks() == []
  assert none.check(0)
  with pytest.raises(data.DataError, match="photo1"):
    data.check_sources([some], 0)


def test_patch_items_and_virtual_length():
  src = _pairs("denoise", "synthetic", patch_size=24)
  assert len(src) == rendered.PATCHES == 1 << 24
  for i in (0, 1, rendered.PATCHES - 1):
    item = src[i]
    assert item["lq"].shape == item["gt"].shape == (24, 24, 3)
    assert item["lq"].dtype == item["gt"].dtype == np.uint8
  with pytest.raises(IndexError):
    src[rendered.PATCHES]  # pylint: disable=pointless-statement
  # Windows fall on both photos, weighted by their windows, always inside.
  photos = [src.window(i, np.random.default_rng([0, i]))[0]
            for i in range(60)]
  assert set(photos) == {0, 1} and photos.count(0) > photos.count(1)
  assert "patch_size=24" in repr(src) and "RenderedPairs(" in repr(src)
  tiny = _pairs("denoise", "real", patch_size=60,  # needs 64 px, photos < 64
                photos=FakePhotos(((70, 62), (50, 60))))
  with pytest.raises(ValueError, match="smaller than 64"):
    tiny[0]  # pylint: disable=pointless-statement


def test_check_sources_uses_the_sources_own_check(monkeypatch):
  calls = []
  get = rendered.RenderedPairs.__getitem__
  monkeypatch.setattr(rendered.RenderedPairs, "__getitem__",
                      lambda self, i: calls.append(i) or get(self, i))

  def per_item(self, index, min_size):
    raise AssertionError(f"check_item({index}, {min_size}) of {self!r}")

  monkeypatch.setattr(rendered.RenderedPairs, "check_item", per_item,
                      raising=False)
  photos = FakePhotos()
  src = _pairs("denoise", "real", patch_size=24, photos=photos)
  data.check_sources([src], 32)
  assert len(calls) <= 4
  # Every photo checked once, for the patch and its margin.
  assert sorted(photos.checked) == [(0, 36), (1, 36)]
  with pytest.raises(data.DataError, match="photo1: 50x60 < 52"):
    data.check_sources([src], 48)
  # Too small for the patch itself.
  small = _pairs("derain", "real", patch_size=56, photos=FakePhotos())
  with pytest.raises(data.DataError, match="photo1"):
    data.check_sources([small], 0)
  assert len(calls) <= 4


# ---------------------------------------------------------------- errors


def test_bad_arguments_raise_value_error():
  with pytest.raises(ValueError, match="unknown rendered domain"):
    _pairs("denoise", "fake")
  with pytest.raises(ValueError, match="unknown rendered domain"):
    _pairs("dehaze", "real")
  with pytest.raises(ValueError, match="exactly one"):
    _pairs(patch_size=16, block_size=16)
  with pytest.raises(ValueError, match="exactly one"):
    rendered.RenderedPairs(FakePhotos(), "denoise", "real")
  with pytest.raises(ValueError, match="draws=0"):
    _pairs(block_size=16, draws=0)


def _stream(**fields):
  c = config_lib.base_config("denoise")
  c.data.real.update(fields)
  return c.data.real


def test_stream_problem_accepts_clean_for_rendered_only():
  assert "clean" in config_lib.RENDERED_DOMAINS
  assert "clean" not in config_lib.DOMAINS
  message = config_lib.stream_problem(
      _stream(kind="simulated", task="denoise", domain="clean"), "x.real")
  assert message and "x.real" in message and "denoise/clean" in message
  assert config_lib.stream_problem(
      _stream(kind="rendered", task="denoise", domain="clean"), "x.real") is None
  assert "task is empty" in config_lib.stream_problem(
      _stream(kind="rendered", task=""), "x.real")
  assert config_lib.stream_paired(_stream(kind="rendered", paired=True))
  assert not config_lib.stream_paired(_stream(kind="rendered", paired=False))


def _photo_folder(folder, shapes=((70, 90), (50, 60), (64, 80))):
  os.makedirs(folder, exist_ok=True)
  for i, (h, w) in enumerate(shapes):
    Image.fromarray(_photo(h, w, i)).save(os.path.join(folder, f"p{i}.png"))
  return str(folder)


def test_build_source_rendered(tmp_path):
  folder = _photo_folder(tmp_path / "photos")
  common = dict(kind="rendered", task="deblur", path=folder, split="all",
                size=0, seed=4)
  blocks = data.build_source(
      _stream(**common, domain="real", block_size=32, draws=3,
              blocks_per_photo=2, paired=True), "config.eval", patch_size=16)
  assert isinstance(blocks, rendered.RenderedPairs)
  assert blocks.block_size == 32 and blocks.patch_size is None
  assert (blocks.draws, blocks.blocks_per_photo, blocks.seed) == (3, 2, 4)
  assert len(blocks) == (2 + 1 + 2) * 3  # 70x90: 4 cells, 50x60: 1, 64x80: 4
  assert blocks[0]["gt"].shape == (32, 32, 3)
  patches = data.build_source(
      _stream(**common, domain="clean", paired=False), "config.data.real",
      patch_size=16)
  assert patches.patch_size == 16 and patches.block_size is None
  assert len(patches) == rendered.PATCHES and not patches.paired
  assert patches[0]["image"].shape == (16, 16, 3)
  with pytest.raises(data.DataError,
                     match=r"config\.data\.real: .*block_size"):
    data.build_source(_stream(**common, domain="real"), "config.data.real")
  with pytest.raises(data.DataError, match="config.data.real: unknown"):
    data.build_source(_stream(**common, domain="fake"), "config.data.real",
                      patch_size=16)
  with pytest.raises(data.DataError, match="config.data.real: draws=0"):
    data.build_source(_stream(**common, domain="real", draws=0),
                      "config.data.real", patch_size=16)


# ---------------------------------------------------------------- pipeline


def _quantised(x):
  return np.allclose(x * 255, np.round(x * 255), atol=1e-3)


def _batch(syn, real, real_awgn, seed=0):
  ds = data.make_train_dataset(
      syn, real, patch_size=16, global_batch_size=2, seed=seed,
      process_index=0, process_count=1, sigma_range=(25.0, 25.0),
      real_awgn=real_awgn, num_threads=1, prefetch_buffer_size=1)
  return next(iter(ds))


def test_pipeline_gives_a_clean_real_stream_its_own_awgn():
  photos = FakePhotos()
  syn = _pairs("denoise", "clean", seed=0, paired=False, patch_size=16,
               photos=photos)
  real = _pairs("denoise", "clean", seed=1, paired=False, patch_size=16,
                photos=photos)
  noisy = _batch(syn, real, True)
  plain = _batch(syn, real, False)
  assert set(noisy) == {"syn_lq", "syn_gt", "real_lq"}
  assert noisy["real_lq"].shape == (2, 16, 16, 3)
  assert noisy["real_lq"].dtype == np.float32
  assert _quantised(plain["real_lq"]) and not _quantised(noisy["real_lq"])
  # Same windows, so the difference is the added noise: σ = 25/255.
  noise = noisy["real_lq"] - plain["real_lq"]
  assert abs(noise.std() - 25 / 255) < 0.2 * 25 / 255
  syn_noise = noisy["syn_lq"] - noisy["syn_gt"]
  # Its own draws (the same draws would match up to float32 rounding).
  assert np.abs(noise - syn_noise).mean() > 0.5 * 25 / 255
  assert not np.allclose(noisy["real_lq"], noisy["syn_lq"], atol=1e-3)
  np.testing.assert_array_equal(noisy["syn_lq"], plain["syn_lq"])


def test_train_data_passes_the_real_streams_awgn(tmp_path):
  folder = _photo_folder(tmp_path / "photos")
  c = config_lib.base_config("denoise")
  c.objective.mode = "dda"
  c.data.update(patch_size=16, batch_size=2, num_workers=0)
  rendered_stream = dict(kind="rendered", task="denoise", domain="clean",
                         path=folder, split="all", size=0, paired=False)
  c.data.syn.update(**rendered_stream, seed=0)
  c.data.real.update(**rendered_stream, seed=1)
  batches = {}
  for awgn in (False, True):
    c.data.real.awgn = awgn
    it, length = train_data.make_train_data(c)
    assert length == rendered.PATCHES
    batches[awgn] = next(it)
  assert _quantised(batches[False]["real_lq"])
  assert not _quantised(batches[True]["real_lq"])
  assert not _quantised(batches[True]["syn_lq"])
