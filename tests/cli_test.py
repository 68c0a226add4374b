"""The dada-jax command line, end to end on generated images."""

import os
import subprocess
import sys

import jax
import numpy as np
import pytest
from PIL import Image

from conftest import REPO
from conftest import SMALL_ARGS
from dada_jax import cli
from dada_jax import image_io
from dada_jax import predict

torch = pytest.importorskip(
    "torch", reason="torch (the [test] extra) runs the torch cross-checks")

SMALL = SMALL_ARGS


@pytest.fixture(scope="module")
def pth_file(tmp_path_factory, ref_state):
  path = tmp_path_factory.mktemp("ckpt") / "200_Network_ema.pth"
  torch.save({k: torch.from_numpy(v) for k, v in ref_state.items()}, path)
  return path


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
  d = tmp_path_factory.mktemp("inputs")
  rng = np.random.default_rng(0)
  rgb = rng.integers(0, 256, (40, 52, 3), dtype=np.uint8)
  Image.fromarray(rgb).save(d / "a_rgb.png")
  Image.fromarray(rgb[..., 0]).save(d / "b_gray.png")
  Image.fromarray(np.dstack([rgb, rgb[..., :1]])).save(d / "c_rgba.png")
  big = rng.integers(0, 256, (150, 200, 3), dtype=np.uint8)
  Image.fromarray(big).save(d / "d_large.jpg", quality=95)
  (d / "e_broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
  return d


def test_convert_restore_export(tmp_path, pth_file, inputs, ref_state, small,
                                small_params, capsys):
  converted = tmp_path / "converted"
  assert cli.main(["convert", "--torch-checkpoint", str(pth_file), "--output",
                   str(converted)] + SMALL) == 0
  assert "critic 829,219 params, restorer 130,259 params" in (
      capsys.readouterr().out)

  out = tmp_path / "restored"
  code = cli.main(["restore", "--checkpoint", str(converted), "--input",
                   str(inputs), "--output", str(out)] + SMALL)
  captured = capsys.readouterr()
  assert code == 1  # one input is broken; every other one is restored
  assert sorted(os.listdir(out)) == ["a_rgb.png", "b_gray.png", "c_rgba.png",
                                     "d_large.png"]
  assert "e_broken.png" in captured.err and "1 of 5 inputs failed" in captured.err
  assert "alpha dropped" in captured.out and "grayscale -> RGB" in captured.out

  # Pixels are exactly x + G(x) of the converted reference model; the large
  # image went through the tiled path.
  for name, src in (("a_rgb", "a_rgb.png"), ("d_large", "d_large.jpg")):
    x = image_io.to_float(image_io.read_rgb8(inputs / src), "zero_one")
    want = predict.restore_array(small, small_params["restorer"], x,
                                 tile=64 if name == "d_large" else 0,
                                 overlap=16)
    np.testing.assert_array_equal(image_io.read_rgb8(out / f"{name}.png"),
                                  image_io.to_uint8(want, "zero_one"))

  # The .pth restores to the same pixels as the converted directory.
  out2 = tmp_path / "restored_pth"
  cli.main(["restore", "--checkpoint", str(pth_file), "--input",
            str(inputs / "a_rgb.png"), "--output", str(out2)] + SMALL)
  np.testing.assert_array_equal(image_io.read_rgb8(out2 / "a_rgb.png"),
                                image_io.read_rgb8(out / "a_rgb.png"))

  # --self-ensemble: the mean of the 8 flipped/rotated restorations.
  out3 = tmp_path / "restored_x8"
  assert cli.main(["restore", "--checkpoint", str(converted), "--input",
                   str(inputs / "a_rgb.png"), "--output", str(out3),
                   "--self-ensemble"] + SMALL) == 0
  x = image_io.to_float(image_io.read_rgb8(inputs / "a_rgb.png"), "zero_one")
  want = predict.restore_array(small, small_params["restorer"], x, tile=0,
                               self_ensemble=True)
  np.testing.assert_array_equal(image_io.read_rgb8(out3 / "a_rgb.png"),
                                image_io.to_uint8(want, "zero_one"))

  exported = tmp_path / "back.pth"
  assert cli.main(["export", "--checkpoint", str(converted), "--output",
                   str(exported)] + SMALL) == 0
  back = torch.load(exported, weights_only=True)
  assert sorted(back) == sorted(ref_state)
  for k, v in ref_state.items():
    np.testing.assert_allclose(back[k].numpy(), v, rtol=1e-6, err_msg=k)


@pytest.mark.parametrize("args,message", [
    (["--config", "configs/nope.py"], "--config: no such file"),
    (SMALL + ["--config.restorer.dpth=3"], "--config.restorer.dpth: unknown field"),
    (SMALL + ["--config.restorer.depth=deep"], "expected a value of type int"),
    (SMALL + ["--config.objective.mode=gan"], "config.objective.mode='gan'"),
    (SMALL + ["--config.diffusion.schedule=sigmoid"],
     "config.diffusion.schedule='sigmoid'"),
    (SMALL[:1] + [str(REPO / "configs/denoise.py")], "does not fit the config"),
])
def test_bad_flags_give_one_clear_line(tmp_path, pth_file, args, message,
                                       capsys):
  code = cli.main(["convert", "--torch-checkpoint", str(pth_file),
                   "--output", str(tmp_path / "o")] + args)
  err = capsys.readouterr().err.strip()
  assert code == 2 and message in err and len(err.splitlines()) == 1, err
  assert not (tmp_path / "o").exists()


def test_restore_refuses_colliding_stems(tmp_path, pth_file, capsys):
  for ext in ("png", "jpg"):
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / f"x.{ext}")
  code = cli.main(["restore", "--checkpoint", str(pth_file), "--input",
                   str(tmp_path), "--output", str(tmp_path / "o")] + SMALL)
  assert code == 2 and "sharing a stem" in capsys.readouterr().err
  assert not (tmp_path / "o").exists()


def test_console_entry_point_exit_status(tmp_path):
  """The installed `dada-jax` script (here via -m) reports and exits non-zero."""
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "x.png")
  proc = subprocess.run(
      [sys.executable, "-m", "dada_jax.cli", "restore", "--checkpoint",
       str(tmp_path / "missing.pth"), "--input", str(tmp_path), "--output",
       str(tmp_path / "o")] + SMALL, capture_output=True, text=True,
      check=False, cwd=REPO)
  assert proc.returncode == 2
  assert proc.stderr.strip().endswith("missing.pth: no such file or directory")


@pytest.mark.parametrize("flags,cached", [([], True),
                                          (["--no-compile-cache"], False)])
def test_commands_keep_compiled_programs_unless_told_not_to(
    tmp_path, monkeypatch, flags, cached):
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  session_cache = jax.config.jax_compilation_cache_dir
  jax.config.update("jax_compilation_cache_dir", None)
  try:
    code = cli.main(["export", "--checkpoint", str(tmp_path / "ckpt"),
                     "--output", str(tmp_path / "y.txt")] + flags + SMALL)
    in_use = jax.config.jax_compilation_cache_dir
  finally:
    jax.config.update("jax_compilation_cache_dir", session_cache)
  assert code == 2  # the .txt output is refused after the cache is set up
  want = str(tmp_path / "dada_jax" / "xla") if cached else None
  assert in_use == want
