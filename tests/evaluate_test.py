"""Evaluation: paired sets, SIDD blocks, the trainer hook and the CLI."""

import math

import jax
import numpy as np
import pytest
import scipy.io

from dada_jax.torch_io import convert
from dada_jax import data
from dada_jax import evaluate
from dada_jax import image_io
from dada_jax import metrics
from dada_jax import predict
from dada_jax import sidd

# Two sizes (one compile each); "c" has input == target (PSNR inf at identity).
SIZES = {"a": (20, 28), "b": (24, 28), "c": (20, 28)}


def _clean(h, w, seed):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  img = np.stack([0.5 + 0.3 * np.sin(6 * xx + rng.uniform(0, 3) * yy),
                  0.5 + 0.3 * np.cos(5 * yy), xx * yy], -1)
  return np.clip(np.round(img * 255), 0, 255).astype(np.uint8)


def _noisy(gt, seed, sigma=20.0):
  rng = np.random.default_rng(seed)
  return np.clip(np.round(gt + rng.normal(0, sigma, gt.shape)), 0,
                 255).astype(np.uint8)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
  """({stem: (lq, gt)}, lq_dir, gt_dir) as PNGs."""
  root = tmp_path_factory.mktemp("pairs")
  (root / "lq").mkdir()
  (root / "gt").mkdir()
  out = {}
  for i, (stem, (h, w)) in enumerate(SIZES.items()):
    gt = _clean(h, w, i)
    lq = gt if stem == "c" else _noisy(gt, 10 + i)
    image_io.write_png(root / "lq" / f"{stem}.png", lq)
    image_io.write_png(root / "gt" / f"{stem}.png", gt)
    out[stem] = (lq, gt)
  return out, root / "lq", root / "gt"


def _zeros(params):
  return jax.tree.map(np.zeros_like, params)


def _direct(config, params, pairs_, preset, stems=None):
  per = []
  for stem in stems or sorted(pairs_):
    lq, gt = pairs_[stem]
    restored = predict.restore_array(
        config, params, image_io.to_float(lq, "zero_one"))
    per.append(metrics.evaluate_pair(restored, gt, preset, "zero_one"))
  psnrs = [m["psnr"] for m in per if math.isfinite(m["psnr"])]
  return np.mean(psnrs), np.mean([m["ssim"] for m in per])


def test_paired_matches_direct_and_writes_grid(small, small_params, pairs,
                                               tmp_path):
  pairs_, lq_dir, gt_dir = pairs
  params = small_params["restorer"]
  grid_path = tmp_path / "grid.png"
  res = evaluate.evaluate_paired(
      small, params, data.PairedFolders(lq_dir, gt_dir), preset="rgb",
      samples_path=grid_path, num_samples=2, output_dir=tmp_path / "out")
  psnr, ssim = _direct(small, params, pairs_, "rgb")
  assert res["num_images"] == 3
  np.testing.assert_allclose([res["psnr"], res["ssim"]], [psnr, ssim],
                             rtol=1e-6)
  # Rows a, b; panels cropped to the smallest side (20): [2*20, 3*20].
  grid = image_io.read_rgb8(grid_path)
  assert grid.shape == (40, 60, 3)
  lq_b, gt_b = pairs_["b"]
  np.testing.assert_array_equal(grid[20:, :20], lq_b[2:22, 4:24])
  np.testing.assert_array_equal(grid[20:, 40:], gt_b[2:22, 4:24])
  restored_a = image_io.read_rgb8(tmp_path / "out" / "a.png")
  np.testing.assert_array_equal(grid[:20, 20:40], restored_a[:, 4:24])
  assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [
      "a.png", "b.png", "c.png"]


def test_zero_restorer_is_identity_and_inf_psnr_left_out(small, small_params,
                                                         pairs):
  pairs_, lq_dir, gt_dir = pairs
  res = evaluate.evaluate_paired(
      small, _zeros(small_params["restorer"]),
      data.PairedFolders(lq_dir, gt_dir), preset="rgb")
  direct = [metrics.evaluate_pair(*pairs_[s], "rgb") for s in "abc"]
  assert math.isinf(direct[2]["psnr"])
  np.testing.assert_allclose(res["psnr"], np.mean(
      [direct[0]["psnr"], direct[1]["psnr"]]), rtol=1e-9)
  np.testing.assert_allclose(res["ssim"], np.mean(
      [m["ssim"] for m in direct]), rtol=1e-9)


