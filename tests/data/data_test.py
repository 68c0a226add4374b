"""Tests of the Grain input pipeline (dada_jax.data) on tiny images in tmp_path.

Images whose pixels encode their index (a constant colour per image) let the
tests recover which source item each patch came from after crop/augment.
"""

import io
import os
import sys

import numpy as np
from PIL import Image
import pytest

from dada_jax import data
from dada_jax.data import transforms


def write_png(path, pixels):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
  return str(path)


def const_image(value, h=24, w=32):
  return np.full((h, w, 3), value, np.uint8)


def id_of(patches):
  """Ids i of [B, P, P, 3] zero_one patches cut from const_image(10 * i)."""
  return [int(round(v * 255 / 10)) for v in np.asarray(patches)[:, 0, 0, 0]]


@pytest.fixture
def paired_ids(tmp_path):
  """8 pairs: gt constant 10*i, lq = gt + 5."""
  for i in range(8):
    write_png(tmp_path / "gt" / f"im{i}.png", const_image(10 * i))
    write_png(tmp_path / "lq" / f"im{i}.png", const_image(10 * i + 5))
  return data.PairedFolders(tmp_path / "lq", tmp_path / "gt")


@pytest.fixture
def real_ids(tmp_path):
  for i in range(6):
    write_png(tmp_path / "real" / f"r{i}.png", const_image(10 * i, 30, 28))
  return data.ImageFolder(tmp_path / "real")


@pytest.fixture
def textured(tmp_path):
  """Paired random-texture images (lq = gt + 7) and real/ref folders."""
  rng = np.random.default_rng(0)
  for i in range(5):
    gt = rng.integers(0, 200, (20 + 4 * i, 36, 3), np.uint8)
    write_png(tmp_path / "gt" / f"{i}.png", gt)
    write_png(tmp_path / "lq" / f"{i}.bmp", gt + 7)
  for i in range(3):
    write_png(tmp_path / "real" / f"{i}.JPG",
              rng.integers(0, 256, (24, 24, 3), np.uint8))
    write_png(tmp_path / "ref" / "sub" / f"{i}.png",
              rng.integers(0, 256, (26, 20, 3), np.uint8))
  return (data.PairedFolders(tmp_path / "lq", tmp_path / "gt"),
          data.ImageFolder(tmp_path / "real"),
          data.ImageFolder(tmp_path / "ref"))


def take(it, n):
  return [next(it) for _ in range(n)]


def assert_batches_equal(a, b):
  assert len(a) == len(b)
  for x, y in zip(a, b):
    assert x.keys() == y.keys()
    for k in x:
      np.testing.assert_array_equal(x[k], y[k], err_msg=k)


def train_iter(syn, real, ref=None, **kw):
  args = dict(patch_size=16, global_batch_size=4, seed=0, process_index=0,
              process_count=1)
  args.update(kw)
  return data.make_train_iterator(syn, real, ref, **args)


def test_batches_have_documented_keys_shapes_dtypes(textured):
  batch = next(train_iter(*textured))
  assert set(batch) == {"syn_lq", "syn_gt", "real_lq", "ref_clean"}
  for v in batch.values():
    assert v.shape == (4, 16, 16, 3) and v.dtype == np.float32
  # Streams draw with their own seeds even from the same images.
  syn, real, _ = textured
  batch = next(train_iter(syn, real, real))
  assert not np.array_equal(batch["real_lq"], batch["ref_clean"])


def test_same_seed_same_batches(textured):
  assert_batches_equal(take(train_iter(*textured), 4),
                       take(train_iter(*textured), 4))


def test_different_seeds_differ(textured):
  a, b = next(train_iter(*textured, seed=0)), next(train_iter(*textured,
                                                              seed=1))
  for k in a:
    assert not np.array_equal(a[k], b[k]), k


class CountingSource:
  """Wraps a source; records which items were read and which checked."""

  def __init__(self, source):
    self.source, self.read, self.checked = source, [], []
    self.problems, self.paired = source.problems, source.paired

  def __len__(self):
    return len(self.source)

  def __getitem__(self, i):
    self.read.append(i)
    return self.source[i]

  def check_item(self, i, min_size):
    self.checked.append(i)
    return self.source.check_item(i, min_size)


