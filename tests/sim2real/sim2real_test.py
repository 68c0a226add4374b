"""The sim2real benchmark: branch configs, the ablations' objectives, the
report, and a CI-sized run of the whole command."""

import json

import jax
import numpy as np
import pytest

from conftest import DEMO
from conftest import DEMO_RUNLOCAL
from conftest import RUNLOCAL
from conftest import cached_config
from conftest import restored_params
from conftest import train_config
from dada_jax import cli
from dada_jax import models
from dada_jax import objective
from dada_jax import train
from dada_jax.sim2real import benchmark as sim2real
from dada_jax.sim2real import report as sim2real_report


@pytest.fixture(scope="module")
def demo():
  return cached_config(DEMO_RUNLOCAL)


def test_branch_configs(demo):
  dda = sim2real.method_config(demo, "dda")
  assert dda.objective.mode == "dda"
  assert dda.objective.channel_shuffle and dda.objective.negatives
  assert sim2real.method_config(demo, "vanilla").objective.mode == "vanilla"
  assert not sim2real.method_config(demo, "no_shuffle").objective.channel_shuffle
  assert not sim2real.method_config(demo, "no_negatives").objective.negatives
  oracle = sim2real.method_config(demo, "oracle")
  # Supervised on the real training photos' degradation (not the test set's).
  assert oracle.objective.mode == "vanilla"
  assert (oracle.data.syn.kind, oracle.data.syn.domain) == ("simulated", "real")
  assert oracle.data.syn.split == "train" and oracle.data.syn.paired
  assert oracle.data.syn.seed == demo.data.real.seed != demo.eval.seed
  assert demo.objective.mode == "dda"  # the base config is not modified
  with pytest.raises(sim2real.Sim2RealError, match="unknown 'fancy'"):
    sim2real.method_config(demo, "fancy")


def _loss_terms(config, swap):
  params = models.init_params(config, jax.random.key(0))
  rng = np.random.default_rng(0)
  shape = (4, 16, 16, 3)
  batch = {k: rng.uniform(0, 1, shape).astype(np.float32)
           for k in ("syn_lq", "syn_gt", "real_lq")}
  draws = objective.sample_draws(jax.random.key(1), shape, 1000)
  draws = draws.replace(swap=np.asarray(swap), negswap=np.asarray(swap))
  _, terms = objective.make_objective(config)(
      params, batch, jax.random.key(2), 0.2, draws=draws, train=False)
  return terms


def test_ablation_objectives(demo):
  no_shuffle = sim2real.method_config(demo, "no_shuffle")
  dda = sim2real.method_config(demo, "dda")
  mixed = [True, False, True, True]
  # Without the shuffle the masks are ignored: the synthetic output always
  # takes the first slot, i.e. the shuffled loss with all-False masks.
  np.testing.assert_allclose(
      _loss_terms(no_shuffle, mixed).total,
      _loss_terms(dda, [False] * 4).total, rtol=1e-6)
  assert abs(float(_loss_terms(dda, mixed).mse) -
             float(_loss_terms(dda, [False] * 4).mse)) > 1e-7
  no_neg = _loss_terms(sim2real.method_config(demo, "no_negatives"), mixed)
  full = _loss_terms(dda, mixed)
  assert float(no_neg.triplet) == 0.0
  np.testing.assert_allclose(no_neg.diffusion, no_neg.mse, rtol=1e-7)
  np.testing.assert_allclose(no_neg.mse, full.mse, rtol=1e-6)


def _seed(seed, gains):
  runs = [{"method": m, "seed": seed, "psnr_real": 20.0 + g,
           "ssim_real": 0.5, "psnr_syn": 30.0 - g / 10, "ssim_syn": 0.8,
           "curve": [{"step": 0, "psnr_real": 20.0}]}
          for m, g in (("vanilla", 0.0), ("dda", gains))]
  return {"seed": seed, "runs": runs, "warmup": {
      "psnr_syn": 30.0, "linear_filter_psnr_syn": 28.0, "psnr_real": 20.0}}


