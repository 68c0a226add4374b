"""`dada-jax bench`: the figures a user compares runs by, and its errors."""

import json

import pytest

from conftest import RUNLOCAL
from dada_jax import cli
from dada_jax.bench import reference


def _fake_reference(path, *, mode, profile_dir, **kw):
  """Stands in for the PyTorch reference (tests/bench/reference_test.py
  times the real code path on a fake checkout)."""
  del path, kw
  return {"step_time_median_s": {"dda": 4.0, "vanilla": 0.5}[mode],
          "profile": {"seconds": {"conv forward": 1.0}, "wall_s": 4.0,
                      "cores_used": 1.5, "trace": profile_dir}}


def test_bench_writes_the_figures(tmp_path, capsys, monkeypatch):
  monkeypatch.setattr(reference, "time_reference_step", _fake_reference)
  out, profiles = tmp_path / "bench.json", tmp_path / "profile"
  rc = cli.main(["bench", "--config", RUNLOCAL, "--batch", "8", "--size", "32",
                 "--modes", "dda,vanilla", "--restore-sizes", "64",
                 "--steps", "2", "--warmup", "0", "--peak-tflops", "1",
                 "--json", str(out), "--profile", str(profiles),
                 "--torch-reference", str(tmp_path / "Noise-DA")])
  assert rc == 0
  report = json.loads(out.read_text())
  cases = [r["case"] for r in report["results"]]
  assert cases == ["train dda", "train vanilla", "restore 64²"]
  for key in ("step_time_median_s", "images_per_s", "compile_s",
              "flops_per_step"):
    assert key in report
  for r in report["results"]:
    assert 0 < r["step_time_min_s"] <= r["step_time_median_s"] <= (
        r["step_time_max_s"])
    assert r["images_per_s"] == pytest.approx(
        r["batch"] / r["step_time_median_s"])
  dda, vanilla = report["results"][:2]
  # XLA's cost analysis: DDA adds the critic (and a second restorer batch).
  assert dda["flops_per_step"] > 2 * vanilla["flops_per_step"] > 0
  assert dda["peak_fraction"] == pytest.approx(dda["tflops_per_s"] / 1.0)
  assert report["environment"]["num_devices"] == 8
  assert report["environment"]["networks"] == {
      "restorer": ["unet", 32_875], "critic": ["guided_diffusion", 829_219]}
  assert report["host_peak_bytes"] > 0
  table = capsys.readouterr().out
  assert "| train dda | float32 | 8 | 32 |" in table
  assert ("networks: restorer unet 32,875 params, critic guided_diffusion "
          "829,219 params") in table
  # --profile: a trace per train step, its time by op class.
  for r, mode in zip(report["results"][:2], ("dda", "vanilla")):
    seconds = r["profile"]["seconds"]
    assert (profiles / f"jax_{mode}_float32").is_dir()
    assert r["profile"]["trace"].startswith(str(profiles / f"jax_{mode}_"))
    for c in ("conv forward", "conv input-grad", "conv weight-grad"):
      assert seconds[c] > 0, (mode, seconds)
    assert r["profile"]["cores_used"] > 0
    assert seconds["CPU time in no op event"] >= 0  # Eigen convs on a CPU
  assert "RNG" in report["results"][0]["profile"]["seconds"]  # dropout
  assert "where the time goes: train dda, float32" in table
  assert "| conv weight-grad |" in table
  # --torch-reference: its median beside ours in the JSON, the ratio and the
  # reference's profile in the tables.
  assert report["reference_step_time_median_s"] == 4.0
  assert report["torch_reference"]["dda"]["profile"]["trace"] == str(
      profiles / "torch_dda")
  ratio = 4.0 / report["step_time_median_s"]
  assert f"| dda | 4.0000 | {report['step_time_median_s']:.4f} | float32 | " \
      f"{ratio:.2f}x |" in table
  assert "| conv forward |" in table and "| 1.00 | 100% |" in table


@pytest.mark.parametrize("flags, message", [
    (["--batch", "3"], "--batch 3: must be a multiple of the 8 devices"),
    (["--modes", "dda,fast"], "--modes dda,fast: unknown ['fast']"),
    (["--dtypes", "float16"], "--dtypes float16"),
    (["--size", "30"], "--size 30: must be a multiple"),
    (["--restore-sizes", "5x5"], "--restore-sizes '5x5'"),
])
def test_bad_flags_are_one_line_errors(flags, message, capsys):
  rc = cli.main(["bench", "--config", RUNLOCAL, "--batch", "8", "--size",
                 "32", "--restore-sizes", "", "--steps", "1", *flags])
  err = capsys.readouterr().err.strip()
  assert rc == 2
  assert message in err and len(err.splitlines()) == 1
