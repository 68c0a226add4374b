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
from dada_jax.data import train_data
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
  # Supervised on the real stream's own pairs: the training photos (never the
  # test set), rendered like every other stream.
  assert oracle.objective.mode == "vanilla"
  assert (oracle.data.syn.kind, oracle.data.syn.domain) == ("rendered", "real")
  assert oracle.data.syn.split == "train" and oracle.data.syn.paired
  assert oracle.data.syn.seed == demo.data.real.seed != demo.eval.seed
  # The control: a second, independent synthetic stream in the real slot.
  control = sim2real.method_config(demo, "control")
  assert control.objective.mode == "dda"
  assert (control.data.real.domain, control.data.real.awgn) == ("clean", True)
  assert control.data.real.seed not in (demo.data.syn.seed,
                                        demo.data.real.seed)
  assert control.data.syn == demo.data.syn
  dda_ex = sim2real.method_config(demo, "dda_ex")
  assert dda_ex.objective.mode == "dda_ex"
  assert (dda_ex.data.ref.kind, dda_ex.data.ref.domain) == ("rendered",
                                                            "clean")
  assert demo.objective.mode == "dda"  # the base config is not modified
  with pytest.raises(sim2real.Sim2RealError, match="unknown 'fancy'"):
    sim2real.method_config(demo, "fancy")


def test_control_stream_is_synthetic_noise_on_other_renders(demo):
  """The control's real_lq is AWGN on clean renders (unclipped, not 8-bit),
  drawn apart from the synthetic stream's."""
  c = sim2real.method_config(demo, "control")
  c.data.update(patch_size=16, batch_size=2)
  batch = next(train_data.make_train_data(c)[0])
  real = batch["real_lq"]
  assert real.shape == (2, 16, 16, 3)
  assert not np.allclose(real * 255, np.round(real * 255), atol=1e-3)
  assert not np.allclose(real, batch["syn_lq"])


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


def _seed(seed, gains, blocks=4):
  """A seed's result as run_seed saves it: vanilla and dda, per-block PSNRs
  of dda = vanilla + gains (oracle + 2 dB when asked)."""
  base = 20.0 + np.arange(blocks, dtype=float)

  def run(m, g):
    return {"method": m, "seed": seed, "psnr_real": float((base + g).mean()),
            "psnr_syn": 30.0 - g / 10, "psnr_val": 21.0 + g,
            "raw": {"psnr_real": 20.0 + g, "psnr_val": 21.0 + g},
            "blocks": {"test": list(base + g), "validation": list(base + g),
                       "syn_test": list(base + 10 - g / 10)},
            "curve": [{"step": 0, "psnr_real": 20.0}]}

  return {"seed": seed, "protocol": "branch",
          "runs": [run("vanilla", 0.0), run("dda", gains),
                   run("oracle", 2.0)],
          "warmup": {"psnr_syn": 30.0, "psnr_real": 20.0, "psnr_val": 21.0},
          "gate": {"headroom_val": 2.5, "go": True,
                   "blocks_vanilla": list(base),
                   "blocks_oracle": list(base + 2.5)}}


def test_summary_statistics():
  seeds = [_seed(0, 0.5), _seed(1, 0.1), _seed(2, -0.3)]
  s = sim2real_report.summarize(seeds)
  psnr, std = s["methods"]["dda"]["psnr_real"]
  assert psnr == pytest.approx(21.6) and std == pytest.approx(0.4)
  d = s["gains_vs_vanilla"]["dda"]
  assert [p["mean"] for p in d["per_seed"]] == pytest.approx([0.5, 0.1, -0.3])
  assert d["mean"] == pytest.approx(0.1) and d["ci"][0] < 0 < d["ci"][1]
  assert d["syn"] == pytest.approx(-0.01)
  assert d["fraction_of_oracle"]["mean"] == pytest.approx(0.05)
  assert s["go_no_go"]["go"] and s["go_no_go"]["mean"] == pytest.approx(2.5)
  assert s["verdict"].startswith("DDA did not beat vanilla")
  md = sim2real_report.markdown(seeds, s)
  assert "| dda | 21.60 ± 0.40 |" in md
  assert "| dda − vanilla | +0.10 [" in md and "**GO**" in md
  # All seeds clearly positive, but a control that gains as much: DDA's gain
  # is regularization, and the verdict says so.
  seeds = [_seed(i, 0.5) for i in range(3)]
  for s_ in seeds:
    control = json.loads(json.dumps(s_["runs"][1]))
    control["method"] = "control"
    s_["runs"].append(control)
  s = sim2real_report.summarize(seeds)
  assert s["gains_vs_vanilla"]["dda"]["ci"] == pytest.approx((0.5, 0.5))
  assert s["dda_vs_control"]["mean"] == pytest.approx(0.0)
  assert s["verdict"].startswith("DDA beat vanilla, but not the control")



