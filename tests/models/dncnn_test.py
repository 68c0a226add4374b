"""DnCNN against the reference (Noise-DA models/net/dncnn.py).

Fixture: tests/fixtures/dncnn_small.npz (make_dncnn_fixture.py): 3 layers
(one conv-BN-ReLU), perturbed weights and running statistics, odd-sized
input; dncnn_dda_small.npz (make_dncnn_dda_fixture.py): the reference's
training objective with that DnCNN as its restorer, in train mode.
Tolerances: outputs 1e-5 relative, gradients 1e-4.
"""

import functools
import importlib.util
import json
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_rel
from conftest import FIXTURES
from conftest import nhwc
from conftest import small_config
from dada_jax import models
from dada_jax import objective
from dada_jax import train_step
from dada_jax.models import dncnn
from dada_jax.torch_io import convert

FIXTURE = FIXTURES / "dncnn_small.npz"


@functools.cache
def _record():
  with np.load(FIXTURE) as f:
    rec = {k: f[k] for k in f.files}
  group = lambda prefix: {k[len(prefix):]: v for k, v in rec.items()
                          if k.startswith(prefix)}
  rec["attrs"] = json.loads(rec["config"].item())
  rec["state"], rec["grad"] = group("state/"), group("grad/")
  rec["state_after"] = group("state_after/")
  return rec


def _variables():
  rec = _record()
  return dncnn.params_from_torch(rec["state"], **rec["attrs"])


@functools.cache
def _train_step():
  """(train output, loss, grads, updated stats), torch-keyed where keyed."""
  rec, variables = _record(), _variables()
  model = dncnn.DnCNN(**rec["attrs"])

  def loss(params):
    out, new = model.apply({"params": params,
                            "batch_stats": variables["batch_stats"]},
                           nhwc(rec["input"]), train=True,
                           mutable=["batch_stats"])
    return jnp.mean(jnp.square(out)), (out, new)

  (value, (out, new)), grads = jax.jit(
      jax.value_and_grad(loss, has_aux=True))(variables["params"])
  state = dncnn.params_to_torch({"params": grads, **new}, **rec["attrs"])
  return out, value, state


def test_eval_output_matches_reference():
  rec = _record()
  model = dncnn.DnCNN(**rec["attrs"])
  out = jax.jit(model.apply)(_variables(), nhwc(rec["input"]))
  assert_rel(out, nhwc(rec["eval_output"]))


def test_train_output_and_running_stats_match_reference():
  rec = _record()
  out, value, state = _train_step()
  assert_rel(out, nhwc(rec["train_output"]))
  assert_rel(value, rec["loss"])
  for key, expected in rec["state_after"].items():
    if key.endswith("num_batches_tracked"):
      assert state[key].dtype == np.int64 and state[key] == expected == 8
    else:
      assert_rel(state[key], expected)


def test_gradients_match_reference():
  rec = _record()
  state = _train_step()[2]
  for key, expected in rec["grad"].items():
    assert_rel(state[key], expected, tol=1e-4)


@functools.cache
def _dda_record():
  with np.load(FIXTURES / "dncnn_dda_small.npz") as f:
    return {k: f[k] for k in f.files}


def _dda_config():
  """The reference's small critic (dropout 0) and a 3-layer DnCNN."""
  c = small_config()
  c.critic.dropout = 0.0
  c.restorer.name = "dncnn"
  c.restorer.dncnn.num_of_layers = 3
  return c


def _dda_weights(rec, config):
  """{role: weights} from the fixture's DnCNN and noise_da_small's critic."""
  state = {"RestorationNet." + k[len("state/"):]: v for k, v in rec.items()
           if k.startswith("state/")}
  with np.load(FIXTURES / "noise_da_small.npz") as f:
    state.update({k[len("state/"):]: f[k] for k in f.files
                  if k.startswith("state/denoise_fn.")})
  return convert.params_from_state_dict(state, config, source="fixture")


@pytest.mark.parametrize("mode", ["dda", "vanilla"])
def test_training_objective_matches_reference(mode):
  """The reference Network with DnCNN as RestorationNet, train mode: loss
  terms, the restorer's gradients, and the running statistics after the
  restorer's calls on syn_lq then real_lq (two updates; one in vanilla)."""
  rec, config = _dda_record(), _dda_config()
  state = train_step.init_state(config, jax.random.key(0),
                                _dda_weights(rec, config))
  batch = {k: nhwc(rec[k]) for k in ("syn_lq", "syn_gt", "real_lq")}
  draws = objective.draws_from_reference(
      rec["t"], rec["u"], rec["swap_u"] > 0.5, rec["negswap_u"] > 0.5,
      rec["noise"])
  loss_fn = objective.make_objective(config, mode)
  alpha = float(rec["alpha"]) if mode == "dda" else 0.0

  def loss(params):
    return loss_fn(params, batch, jax.random.key(0), alpha,
                   draws=None if mode == "vanilla" else draws,
                   batch_stats=state["batch_stats"])

  (total, (terms, stats)), grads = jax.jit(jax.value_and_grad(
      loss, has_aux=True))(state["params"])
  assert_rel(total, rec[f"{mode}/total"])
  assert_rel(terms.pixel, rec[f"{mode}/loss_syn"])
  if mode == "dda":
    assert_rel(terms.diffusion, rec["dda/loss_noise"])
  exported = convert.state_dict_from_params(
      {"restorer": models.with_stats(grads["restorer"], stats["restorer"])},
      config)
  assert len(exported) == 8  # every parameter and buffer
  for key, value in exported.items():
    key = key[len("RestorationNet."):]
    if key.endswith("num_batches_tracked"):
      assert value == rec[f"{mode}/stats_after/{key}"], key
    elif "running" in key:
      assert_rel(value, rec[f"{mode}/stats_after/{key}"])
    else:
      assert_rel(value, rec[f"{mode}/grad/{key}"], tol=1e-4)


