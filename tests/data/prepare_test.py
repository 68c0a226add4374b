"""`dada-jax prepare`: the reference's windows, shards, manifest, resume, and
training from the shards, on small folders written by the tests."""

import dataclasses
import hashlib
import json
import os

import ml_collections as mlc
import numpy as np
from PIL import Image
import pytest

from conftest import RUNLOCAL
from dada_jax import cli
from dada_jax import config_lib
from dada_jax.data import build
from dada_jax.data import pipeline
from dada_jax.data import prepare
from dada_jax.data import presets
from dada_jax.data import shards
from dada_jax.data.common import DataError


def write_png(path, pixels):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(np.asarray(pixels, np.uint8)).save(path)
  return str(path)


def image(h, w, seed):
  """Smooth (fast to encode) pixels, distinct at every position < 241."""
  y, x = np.mgrid[0:h, 0:w]
  return np.stack([y % 251, x % 241, (y * 7 + x * 3 + seed) % 256], -1
                  ).astype(np.uint8)


def reference_windows(h, w, patch_size, overlap, p_max):
  """The reference's generate_patches_*.py loops, restated (numpy arange)."""
  if not (h > p_max and w > p_max):
    return [(0, 0, h, w)]
  w1 = list(np.arange(0, h - patch_size, patch_size - overlap)) + [
      h - patch_size]
  h1 = list(np.arange(0, w - patch_size, patch_size - overlap)) + [
      w - patch_size]
  return [(int(i), int(j), patch_size, patch_size) for i in w1 for j in h1]


def sha256(path):
  return hashlib.sha256(open(path, "rb").read()).hexdigest()


def folder_bytes(d):
  return {f: open(os.path.join(d, f), "rb").read() for f in sorted(
      os.listdir(d))}


def records(directory, image_key="image"):
  source = shards.PreparedShards(directory, image_key)
  assert not source.problems, source.problems
  return source, [source.record(i) for i in range(len(source))]


@pytest.mark.parametrize("name,h,w", [
    ("gopro", 720, 1280), ("gopro", 512, 512), ("gopro", 513, 1024),
    ("sidd_train", 3000, 5328), ("sidd_train", 896, 640),
    ("dfwb", 1356, 2040), ("dfwb", 801, 900), ("dfwb", 800, 2000),
    ("dfwb", 180, 180), ("sidd_val", 256, 256)])
def test_windows_are_the_reference_loops(name, h, w):
  p = presets.PRESETS[name]
  expected = reference_windows(h, w, p.patch_size or max(h, w), p.overlap,
                               p.min_side if p.patch_size else 10**9)
  assert presets.windows(h, w, p) == expected
  if name == "gopro" and h == 720:
    assert len(expected) == 8  # rows 0, 208; columns 0, 256, 512, 768


def test_an_image_smaller_than_the_window_is_refused():
  with pytest.raises(ValueError, match="smaller than the 512x512 window"):
    presets.windows(300, 900, presets.PRESETS["gopro"])


def test_natural_order():
  names = ["im10.png", "im2.png", "im1.png", "a.png"]
  assert sorted(names, key=presets.natural_key) == [
      "a.png", "im1.png", "im2.png", "im10.png"]


@pytest.fixture(scope="module")
def gopro(tmp_path_factory):
  """GoPro train/: 3 pairs of 600x900 (6 windows each), one unreadable."""
  root = tmp_path_factory.mktemp("inputs") / "GoPro"
  pairs = {}
  for i in (2, 10, 1):  # natural order: 1, 2, 10
    gt = image(600, 900, i)
    write_png(root / "target" / f"im{i}.png", gt)
    write_png(root / "input" / f"im{i}.png", 255 - gt)
    pairs[f"input/im{i}.png"] = (255 - gt, gt)
  write_png(root / "target" / "im5.png", image(600, 900, 5))
  (root / "input" / "im5.png").write_bytes(b"not a png")
  return root, pairs