def test_dda_is_compared_with_its_branch_start():
  """A gain over vanilla can be vanilla drifting away from the warm-up: the
  report pairs DDA with the warm-up's own blocks where the seeds have them."""
  seeds = [_seed(i, 0.5) for i in range(2)]
  assert "dda_vs_start" not in sim2real_report.summarize(seeds)  # old runs
  for s_ in seeds:  # the warm-up 0.4 dB above vanilla's end, DDA 0.1 above it
    s_["warmup"]["blocks"] = {"test": list(20.4 + np.arange(4.0))}
  s = sim2real_report.summarize(seeds)
  assert s["dda_vs_start"]["mean"] == pytest.approx(0.1)
  assert s["gains_vs_vanilla"]["dda"]["mean"] == pytest.approx(0.5)
  assert "| dda − its start (the warm-up) | +0.10 [" in (
      sim2real_report.markdown(seeds, s))
  assert "against its own start (the warm-up) +0.10 dB [+0.10, +0.10]: it " \
      "moved beyond it" in s["verdict"]
  for s_ in seeds:  # DDA at the warm-up: vanilla lost 0.5 dB, DDA kept it
    s_["warmup"]["blocks"]["test"] = list(20.5 + np.arange(4.0))
  assert "not beyond it, the gain is what synthetic-only training lost" in (
      sim2real_report.summarize(seeds)["verdict"])


