"""`dada-jax bench`: the figures a user compares runs by, and its errors."""

import json

import pytest

from conftest import RUNLOCAL
from dada_jax import cli


def test_bench_writes_the_figures(tmp_path, capsys):
  out = tmp_path / "bench.json"
  rc = cli.main(["bench", "--config", RUNLOCAL, "--batch", "8", "--size", "32",
                 "--modes", "dda,vanilla", "--restore-sizes", "64",
                 "--steps", "2", "--warmup", "0", "--peak-tflops", "1",
                 "--json", str(out)])
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
  assert report["host_peak_bytes"] > 0
  table = capsys.readouterr().out
  assert "| train dda | float32 | 8 | 32 |" in table


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