def test_gopro_records_are_the_reference_crops(gopro, tmp_path, capsys):
  root, pairs = gopro
  out = tmp_path / "out"
  rc = cli.main(["prepare", "gopro", "--input", str(root), "--output",
                 str(out), "--shard-size", "7", "--no-progress"])
  err = capsys.readouterr().err
  assert rc == 1  # complete, but an input was skipped
  bad = os.path.join(root, "input", "im5.png")
  assert [l for l in err.splitlines() if "skipped" in l] == [
      f"dada-jax prepare: skipped {bad}: cannot read image: not an image "
      "file (or an unsupported format)"]

  source, recs = records(out)
  wins = reference_windows(600, 900, 512, 256, 0)
  assert len(wins) == 6 and len(source) == 18 and source.paired
  expected = [(name, win) for name in ("input/im1.png", "input/im2.png",
                                       "input/im10.png") for win in wins]
  assert [(m["input"], tuple(m["window"])) for m, _ in recs] == expected
  for (meta, (lq, gt)), (name, (y, x, h, w)) in zip(recs, expected):
    np.testing.assert_array_equal(lq, pairs[name][0][y:y + h, x:x + w])
    np.testing.assert_array_equal(gt, pairs[name][1][y:y + h, x:x + w])
  item = source[5]
  assert set(item) == {"lq", "gt"} and item["lq"].dtype == np.uint8

  m = json.loads((out / shards.MANIFEST).read_text())
  assert m["complete"] and m["records"] == 18 and m["paired"]
  assert m["patch"] == {"size": 512, "overlap": 256,
                        "cut_when_both_sides_over": 0}
  assert [s["records"] for s in m["shards"]] == [7, 7, 4]
  for s in m["shards"]:
    assert s["sha256"] == sha256(out / s["file"])
    assert s["bytes"] == os.path.getsize(out / s["file"])
  assert m["skipped"] == [{"path": bad, "reason": "cannot read image: not an "
                           "image file (or an unsupported format)"}]
  assert sorted(os.listdir(out)) == [
      "gopro-00000.array_record", "gopro-00001.array_record",
      "gopro-00002.array_record", "manifest.json"]

  lq_only = shards.PreparedShards(out, "lq")
  assert not lq_only.paired and set(lq_only[0]) == {"image"}
  np.testing.assert_array_equal(shards.PreparedShards(out, "gt")[3]["image"],
                                recs[3][1][1])


def test_dfwb_cuts_large_images_and_keeps_small_ones_whole(tmp_path):
  root = tmp_path / "Downloads"
  big, small = image(900, 820, 0), image(180, 180, 1)[..., 0]  # grayscale
  write_png(root / "DIV2K" / "0001.png", big)
  write_png(root / "BSD400" / "test_1.png", small)
  prepare.prepare("dfwb", root, tmp_path / "out", progress=False, log=print)
  source, recs = records(tmp_path / "out")
  assert not source.paired and len(source) == 5
  wins = reference_windows(900, 820, 512, 96, 800)
  assert [tuple(m["window"]) for m, _ in recs] == wins + [(0, 0, 180, 180)]
  for (_, (patch,)), (y, x, h, w) in zip(recs, wins):
    np.testing.assert_array_equal(patch, big[y:y + h, x:x + w])
  np.testing.assert_array_equal(recs[-1][1][0], np.stack([small] * 3, -1))
  m = json.loads((tmp_path / "out" / shards.MANIFEST).read_text())
  assert [p["path"] for p in m["listing_problems"]] == [
      str(root / "Flickr2K"), str(root / "WaterlooED")]


def small_gopro(monkeypatch):
  """gopro with 128 px windows, overlap 32: 60 per image (same code path)."""
  small = dataclasses.replace(presets.PRESETS["gopro"], patch_size=128,
                              overlap=32)
  monkeypatch.setitem(presets.PRESETS, "gopro", small)


class _Stop(Exception):
  pass


def test_interrupted_run_finishes_with_the_same_bytes(gopro, tmp_path,
                                                      monkeypatch):
  small_gopro(monkeypatch)
  root, _ = gopro
  run = lambda out, **kw: prepare.prepare("gopro", root, out, shard_size=40,
                                          progress=False, log=print, **kw)
  full = tmp_path / "full"
  run(full)
  expected = folder_bytes(full)
  assert len(expected) > 4  # several shards

  def stop(k):
    if k == 1:  # the next shard is half written when the process dies
      (tmp_path / "split" / ".gopro-00002.array_record.tmp").write_bytes(
          b"partial")
      raise _Stop
  with pytest.raises(_Stop):
    run(tmp_path / "split", after_shard=stop)
  left = json.loads((tmp_path / "split" / shards.MANIFEST).read_text())
  assert not left["complete"] and len(left["shards"]) == 2
  assert shards.PreparedShards(tmp_path / "split").problems  # unfinished
  written = []
  run(tmp_path / "split", after_shard=written.append)
  assert written[0] == 2  # shards 0 and 1 were kept, not rewritten
  assert folder_bytes(tmp_path / "split") == expected

  # A damaged shard is rewritten from its recorded start; the rest are kept.
  (full / "gopro-00001.array_record").write_bytes(b"damaged")
  written = []
  run(full, after_shard=written.append)
  assert written == [1] and folder_bytes(full) == expected