def test_init_leaves_stats_and_train_needs_two_values_per_channel():
  model = dncnn.DnCNN(channels=1, num_of_layers=3)
  x = jnp.ones((1, 1, 1, 1))
  variables = model.init(jax.random.PRNGKey(0), x, train=True)
  stats = variables["batch_stats"]["dncnn_3"]
  assert stats["num_batches_tracked"] == 0 and (stats["var"] == 1).all()
  with pytest.raises(ValueError, match="more than one value per channel"):
    model.apply(variables, x, train=True, mutable=["batch_stats"])


@pytest.mark.parametrize("num_of_layers", [3, 5])
def test_state_dict_round_trips_bitwise(num_of_layers):
  rec = _record()
  if num_of_layers == 3:
    state = rec["state"]
  else:  # deeper: random values in the reference's key layout
    rng = np.random.default_rng(0)
    layout = dncnn._layout(num_of_layers=5)  # pylint: disable=protected-access
    state = {k: (np.int64(3) if dtype == np.int64 else
                 rng.standard_normal(shape).astype(np.float32))
             for k, (_, _, shape, dtype) in layout.items()}
    state = {k: np.asarray(v) for k, v in state.items()}
  attrs = {**rec["attrs"], "num_of_layers": num_of_layers}
  back = dncnn.params_to_torch(dncnn.params_from_torch(state, **attrs),
                               **attrs)
  assert list(back) == list(state)
  for key, value in state.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape
    assert back[key].tobytes() == value.tobytes(), key


def test_key_layout_follows_the_sequential_indices():
  keys = list(dncnn._layout(num_of_layers=4))  # pylint: disable=protected-access
  stats = ["weight", "bias", "running_mean", "running_var",
           "num_batches_tracked"]
  assert keys == (["dncnn.0.weight", "dncnn.2.weight"]
                  + [f"dncnn.3.{n}" for n in stats] + ["dncnn.5.weight"]
                  + [f"dncnn.6.{n}" for n in stats] + ["dncnn.8.weight"])


def test_strict_import_names_every_bad_key_at_once():
  rec = _record()
  state = dict(rec["state"])
  del state["dncnn.3.running_var"]
  state["dncnn.4.weight"] = np.zeros(3, np.float32)
  state["dncnn.2.weight"] = state["dncnn.2.weight"][:8]
  with pytest.raises(ValueError) as err:
    dncnn.params_from_torch(state, **rec["attrs"])
  for key in ("dncnn.3.running_var", "dncnn.4.weight",
              "dncnn.2.weight (8, 64, 3, 3) (expected (64, 64, 3, 3))"):
    assert key in str(err.value)


def test_defaults_size_and_padding():
  fields = dncnn.DnCNN.__dataclass_fields__
  assert {k: fields[k].default for k in dncnn.DEFAULTS} == dncnn.DEFAULTS
  layout = dncnn._layout()  # pylint: disable=protected-access
  # The reference's state_dict(): 3 convs + 15 (conv, BN with 4 tensors and
  # a counter); 558,336 parameters.
  assert len(layout) == 2 + 15 * 6
  assert sum(int(np.prod(spec[2])) for spec in layout.values()
             if spec[0] == "params") == 558_336
  assert dncnn.pad_multiple() == 1


def _reference():
  torch = pytest.importorskip("torch", reason="torch is not installed")
  root = pathlib.Path(os.environ.get("NOISE_DA", "~/Noise-DA")).expanduser()
  path = root / "models" / "net" / "dncnn.py"
  if not path.is_file():
    pytest.skip(f"no reference checkout at {root} (set NOISE_DA)")
  spec = importlib.util.spec_from_file_location("noise_da_dncnn", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return torch, module.DnCNN


def test_export_loads_into_the_reference_strictly():
  torch, reference = _reference()
  variables = dncnn.DnCNN().init(jax.random.PRNGKey(0),
                                 jnp.zeros((1, 4, 4, 3)))
  exported = dncnn.params_to_torch(variables)
  ref = reference()
  ref.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()},
                      strict=True)
  expected = ref.state_dict()
  assert list(exported) == list(expected)
  for key, value in expected.items():
    assert exported[key].dtype == value.numpy().dtype
    np.testing.assert_array_equal(value.numpy(), exported[key])
