"""SimulatedPairs, the builtin/simulated stream kinds and configs/demo.py."""

import numpy as np
import pytest

from conftest import DEMO
from conftest import cached_config
from conftest import train_config
from dada_jax import config_lib
from dada_jax import data
from dada_jax import evaluate
from dada_jax import metric_writer
from dada_jax import train
from dada_jax.data import builtin
from dada_jax.data import simulated
from dada_jax.data import sources
from dada_jax.data import train_data


def _base():
  return sources.SyntheticClean(num=3, size=(40, 48), seed=5)


@pytest.mark.parametrize("task,domain", [("denoise", "real"),
                                         ("derain", "synthetic"),
                                         ("deblur", "real")])
def test_items_are_deterministic_per_index_and_order_free(task, domain):
  a = simulated.SimulatedPairs(_base(), task, domain, seed=3)
  b = simulated.SimulatedPairs(_base(), task, domain, seed=3)
  forward = [a[i] for i in range(3)]
  backward = [b[i] for i in reversed(range(3))][::-1]
  for x, y in zip(forward, backward):
    np.testing.assert_array_equal(x["lq"], y["lq"])
    np.testing.assert_array_equal(x["gt"], y["gt"])
  np.testing.assert_array_equal(a[1]["lq"], a[1]["lq"])  # re-read
  other = simulated.SimulatedPairs(_base(), task, domain, seed=4)
  assert not np.array_equal(other[0]["lq"], forward[0]["lq"])
  assert not np.array_equal(forward[0]["lq"], forward[0]["gt"])


def test_paired_and_unpaired_elements():
  paired = simulated.SimulatedPairs(_base(), "denoise", "real", seed=1)
  unpaired = simulated.SimulatedPairs(_base(), "denoise", "real", seed=1,
                                      paired=False)
  assert paired.paired and not unpaired.paired and len(paired) == 3
  item, single = paired[2], unpaired[2]
  assert set(item) == {"lq", "gt"} and set(single) == {"image"}
  np.testing.assert_array_equal(item["gt"], _base()[2]["image"])
  np.testing.assert_array_equal(item["lq"], single["image"])
  for image in (item["lq"], item["gt"], single["image"]):
    assert image.dtype == np.uint8 and image.shape == (40, 48, 3)
  assert "SimulatedPairs(SyntheticClean(" in repr(paired)
  assert paired.problems == [] and paired.check_item(0, 32) == []
  assert paired.check_item(0, 41)  # the base image is 40 pixels high
  with pytest.raises(IndexError):
    paired[3]  # pylint: disable=pointless-statement
  with pytest.raises(ValueError, match="unknown degradation denoise/fake"):
    simulated.SimulatedPairs(_base(), "denoise", "fake")


def _stream(**fields):
  c = config_lib.base_config("denoise")
  c.data.real.update(fields)
  return c.data.real


def test_build_source_builtin_and_simulated():
  clean = data.build_source(_stream(kind="builtin", split="test", size=48))
  assert isinstance(clean, builtin.BuiltinPhotos) and len(clean) == 3
  assert max(clean[0]["image"].shape[:2]) <= 48
  real = data.build_source(_stream(
      kind="simulated", task="deblur", domain="real", split="train", size=48,
      seed=7, paired=False))
  assert isinstance(real, simulated.SimulatedPairs) and not real.paired
  assert len(real) == 5 and real[0]["image"].dtype == np.uint8
  assert real.base.max_side == 48 and real.seed == 7
  with pytest.raises(data.DataError, match="config.data.real.task is empty"):
    data.build_source(_stream(kind="simulated"), "config.data.real")
  with pytest.raises(data.DataError, match="unknown degradation"):
    data.build_source(_stream(kind="simulated", task="denoise",
                              domain="nope"), "config.data.real")


@pytest.mark.parametrize("arg", ["runlocal", "task=derain,mode=vanilla",
                                 "task=deblur,mode=dda_ex"])
def test_demo_config_loads_and_validates(arg):
  c = config_lib.load_config(f"{DEMO}:{arg}")
  config_lib.validate(c, num_devices=1)
  assert (c.eval.kind, c.eval.split, c.eval.domain) == ("rendered", "test",
                                                        "real")
  assert c.eval.block_size > 0 and c.eval.paired
  assert c.data.real.paired is False and c.data.real.split == "train"
  assert c.data.real.seed != c.eval.seed
  source = evaluate.source_from_config(c)
  assert source.paired and source.domain == "real"
  assert len(source) == 3 * c.eval.blocks_per_photo * c.eval.draws
  # Native resolution, the same renders in every stream: only the
  # degradation differs.
  assert c.data.syn.kind == c.data.real.kind == "rendered"
  assert c.data.syn.size == c.data.real.size == 0
  if c.task == "denoise":
    assert c.data.syn.domain == "clean"  # + online unclipped AWGN
  else:
    assert c.data.syn.domain == "synthetic" and c.data.syn.paired
  with pytest.raises(config_lib.ConfigError, match="task='x'"):
    config_lib.load_config(f"{DEMO}:task=x")


def test_demo_dda_stream_batches():
  """The dda demo's training input: simulated real stream, unpaired."""
  c = cached_config(f"{DEMO}:runlocal,task=derain")
  c.data.update(patch_size=16, batch_size=2)
  it, num_syn = train_data.make_train_data(c)
  batch = next(it)
  assert num_syn > 1000 and set(batch) == {"syn_lq", "syn_gt", "real_lq"}
  for v in batch.values():
    assert v.shape == (2, 16, 16, 3) and -1.0 <= v.min() <= v.max() <= 1.0


def test_demo_runlocal_trains_and_evaluates(tmp_path):
  # mode=vanilla: compiling the critic's step takes ~1 min on a loaded
  # 2-core CPU (train_test covers it); this checks the demo's data wiring.
  c = train_config(2, spec=f"{DEMO}:runlocal,mode=vanilla", one_device=True,
                   ckpt_every=2, eval_every=2)
  c.eval.update(max_images=2, num_samples=1)
  final = train.train_and_evaluate(c, str(tmp_path))
  assert np.isfinite(final["loss/total"]) and np.isfinite(final["loss/pixel"])
  rows = metric_writer.read_metrics(str(tmp_path))
  evals = [r for r in rows if "eval/psnr" in r]
  assert evals and np.isfinite(evals[-1]["eval/psnr"])
  assert evals[-1]["eval/num_images"] == 2


def test_cache_degrades_each_image_once(monkeypatch):
  calls = []
  real_degrade = simulated.degrade_lib.degrade
  # Counted by clean image: another test's prefetch threads may still be
  # degrading other images through the same module.
  shapes = {(40, 48, 3)}
  monkeypatch.setattr(simulated.degrade_lib, "degrade", lambda *a, **k: (
      np.shape(a[2]) in shapes and calls.append(1)) or real_degrade(*a, **k))
  cached = simulated.SimulatedPairs(_base(), "denoise", "real", seed=3,
                                    paired=False)
  uncached = simulated.SimulatedPairs(_base(), "denoise", "real", seed=3,
                                      paired=False, cache_size=0)
  first = [cached[i]["image"] for i in range(3)]
  again = [cached[i]["image"] for i in range(3)]
  assert len(calls) == 3
  for a, b, c in zip(first, again, [uncached[i]["image"] for i in range(3)]):
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)
  assert len(calls) == 6  # the uncached source degrades on every read