def test_bad_input_or_output_is_one_line_and_keeps_what_exists(
    gopro, tmp_path, capsys, monkeypatch):
  small_gopro(monkeypatch)
  root, _ = gopro
  out = tmp_path / "out"
  assert cli.main(["prepare", "gopro", "--input", str(root), "--output",
                   str(out), "--no-progress"]) == 1
  before = folder_bytes(out)
  capsys.readouterr()
  for args, message in [
      (["sidd_val", "--input", str(root)], "--input"),  # no input_crops/
      (["rain13k", "--input", str(root / "target")], "input/ is missing"),
      (["gopro", "--input", str(tmp_path / "nope")], "no such folder"),
      (["gopro", "--input", str(root), "--shard-size", "3"], "--shard-size"),
  ]:
    assert cli.main(["prepare", *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dada-jax prepare: error: ") and message in err
    assert len(err.strip().splitlines()) == 1
  # The same images read as another preset: the output refuses.
  (tmp_path / "val" / "input_crops").parent.mkdir()
  (tmp_path / "val" / "input_crops").symlink_to(root / "input")
  (tmp_path / "val" / "target_crops").symlink_to(root / "target")
  assert cli.main(["prepare", "sidd_val", "--input", str(tmp_path / "val"),
                   "--output", str(out)]) == 2
  assert "holds preset gopro, not sidd_val" in capsys.readouterr().err
  assert folder_bytes(out) == before
  (tmp_path / "other").mkdir()
  (tmp_path / "other" / "notes.txt").write_text("mine")
  assert cli.main(["prepare", "gopro", "--input", str(root), "--output",
                   str(tmp_path / "other")]) == 2
  assert "holds no manifest.json" in capsys.readouterr().err
  with pytest.raises(SystemExit) as e:
    cli.main(["prepare", "coco", "--input", str(root), "--output", str(out)])
  assert e.value.code == 2


def test_reader_reports_missing_and_resized_shards(gopro, tmp_path,
                                                   monkeypatch):
  small_gopro(monkeypatch)
  out = tmp_path / "out"
  prepare.prepare("gopro", gopro[0], out, shard_size=100, progress=False,
                  log=print)
  source = shards.PreparedShards(out)
  assert repr(source) == f"PreparedShards({str(out)!r})"
  assert source.check_item(0, 128) == []
  assert source.check_item(0, 129)
  (out / "gopro-00001.array_record").unlink()
  with open(out / "gopro-00000.array_record", "ab") as f:
    f.write(b"x")
  reasons = [p.reason for p in shards.PreparedShards(out).problems]
  assert any("missing" in r for r in reasons)
  assert any("the manifest says" in r for r in reasons)
  assert shards.PreparedShards(tmp_path / "nope").problems
  assert shards.PreparedShards(out, "gt").paired is False
  with pytest.raises(ValueError):
    shards.decode_record(b"DDAR\x01\x02" + b"\x00" * 3)


def stream(path, **fields):
  s = config_lib.base_config("denoise").data.syn
  s.update(kind="array_record", path=str(path), **fields)
  return s


def test_train_reads_the_shards(gopro, tmp_path, monkeypatch, capsys):
  small_gopro(monkeypatch)
  out = tmp_path / "out"
  prepare.prepare("gopro", gopro[0], out, shard_size=40, progress=False,
                  log=print)
  syn = build.build_source(stream(out), "config.data.syn")
  with pytest.raises(DataError, match="image_key=lq"):
    build.build_source(stream(out), "config.data.real")
  real = build.build_source(stream(out, image_key="lq"), "config.data.real")
  assert config_lib.stream_paired(stream(out))
  assert not config_lib.stream_paired(stream(out, image_key="lq"))
  assert config_lib.stream_problem(stream(out, image_key="x"), "s")
  c = config_lib.base_config("denoise")
  c.eval.update(kind="array_record", path=str(out))  # e.g. sidd_val
  config_lib.validate(c, eval_source=True)  # paired: no noise_sigma needed
  batch = next(iter(pipeline.make_train_dataset(
      syn, real, patch_size=16, global_batch_size=4, seed=0,
      process_index=1, process_count=2)))
  assert {k: v.shape for k, v in batch.items()} == {
      k: (2, 16, 16, 3) for k in ("syn_lq", "syn_gt", "real_lq")}

  work = tmp_path / "work"
  rc = cli.main([
      "train", "--config", RUNLOCAL, "--workdir", str(work),
      "--config.data.syn.kind=array_record", f"--config.data.syn.path={out}",
      "--config.data.real.kind=array_record", f"--config.data.real.path={out}",
      "--config.data.real.image_key=lq", "--config.data.patch_size=16",
      "--config.mesh=(('data',1),)", "--config.train.total_steps=2",
      "--config.train.eval_every=0", "--config.train.async_ckpt=False",
      "--config.train.tensorboard=False", "--no-compile-cache"])
  assert rc == 0, capsys.readouterr().err
  assert "final: loss/" in capsys.readouterr().out