def test_summary_statistics():
  seeds = [_seed(0, 0.5), _seed(1, 0.1), _seed(2, -0.3)]
  s = sim2real_report.summarize(seeds)
  psnr, std = s["methods"]["dda"]["psnr_real"]
  assert psnr == pytest.approx(20.1) and std == pytest.approx(0.4)
  d = s["dda_vs_vanilla"]
  assert d["psnr_real_gain"] == pytest.approx([0.5, 0.1, -0.3])
  assert d["mean_psnr_real_gain"] == pytest.approx(0.1)
  assert d["mean_psnr_syn_change"] == pytest.approx(-0.01)
  assert not d["every_seed_positive"]
  md = sim2real_report.markdown(seeds, s)
  assert "| dda | 20.10 ± 0.40 |" in md
  assert "every seed positive: no" in md


def test_smoke_run_writes_results(tmp_path, capsys):
  out = tmp_path / "s2r"
  rc = cli.main(["sim2real", "--config", DEMO + ":runlocal", "--seeds", "1",
                 "--warmup-steps", "2", "--steps", "2", "--eval-every", "1",
                 "--critic-warmup-steps", "1", "--probe-batches", "1",
                 "--methods", "vanilla,dda", "--output", str(out)])
  assert rc == 0
  results = json.loads((out / "results.json").read_text())
  keys = {"task", "method", "seed", "steps", "psnr_real", "ssim_real",
          "psnr_syn", "ssim_syn"}
  assert [r["method"] for r in results["runs"]] == ["vanilla", "dda"]
  for r in results["runs"]:
    assert keys <= set(r) and r["task"] == "denoise" and r["steps"] == 2
    assert 5 < r["psnr_real"] < 60 and 0 < r["ssim_real"] <= 1
    assert [p["step"] for p in r["curve"]] == [0, 1, 2]
  w = results["warmup"][0]
  assert w["beats_linear_filter"] == (w["psnr_syn"] > w["linear_filter_psnr_syn"])
  # The critic branch measures its gradient alignment at every curve point.
  dda = results["runs"][1]
  assert dda["critic_warmup_steps"] == 1
  assert all(-1 <= p["alignment"]["cos_diff_real"] <= 1 for p in dda["curve"])
  assert -1 <= dda["alignment_fresh_critic"]["cos_diff_real"] <= 1
  assert not any("alignment" in p for p in results["runs"][0]["curve"])
  assert set(results["summary"]["alignment"]) == {"dda"}
  for name in ("results.md", "psnr_vs_step.png", "comparison.png",
               "runs/seed_0.json"):
    assert (out / name).stat().st_size > 0
  printed = capsys.readouterr().out
  assert "| vanilla |" in printed and "Gradient alignment" in printed
  assert "warm-up restorer from" not in printed
  # A second run reuses the seed's cached warm-up restorer.
  assert len(list((out / "runs/warmup_seed_0").glob("*/params"))) == 1
  assert cli.main(["sim2real", "--config", DEMO + ":runlocal", "--seeds", "1",
                   "--warmup-steps", "2", "--steps", "1", "--methods",
                   "vanilla", "--output", str(out)]) == 0
  again = json.loads((out / "results.json").read_text())
  assert again["warmup"][0]["psnr_syn"] == w["psnr_syn"]
  # ... and keeps the branch it did not re-run.
  assert [(r["method"], r["steps"]) for r in again["runs"]] == [
      ("dda", 2), ("vanilla", 1)]
  assert "warm-up restorer from" in capsys.readouterr().out
  # --report-only re-aggregates what is on disk.
  (out / "results.md").unlink()
  assert cli.main(["sim2real", "--config", DEMO + ":runlocal", "--output",
                   str(out), "--report-only"]) == 0
  assert "| dda |" in (out / "results.md").read_text()


def test_bad_seeds_and_empty_report(tmp_path, capsys):
  assert cli.main(["sim2real", "--config", DEMO + ":runlocal", "--seeds",
                   "x", "--output", str(tmp_path)]) == 2
  assert "--seeds 'x'" in capsys.readouterr().err
  assert cli.main(["sim2real", "--config", DEMO + ":runlocal", "--output",
                   str(tmp_path / "empty"), "--report-only"]) == 2
  assert "no runs/seed_*.json" in capsys.readouterr().err