def test_max_images_and_presets(small, small_params, pairs):
  pairs_, lq_dir, gt_dir = pairs
  params = small_params["restorer"]
  source = data.PairedFolders(lq_dir, gt_dir)
  rgb = evaluate.evaluate_paired(small, params, source, preset="rgb",
                                 max_images=1)
  y = evaluate.evaluate_paired(small, params, source, preset="y",
                               max_images=1)
  assert rgb["num_images"] == y["num_images"] == 1
  np.testing.assert_allclose(
      [rgb["psnr"], y["psnr"]],
      [_direct(small, params, pairs_, p, ["a"])[0] for p in ("rgb", "y")],
      rtol=1e-6)
  assert abs(rgb["psnr"] - y["psnr"]) > 0.1


def test_clean_only_source_gets_seeded_awgn(small, small_params, pairs):
  _, _, gt_dir = pairs
  config = small.copy_and_resolve_references()
  source = data.ImageFolder(gt_dir)
  with pytest.raises(data.DataError, match="no ground truth"):
    evaluate.evaluate_paired(config, small_params["restorer"], source)
  config.eval.noise_sigma = 25.0
  zeros = _zeros(small_params["restorer"])
  runs = [evaluate.evaluate_paired(config, zeros, source) for _ in range(2)]
  assert runs[0] == runs[1]
  # Identity on gt + N(0, 25): PSNR ~ 20 log10(255 / 25) (a bit more: clip).
  assert 20.0 < runs[0]["psnr"] < 21.5


@pytest.fixture(scope="module")
def sidd_files(tmp_path_factory):
  root = tmp_path_factory.mktemp("sidd")
  gt = np.stack([np.stack([_clean(32, 32, 10 * i + k) for k in range(3)])
                 for i in range(2)])
  noisy = _noisy(gt, 1)
  scipy.io.savemat(root / "noisy.mat", {"ValidationNoisyBlocksSrgb": noisy})
  scipy.io.savemat(root / "gt.mat", {"ValidationGtBlocksSrgb": gt})
  return noisy, gt, root / "noisy.mat", root / "gt.mat"


def test_sidd_batches_match_restore_array(small, small_params, sidd_files,
                                          tmp_path, monkeypatch):
  noisy, gt, noisy_path, gt_path = sidd_files
  params = small_params["restorer"]
  shapes = []
  compiled = predict._compiled_restore  # pylint: disable=protected-access

  def recording(restorer):
    fn = compiled(restorer)
    return lambda p, x: shapes.append(x.shape) or fn(p, x)

  monkeypatch.setattr(predict, "_compiled_restore", recording)
  res = evaluate.evaluate_sidd(small, params, noisy_path, gt_path,
                               output_dir=tmp_path, batch_size=4,
                               samples_path=tmp_path / "s.png", num_samples=3)
  monkeypatch.undo()
  assert res["num_blocks"] == 6
  assert shapes == [(4, 32, 32, 3)] * 2  # 6 blocks: the last batch padded
  out = sidd.read_denoised(tmp_path / "Idenoised.mat")
  assert out.shape == (2, 3, 32, 32, 3) and out.dtype == np.float32
  per = []
  for i, k, block in sidd.iter_blocks(noisy):
    want = np.clip(predict.restore_array(
        small, params, image_io.to_float(block, "zero_one")), 0, 1)
    np.testing.assert_allclose(out[i, k], want, atol=1e-5)
    per.append(metrics.evaluate_pair(want, gt[i, k], "sidd_matlab",
                                     "zero_one"))
  np.testing.assert_allclose(
      [res["psnr"], res["ssim"]],
      [np.mean([m["psnr"] for m in per]), np.mean([m["ssim"] for m in per])],
      rtol=1e-5)
  assert image_io.read_rgb8(tmp_path / "s.png").shape == (96, 96, 3)