@pytest.mark.parametrize("hosts", [2, 4])
def test_hosts_split_the_global_batch(textured, hosts):
  """Host h's batch is rows [h·b, (h+1)·b) of the one-host batch, for every
  stream, and reads (checks and decodes) only its share of each source."""
  one_host = take(train_iter(*textured, global_batch_size=8,
                             process_count=1), 3)
  counted = []
  parts = []
  for host in range(hosts):
    sources = [CountingSource(s) for s in textured]
    counted.append(sources)
    it = train_iter(*sources, global_batch_size=8, process_index=host,
                    process_count=hosts, num_threads=0,
                    prefetch_buffer_size=0)
    parts.append(take(it, 3))
  for k, whole in enumerate(one_host):
    for key in whole:
      np.testing.assert_array_equal(
          np.concatenate([part[k][key] for part in parts]), whole[key],
          err_msg=key)
  for stream in range(3):  # each check decodes a disjoint share
    checked = [set(c[stream].checked) for c in counted]
    assert all(not a & b for i, a in enumerate(checked)
               for b in checked[i + 1:])
    assert set().union(*checked) == set(range(len(textured[stream])))


def test_a_host_decodes_only_its_rows(paired_ids, real_ids):
  """One epoch of 8 pairs in two global batches of 4: each of 2 hosts reads 4
  distinct pairs, the two hosts together all 8."""
  seen = []
  for host in range(2):
    syn = CountingSource(paired_ids)
    it = train_iter(syn, real_ids, patch_size=8, global_batch_size=4,
                    process_index=host, process_count=2, check_files=False,
                    num_threads=0, prefetch_buffer_size=0)  # no read-ahead
    batches = take(it, 2)
    ids = sum((id_of(b["syn_gt"]) for b in batches), [])
    assert len(set(ids)) == 4
    assert sorted(syn.read) == sorted(set(syn.read)) and len(syn.read) == 4
    seen.append(set(ids))
  assert not seen[0] & seen[1] and seen[0] | seen[1] == set(range(8))


def test_streams_reshuffle_each_epoch(paired_ids, real_ids):
  it = train_iter(paired_ids, real_ids, patch_size=8, global_batch_size=8)
  epochs = [id_of(b["syn_gt"]) for b in take(it, 4)]
  assert all(sorted(e) == list(range(8)) for e in epochs)
  assert len({tuple(e) for e in epochs}) > 1
  # The real stream (6 items) wraps on its own schedule: 32 draws = 5 epochs
  # and a bit, each a permutation of the 6 images.
  real = sum((id_of(b["real_lq"]) for b in take(train_iter(
      paired_ids, real_ids, patch_size=8, global_batch_size=8), 4)), [])
  real_epochs = [tuple(real[i:i + 6]) for i in range(0, 30, 6)]
  assert all(sorted(e) == list(range(6)) for e in real_epochs)
  assert len(set(real_epochs)) > 1


def test_aligned_crop_and_flip_keep_pairs_aligned(textured):
  for batch in take(train_iter(*textured), 3):
    np.testing.assert_allclose(batch["syn_lq"] - batch["syn_gt"], 7 / 255,
                               atol=1e-6)


def test_crop_and_augment_is_a_dihedral_window():
  rng = np.random.default_rng(1)
  image = rng.integers(0, 256, (9, 11, 3), np.uint8)
  crop = transforms.CropAndAugment(5)
  ops_seen = set()
  for seed in range(40):
    out = crop.random_map({"a": image, "b": image + 1},
                          np.random.default_rng(seed))["a"]
    assert out.shape == (5, 5, 3)
    matches = [(op, t, l) for op in range(8) for t in range(5) for l in range(7)
               if np.array_equal(out, transforms.dihedral(
                   image[t:t + 5, l:l + 5], op))]
    assert matches
    ops_seen.add(matches[0][0])
  assert ops_seen == set(range(8))