def test_smoke_run_writes_results(tmp_path, capsys):
  out = tmp_path / "s2r"
  common = ["sim2real", "--config", DEMO + ":runlocal", "--seeds", "1",
            "--warmup-steps", "2", "--output", str(out)]
  # Two warm-up steps leave no headroom: the go/no-go check stops the seed
  # before any method with a critic runs.
  assert cli.main(common + ["--steps", "1", "--methods", "vanilla,dda"]) == 0
  printed = capsys.readouterr().out
  assert "NO-GO" in printed and "dda:" not in printed
  first = json.loads((out / "results.json").read_text())
  assert [r["method"] for r in first["runs"]] == ["vanilla"]
  assert first["gate"][0]["go"] is False
  assert "**NO-GO**" in (out / "results.md").read_text()
  # The test blocks are named: photo, window, draw and seed of each.
  test_blocks = first["blocks"]["test"]
  assert {b["photo"] for b in test_blocks} == {"astronaut", "coffee",
                                                "monarch"}
  assert {"top", "left", "size", "draw", "seed", "input_psnr"} <= set(
      test_blocks[0])
  rc = cli.main(common + ["--steps", "2", "--eval-every", "1", "--no-gate",
                          "--critic-warmup-steps", "1", "--probe-batches", "1",
                          "--methods", "vanilla,dda"])
  assert rc == 0
  results = json.loads((out / "results.json").read_text())
  keys = {"task", "method", "seed", "steps", "protocol", "psnr_real",
          "psnr_syn", "psnr_val", "raw", "blocks"}
  assert [r["method"] for r in results["runs"]] == ["vanilla", "dda"]
  for r in results["runs"]:
    assert keys <= set(r) and r["task"] == "denoise" and r["steps"] == 2
    assert 5 < r["psnr_real"] < 60 and r["protocol"] == "branch"
    assert len(r["blocks"]["test"]) == len(test_blocks)
    assert r["psnr_real"] == pytest.approx(np.mean(r["blocks"]["test"]),
                                           abs=1e-3)
    assert [p["step"] for p in r["curve"]] == [0, 1, 2]
  # The critic branch measures its gradient alignment at every curve point.
  dda = results["runs"][1]
  assert dda["critic_warmup_steps"] == 1
  assert all(-1 <= p["alignment"][k] <= 1 for p in dda["curve"]
             for k in ("cos_diff_real", "cos_diff_real_kernels"))
  # Two steps: the branch's EMA is its raw weights (nothing of the warm-up).
  assert dda["ema_decay"] == 0.0
  assert -1 <= dda["alignment_fresh_critic"]["cos_diff_real"] <= 1
  assert not any("alignment" in p for p in results["runs"][0]["curve"])
  assert set(results["summary"]["alignment"]) == {"dda"}
  assert "dda" in results["summary"]["gains_vs_vanilla"]
  for name in ("results.md", "psnr_vs_step.png", "comparison.png",
               "runs/seed_0.json", "blocks.json"):
    assert (out / name).stat().st_size > 0
  printed = capsys.readouterr().out
  assert "| vanilla |" in printed and "Gradient alignment" in printed
  assert "| dda − vanilla |" in printed
  # The second run reused the seed's cached warm-up restorer.
  assert "warm-up restorer from" in printed
  assert len(list((out / "runs/warmup_seed_0").glob("*/params"))) == 2
  # A third run keeps the methods it does not re-run.
  assert cli.main(common + ["--steps", "1", "--methods", "vanilla",
                            "--no-gate"]) == 0
  again = json.loads((out / "results.json").read_text())
  assert [(r["method"], r["steps"]) for r in again["runs"]] == [
      ("dda", 2), ("vanilla", 1)]
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
                          "--critic-warmup-steps"),
                         (["--ramp-fraction", "0"], "--ramp-fraction 0"),
                         (["--protocol", "joint", "--methods", "dda"],
                          "go/no-go check needs vanilla and oracle"),
                         (["--seeds", "0"], "--seeds: no seed")):
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
  assert "| 0.000 ± 0.000 | n/a | n/a | 0.250 ± 0.000 |" in md  # old runs


def test_branch_ema_forgets_the_warm_up():
  """A branch's EMA ends with at most e^-3 of its start in it; long branches
  keep the config's decay."""
  for steps in (3, 40, 100, 300, 599, 700, 5000):
    decay = sim2real.branch_ema_decay(0.995, steps)
    assert decay ** steps <= np.exp(-3)
    assert decay == 0.995 if steps >= 700 else decay < 0.995
  assert sim2real.branch_ema_decay(0.995, 2) == 0.0


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


def test_joint_protocol_trains_every_method_from_scratch(tmp_path, capsys):
  out = tmp_path / "joint"
  assert cli.main(["sim2real", "--config", DEMO + ":runlocal", "--seeds", "1",
                   "--protocol", "joint", "--steps", "2", "--methods",
                   "vanilla,oracle", "--output", str(out)]) == 0
  results = json.loads((out / "results.json").read_text())
  assert results["warmup"] == [] and not (out / "runs/warmup_seed_0").exists()
  runs = {r["method"]: r for r in results["runs"]}
  assert {r["protocol"] for r in runs.values()} == {"joint"}
  assert {r["warmup_steps"] for r in runs.values()} == {0}
  # Both start from the same random restorer (step 0 of their curves) ...
  assert runs["vanilla"]["curve"][0] == runs["oracle"]["curve"][0]
  # ... and the go/no-go figure is their validation difference.
  gap = results["summary"]["go_no_go"]
  assert gap["mean"] == pytest.approx(
      np.mean(runs["oracle"]["blocks"]["validation"]) -
      np.mean(runs["vanilla"]["blocks"]["validation"]), abs=1e-3)
  assert "Protocol: joint" in capsys.readouterr().out