def test_warmup_cache_is_keyed_by_settings(demo, tmp_path):
  cache = str(tmp_path / "warm")
  rngs = jax.random.split(jax.random.key(0))
  first, cached = sim2real.warm_up(demo, 0, 2, *rngs, cache=cache)
  assert not cached
  again, cached = sim2real.warm_up(
      demo, 0, 2, *jax.random.split(jax.random.key(9)), cache=cache)
  assert cached
  for a, b in zip(jax.tree.leaves(first), jax.tree.leaves(again)):
    np.testing.assert_array_equal(a, b)  # loaded, not retrained from key 9
  other, cached = sim2real.warm_up(  # another lr: trained again
      demo, 0, 2, *jax.random.split(jax.random.key(9)), lr=1e-2, cache=cache)
  assert not cached
  assert any(not np.array_equal(a, b) for a, b in
             zip(jax.tree.leaves(first), jax.tree.leaves(other)))


def test_critic_warmup_leaves_the_restorer_alone(demo):
  cfg = sim2real.method_config(demo, "dda")
  params = models.init_params(cfg, jax.random.key(0))
  critic = sim2real.warm_up_critic(cfg, params, 2, jax.random.key(1),
                                   data_seed=0)
  moved = [not np.array_equal(a, b) for a, b in
           zip(jax.tree.leaves(critic), jax.tree.leaves(params["critic"]))]
  assert any(moved)


def test_bad_protocol_flags(tmp_path, capsys):
  for flags, message in ((["--warmup-lr", "-1"], "--warmup-lr -1.0"),
                         (["--critic-warmup-steps", "-2"],
                          "--critic-warmup-steps")):
    assert cli.main(["sim2real", "--config", DEMO + ":runlocal", "--output",
                     str(tmp_path), *flags]) == 2
    assert message in capsys.readouterr().err
  assert not (tmp_path / "runs" / "seed_0.json").exists()


def test_alignment_summary_uses_first_and_last_points():
  def point(step, cos):
    return {"step": step, "psnr_real": 20.0, "alignment": {
        "cos_pixel": 0.1, "cos_diff_syn": 0.2, "cos_diff_real": cos,
        "out_cos_real": 0.0, "norm_diff_real": 1.0, "norm_pixel": 4.0}}
  seeds = [_seed(s, 0.1) for s in range(2)]
  for s, (first, last) in zip(seeds, ((0.2, 0.6), (0.4, 0.8))):
    dda = s["runs"][1]
    dda["curve"] = [point(0, first), point(5, 0.0), point(10, last)]
    dda["alignment_fresh_critic"] = point(0, 0.0)["alignment"]
  table = sim2real_report.summarize(seeds)["alignment"]
  assert set(table) == {"dda"}
  assert table["dda"]["start"]["cos_diff_real"][0] == pytest.approx(0.3)
  assert table["dda"]["end"]["cos_diff_real"][0] == pytest.approx(0.7)
  assert table["dda"]["end"]["step"] == 10
  assert table["dda"]["fresh_critic"]["cos_diff_real"] == (0.0, 0.0)
  assert table["dda"]["end"]["diff_real_over_pixel"][0] == 0.25
  md = sim2real_report.markdown(seeds, sim2real_report.summarize(seeds))
  assert "| dda | 10 | 0.100 ± 0.000 | 0.200 ± 0.000 | 0.700 ± 0.141 |" in md


def test_a_branch_trains_exactly_like_train(tmp_path):
  """sim2real's branches run the trainer's own loop: with the same config,
  data seed and keys they reach the same params as `dada-jax train`."""
  config = train_config(3, spec=RUNLOCAL + ",mode=vanilla", ckpt_every=3,
                        log_every=3)
  train.train_and_evaluate(config, str(tmp_path))
  trained = restored_params(tmp_path, 3)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state = sim2real.train_branch(config, None, 3, init_rng=init_rng,
                                step_rng=step_rng, data_seed=config.seed)
  branch = jax.device_get(state["params"])
  assert jax.tree.structure(branch) == jax.tree.structure(trained)
  for a, b in zip(jax.tree.leaves(trained), jax.tree.leaves(branch)):
    np.testing.assert_array_equal(a, b)