def test_value_ranges(textured):
  to01 = transforms.ToFloat("zero_one")
  to11 = transforms.ToFloat("minus_one_one")
  pixels = np.array([[[0, 128, 255]]], np.uint8)
  np.testing.assert_allclose(to01.map({"x": pixels})["x"],
                             [[[0, 128 / 255, 1]]], atol=1e-7)
  np.testing.assert_allclose(to11.map({"x": pixels})["x"],
                             [[[-1, 128 / 127.5 - 1, 1]]], atol=1e-6)
  b01 = next(train_iter(*textured, value_range="zero_one"))
  b11 = next(train_iter(*textured, value_range="minus_one_one"))
  for k in b01:
    assert b01[k].dtype == b11[k].dtype == np.float32
    assert 0 <= b01[k].min() and b01[k].max() <= 1, k
    assert -1 <= b11[k].min() and b11[k].max() <= 1, k
    assert b01[k].max() > 0.5, k  # Not left in [0, 255] / 255**2 etc.
    np.testing.assert_allclose(b11[k], 2 * b01[k] - 1, atol=1e-6, err_msg=k)
  with pytest.raises(ValueError, match="value_range"):
    transforms.ToFloat("zero_255")


@pytest.mark.parametrize("value_range,scale", [("zero_one", 1.0),
                                               ("minus_one_one", 2.0)])
def test_awgn_sigma_range_unclipped_zero_mean(value_range, scale):
  noise = transforms.AddNoise(value_range)
  clean = np.full((32, 32, 3), -1.0 if scale == 2 else 0.0, np.float32)
  sigmas, means = [], []
  for i in range(300):
    out = noise.random_map({"image": clean}, np.random.default_rng(i))
    assert out["gt"] is clean
    diff = out["lq"] - clean
    sigmas.append(diff.std() / scale * 255)
    means.append(diff.mean() / scale * 255)
  sigmas = np.array(sigmas)
  assert sigmas.max() < 75 * 1.1 and sigmas.max() > 70
  assert sigmas.min() < 5
  assert abs(np.mean(sigmas) - 37.5) < 4  # U[0, 75] has mean 37.5.
  assert abs(np.mean(means)) < 0.5
  assert out["lq"].min() < clean.min()  # Not clipped to the value range.


def test_clean_only_synthetic_source_gets_online_noise(real_ids):
  syn = data.SyntheticClean(6, 24, seed=3)
  batch = next(train_iter(syn, real_ids, global_batch_size=6))
  residual = batch["syn_lq"] - batch["syn_gt"]
  per_image_sigma = residual.std(axis=(1, 2, 3)) * 255
  assert np.all(per_image_sigma < 80) and np.ptp(per_image_sigma) > 1
  assert batch["syn_lq"].min() < 0 or batch["syn_lq"].max() > 1


def test_state_save_restore_resumes_exactly(textured):
  it = train_iter(*textured)
  take(it, 3)
  state = it.get_state()
  expected = take(it, 2)
  resumed = train_iter(*textured)
  resumed.set_state(state)
  assert_batches_equal(take(resumed, 2), expected)


def test_worker_processes_give_in_process_batches(textured):
  expected = take(train_iter(*textured), 5)
  it = train_iter(*textured, num_workers=2)
  try:
    got = take(it, 3)
    state = it.get_state()
    got += take(it, 2)
  finally:
    it.close()
  assert_batches_equal(got, expected)
  # A worker iterator's state has per-worker parts: resume with as many.
  resumed = train_iter(*textured, num_workers=2)
  try:
    resumed.set_state(state)
    assert_batches_equal(take(resumed, 2), expected[3:])
  finally:
    resumed.close()


def test_global_batch_must_split_over_hosts(textured):
  with pytest.raises(data.DataError, match="not divisible"):
    train_iter(*textured, global_batch_size=5, process_count=2)


def test_eval_iterator_in_order_full_size(textured):
  paired, _, _ = textured
  batches = list(data.make_eval_iterator(paired, value_range="minus_one_one"))
  assert len(batches) == 5
  for i, b in enumerate(batches):
    assert b["gt"].shape == (1, 20 + 4 * i, 36, 3)
    expected = np.asarray(Image.open(paired.paths[i][1]), np.float32)
    np.testing.assert_allclose(b["gt"][0], expected / 127.5 - 1, atol=1e-6)
    np.testing.assert_allclose(b["lq"] - b["gt"], 14 / 255, atol=1e-6)