def test_sidd_zero_restorer_identity_and_no_gt(small, small_params,
                                               sidd_files):
  noisy, gt, _, _ = sidd_files
  zeros = _zeros(small_params["restorer"])
  res = evaluate.evaluate_sidd(small, zeros, noisy, gt, batch_size=4,
                               max_images=1)
  want = [metrics.evaluate_pair(noisy[0, k], gt[0, k], "sidd_matlab")
          for k in range(3)]
  assert res["num_blocks"] == 3
  np.testing.assert_allclose(res["psnr"], np.mean([m["psnr"] for m in want]),
                             rtol=1e-6)
  assert evaluate.evaluate_sidd(small, zeros, noisy, batch_size=4) == {
      "num_blocks": 6}
  with pytest.raises(sidd.SiddError, match="do not match"):
    evaluate.evaluate_sidd(small, zeros, noisy, gt[:1])


def test_build_eval(small, small_params, pairs, sidd_files, tmp_path):
  _, lq_dir, gt_dir = pairs
  config = small.copy_and_resolve_references()
  assert evaluate.build_eval(config) is None
  config.eval.update(kind="paired_folders", path=str(tmp_path / "missing"),
                     gt_path=str(gt_dir))
  with pytest.raises(data.DataError, match="missing: folder does not exist"):
    evaluate.build_eval(config)
  config.eval.update(path=str(lq_dir), max_images=2, num_samples=1)
  eval_fn = evaluate.build_eval(config)
  params = small_params["restorer"]
  res = eval_fn(params, step=5, workdir=str(tmp_path / "w"))
  assert res == evaluate.evaluate_paired(
      config, params, data.PairedFolders(lq_dir, gt_dir), max_images=2)
  grid = image_io.read_rgb8(tmp_path / "w" / "samples" / "step_0000005.png")
  assert grid.shape == (20, 60, 3)
  config.eval.update(kind="sidd_mat", path=str(tmp_path / "no.mat"))
  with pytest.raises(data.DataError, match="no.mat: no such file"):
    evaluate.build_eval(config)
  config.eval.update(path=str(sidd_files[2]), gt_path=str(sidd_files[3]),
                     max_images=1)
  assert evaluate.evaluate_sidd(config, params, sidd_files[0], sidd_files[1],
                                max_images=1) == evaluate.build_eval(config)(
                                    params, step=6, workdir=str(tmp_path))
  config.eval.kind = "folder"
  with pytest.raises(ValueError, match="noise_sigma"):
    evaluate.build_eval(config)


def test_cli_run(small, small_params, pairs, sidd_files, tmp_path, capsys):
  _, lq_dir, gt_dir = pairs
  ckpt = tmp_path / "restorer.npz"
  np.savez(ckpt, **convert.state_dict_from_params(
      {"restorer": small_params["restorer"]}))
  assert evaluate.run(
      small, checkpoint=str(ckpt), input=str(lq_dir), target=str(gt_dir),
      preset="y", output=str(tmp_path / "o"), max_images=2) == 0
  want = evaluate.evaluate_paired(small, small_params["restorer"],
                                  data.PairedFolders(lq_dir, gt_dir),
                                  preset="y", max_images=2)
  lines = capsys.readouterr().out.strip().splitlines()
  assert lines[0] == "| set | preset | images | PSNR | SSIM |"
  assert lines[2] == (f"| {lq_dir} | y | 2 | {want['psnr']:.2f} | "
                      f"{want['ssim']:.4f} |")
  assert (tmp_path / "o" / "samples.png").is_file()
  assert (tmp_path / "o" / "b.png").is_file()

  assert evaluate.run(small, checkpoint=str(ckpt),
                      sidd_noisy=str(sidd_files[2]),
                      output=str(tmp_path / "s")) == 0
  assert "| noisy.mat | sidd_matlab | 6 blocks | - | - |" in (
      capsys.readouterr().out)
  assert (tmp_path / "s" / "Idenoised.mat").is_file()

  for kwargs, match in [({"input": str(lq_dir)}, "--input and --target"),
                        ({"input": "a.flist", "target": str(gt_dir)},
                         "two folders or two .flist"),
                        ({}, "nothing to evaluate")]:
    with pytest.raises(evaluate.EvalError, match=match):
      evaluate.run(small, checkpoint=str(ckpt), **kwargs)