def test_eval_iterator_fixed_noise_on_clean_source():
  clean = data.SyntheticClean(3, (16, 20), seed=0)
  a = list(data.make_eval_iterator(clean, sigma=25, seed=1))
  b = list(data.make_eval_iterator(clean, sigma=25, seed=1))
  assert_batches_equal(a, b)
  for x in a:
    assert abs((x["lq"] - x["gt"]).std() * 255 - 25) < 3
  with pytest.raises(data.DataError, match="no ground truth"):
    data.make_eval_iterator(clean)


def test_synthetic_clean_is_deterministic_and_varied():
  a, b = data.SyntheticClean(4, 32, seed=0), data.SyntheticClean(4, 32, seed=0)
  np.testing.assert_array_equal(a[2]["image"], b[2]["image"])
  assert a[2]["image"].shape == (32, 32, 3) and a[2]["image"].dtype == np.uint8
  assert not np.array_equal(a[0]["image"], a[1]["image"])
  assert a[0]["image"].std() > 10


# --------------------------------------------------------------------------
# Validation: every bad-data case is a DataError naming the offending path.


def _bad_case(tmp_path, case):
  """Three good pairs and images, then one defect: (source, texts to name)."""
  lq, gt, real = tmp_path / "lq", tmp_path / "gt", tmp_path / "real"
  for i in range(3):
    for folder in (lq, gt, real):
      write_png(folder / f"{i}.png", const_image(i, 20, 20))
  if case == "corrupt_png":
    path = write_png(real / "bad.png", np.random.default_rng(0).integers(
        0, 256, (32, 32, 3), np.uint8))
    blob = open(path, "rb").read()
    open(path, "wb").write(blob[:len(blob) // 2])
    return data.ImageFolder(real), [path, "unreadable"]
  if case == "zero_byte":
    (real / "empty.jpg").write_bytes(b"")
    return data.ImageFolder(real), [str(real / "empty.jpg"), "unreadable"]
  if case == "not_an_image":
    (real / "notes.png").write_text("this is not a png\n")
    return data.ImageFolder(real), [str(real / "notes.png"), "unreadable"]
  if case == "too_small":
    path = write_png(real / "tiny.png", const_image(1, 20, 8))
    return data.ImageFolder(real), [path, "smaller than the 16x16 patch"]
  if case == "unmatched_stems":
    only_lq = write_png(lq / "x.png", const_image(1, 20, 20))
    only_gt = write_png(gt / "y.jpg", const_image(1, 20, 20))
    return data.PairedFolders(lq, gt), [only_lq, only_gt, "no file with"]
  if case == "size_mismatch":
    path = write_png(lq / "z.png", const_image(1, 20, 24))
    write_png(gt / "z.png", const_image(1, 20, 20))
    return data.PairedFolders(lq, gt), [path, "differs from its pair"]
  if case == "empty_folder":
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.txt").write_text("no images here")
    return data.ImageFolder(tmp_path / "empty"), [str(tmp_path / "empty"),
                                                  "no images"]
  if case == "missing_folder":
    return data.PairedFolders(lq, tmp_path / "nope"), [str(tmp_path / "nope"),
                                                       "does not exist"]
  assert case == "flist_entry_missing"
  (tmp_path / "train.flist").write_text("real/0.png\nreal/gone.png\n")
  return data.FlistSource(tmp_path / "train.flist"), [
      str(real / "gone.png"), "train.flist line 2"]


@pytest.mark.parametrize("case", [
    "corrupt_png", "zero_byte", "not_an_image", "too_small", "unmatched_stems",
    "size_mismatch", "empty_folder", "missing_folder", "flist_entry_missing"])
def test_bad_data_raises_data_error_naming_path(tmp_path, case):
  source, expected = _bad_case(tmp_path, case)
  with pytest.raises(data.DataError) as err:
    data.check_sources([source], min_size=16)
  message = str(err.value)
  assert repr(source) in message.splitlines()[0]
  for text in expected:
    assert text in message


def test_all_problems_reported_in_one_error(tmp_path):
  source, _ = _bad_case(tmp_path, "unmatched_stems")
  (tmp_path / "gt" / "0.png").write_bytes(b"")
  with pytest.raises(data.DataError) as err:
    train_iter(source, data.SyntheticClean(4, 32))
  lines = str(err.value).splitlines()
  assert lines[0].startswith("3 data problem(s) in PairedFolders(")
  assert len(lines) == 4
  assert any(str(tmp_path / "gt" / "0.png") in l for l in lines[1:])


def test_flist_paths_resolve_relative_absolute_and_cwd(tmp_path, monkeypatch):
  lists = tmp_path / "lists"
  a = write_png(lists / "rel" / "a.png", const_image(10))
  b = write_png(tmp_path / "abs" / "b.png", const_image(20))
  c = write_png(tmp_path / "cwd" / "imgs" / "c.png", const_image(30))
  (lists / "clean.flist").write_text(f"rel/a.png\n{b}\n\nimgs/c.png\n")
  monkeypatch.chdir(tmp_path / "cwd")
  src = data.FlistSource(lists / "clean.flist")
  assert src.paths == [a, b, os.path.abspath("imgs/c.png")]
  assert [int(src[i]["image"][0, 0, 0]) for i in range(3)] == [10, 20, 30]
  data.check_sources([src], min_size=16)
  # Pairs follow line order, not sorted order.
  (lists / "lq.flist").write_text("imgs/c.png\nrel/a.png\n")
  (lists / "gt.flist").write_text(f"{c}\n{a}\n")
  pairs = data.PairedFlists(lists / "lq.flist", lists / "gt.flist")
  assert [int(pairs[i]["gt"][0, 0, 0]) for i in range(2)] == [30, 10]
  data.check_sources([pairs], min_size=16)


def test_tfds_source_round_trip_without_tensorflow(tmp_path, real_ids):
  import tensorflow_datasets as tfds  # pylint: disable=g-import-not-at-top

  images = [np.random.default_rng(i).integers(0, 256, (18 + i, 20, 3),
                                              np.uint8) for i in range(4)]

  def png(pixels):  # Encoded with PIL: tfds needs TF to encode arrays.
    buf = io.BytesIO()
    Image.fromarray(pixels).save(buf, format="png")
    return buf.getvalue()

  class TinyClean(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    VERSION = tfds.core.Version("1.0.0")

    def _info(self):
      return tfds.core.DatasetInfo(builder=self, features=tfds.features.
                                   FeaturesDict({
                                       "image": tfds.features.Image(
                                           shape=(None, None, 3)),
                                       "gray": tfds.features.Image(
                                           shape=(None, None, 1)),
                                       "id": np.int64}))

    def _split_generators(self, dl_manager):
      return {"train": self._generate_examples()}

    def _generate_examples(self):
      for i, image in enumerate(images):
        yield i, {"image": png(image), "gray": png(image[..., 0]), "id": i}

  builder = TinyClean(data_dir=str(tmp_path / "tfds"),
                      file_format="array_record")
  builder.download_and_prepare()
  by_dir = data.TfdsSource(builder.data_dir, "train")
  by_name = data.TfdsSource("tiny_clean", "train",
                            data_dir=str(tmp_path / "tfds"))
  assert len(by_dir) == len(by_name) == 4
  got = sorted((by_dir[i]["image"] for i in range(4)), key=lambda x: x.shape)
  for image, expected in zip(got, images):
    np.testing.assert_array_equal(image, expected)
  np.testing.assert_array_equal(by_name[2]["image"], by_dir[2]["image"])
  gray = data.TfdsSource(builder.data_dir, "train", image_key="gray")[1]
  assert gray["image"].shape[2] == 3
  np.testing.assert_array_equal(gray["image"][..., 0], gray["image"][..., 2])
  np.testing.assert_array_equal(gray["image"][..., 0],
                                by_dir[1]["image"][..., 0])
  data.check_sources([by_dir], min_size=18)
  with pytest.raises(data.DataError, match="smaller than the 20x20"):
    data.check_sources([by_dir], min_size=20)
  with pytest.raises(data.DataError, match="no feature 'depth'"):
    data.check_sources([data.TfdsSource(builder.data_dir, "train",
                                        image_key="depth")], decode=False)
  batch = next(train_iter(real_ids, by_dir, by_name))
  assert batch["real_lq"].shape == (4, 16, 16, 3)
  assert "tensorflow" not in sys.modules
