"""NAFNet as published, around Noise-DA's block (models/net/NAFNet.py).

Fixture: tests/fixtures/nafnet_small.npz (make_nafnet_fixture.py: a torch
NAFNet written to the published structure around Noise-DA's NAFBlock), two
tiny configs with perturbed weights, inputs whose sides need the network's
zero padding: `published` (dilation 1) and `dilation2`. Tolerances: outputs
1e-5 relative, gradients 1e-4. Only the export test needs torch and
~/Noise-DA (skipped without them).
"""

import functools
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_rel
from conftest import FIXTURES
from conftest import packed_record
from dada_jax.models import nafnet

CONFIGS = ("published", "dilation2")


def _record(name):
  return packed_record(FIXTURES / "nafnet_small.npz", name)


@functools.cache
def _output_and_grads(name):
  attrs, state, _, x, _, _ = _record(name)
  model = nafnet.NAFNet(**attrs)

  def loss(params):
    out = model.apply({"params": params}, x)
    return jnp.mean(jnp.square(out)), out

  params = nafnet.params_from_torch(state, **attrs)["params"]
  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return value, out, nafnet.params_to_torch({"params": grads}, **attrs)


@pytest.mark.parametrize("name", CONFIGS)
def test_output_matches_the_torch_network(name):
  value, out, _ = _output_and_grads(name)
  *_, expected_out, expected_loss = _record(name)
  assert_rel(out, expected_out)
  assert_rel(value, expected_loss)


@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_match_the_torch_network(name):
  _, _, grads = _output_and_grads(name)
  expected = _record(name)[2]
  assert list(grads) == list(expected)  # the published state_dict order
  for key in expected:
    assert_rel(grads[key], expected[key], tol=1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_round_trips_bitwise(name):
  attrs, state, *_ = _record(name)
  back = nafnet.params_to_torch(nafnet.params_from_torch(state, **attrs),
                                **attrs)
  assert list(back) == list(state)
  for key, value in state.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape
    assert back[key].tobytes() == value.tobytes(), key


def test_strict_import_names_every_bad_key_at_once():
  attrs, state, *_ = _record("published")
  state = dict(state)
  del state["middle_blks.0.gamma"]
  state["middle_blks.0.extra"] = np.zeros(3, np.float32)
  state["ending.weight"] = state["ending.weight"][:, :1]
  with pytest.raises(ValueError) as err:
    nafnet.params_from_torch(state, **attrs)
  for key in ("middle_blks.0.gamma", "middle_blks.0.extra",
              "ending.weight (3, 1, 3, 3) (expected (3, 4, 3, 3))"):
    assert key in str(err.value)


def test_published_checkpoint_nesting_is_unwrapped():
  state = {"intro.weight": np.ones(1), "ups.0.0.weight": np.zeros(1)}
  assert nafnet.unwrap_published(state) == state
  assert nafnet.unwrap_published({"params": state}) == state
  assert nafnet.unwrap_published({"state_dict": state}) == state
  module = {"module." + k: v for k, v in state.items()}
  assert nafnet.unwrap_published({"params": module}) == state


def test_defaults_are_nafnet_sidd_width32():
  fields = nafnet.NAFNet.__dataclass_fields__
  assert {k: fields[k].default for k in nafnet.DEFAULTS} == nafnet.DEFAULTS
  # make_nafnet_fixture.torch_nafnet(NAFBlock, **DEFAULTS).state_dict() on
  # the meta device, torch 2.13: 664 tensors, 29,159,715 numbers (width 64:
  # 115,982,915). The published NAFNet_arch.py (megvii-research/NAFNet
  # 2b4af71, run with its imports stubbed) gave the same keys in the same
  # order and shapes, and the same outputs.
  layout_of = nafnet._layout  # pylint: disable=protected-access
  layout = layout_of()
  assert len(layout) == 664
  assert sum(int(np.prod(s)) for _, s in layout.values()) == 29_159_715
  assert sum(int(np.prod(s)) for _, s in layout_of(
      **nafnet.PRESETS["width64"]).values()) == 115_982_915
  for key in ("intro.weight", "encoders.0.0.conv1.weight",
              "encoders.3.7.sca.1.bias", "downs.0.weight", "ups.0.0.weight",
              "middle_blks.11.beta", "decoders.3.1.norm2.weight",
              "ending.weight"):
    assert key in layout
  assert "ups.0.0.bias" not in layout
  assert nafnet.pad_multiple(**nafnet.DEFAULTS) == 16
  assert nafnet.pad_multiple(**nafnet.PRESETS["runlocal"]) == 4


def test_dropout_acts_only_in_training():
  model = nafnet.NAFNet(width=2, middle_blk_num=1, enc_blk_nums=(1,),
                        dec_blk_nums=(1,), drop_out_rate=0.5,
                        beta_gamma_init=1.0)
  x = jnp.asarray(np.random.default_rng(0).standard_normal((1, 3, 5, 3)),
                  jnp.float32)
  variables = jax.jit(model.init)(jax.random.key(0), x)
  assert variables["params"]["middle_blks_0"]["beta"][0] == 1.0
  apply = jax.jit(lambda rng, train: model.apply(
      variables, x, train=train, rngs={"dropout": rng}), static_argnums=1)
  a, b = (apply(jax.random.key(k), True) for k in (1, 2))
  c, d = (apply(jax.random.key(k), False) for k in (1, 2))
  assert a.shape == x.shape and not np.allclose(a, b)
  np.testing.assert_array_equal(c, d)
  assert not np.allclose(a, c)


def _torch_reference():
  torch = pytest.importorskip("torch", reason="torch is not installed")
  root = pathlib.Path(os.environ.get("NOISE_DA", "~/Noise-DA")).expanduser()
  if not (root / "models" / "net" / "NAFNet.py").is_file():
    pytest.skip(f"no reference checkout at {root} (set NOISE_DA)")
  from fixtures import make_nafnet_fixture  # pylint: disable=g-import-not-at-top
  return torch, make_nafnet_fixture, make_nafnet_fixture.noise_da_block(root)


def test_export_loads_into_the_torch_network_strictly():
  torch, fixture, block = _torch_reference()
  rng = np.random.default_rng(0)
  for attrs in (nafnet.PRESETS["runlocal"], _record("dilation2")[0]):
    model = nafnet.NAFNet(**attrs)
    x = jax.ShapeDtypeStruct((1, 1, 1, model.img_channel), jnp.float32)
    variables = jax.tree.map(  # random values: init's are too regular
        lambda s: rng.standard_normal(s.shape).astype(np.float32),
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
    exported = nafnet.params_to_torch(variables, **attrs)
    ref = fixture.torch_nafnet(block, **attrs)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()},
                        strict=True)
    assert list(ref.state_dict()) == list(exported)
    for key, value in ref.state_dict().items():
      np.testing.assert_array_equal(value.numpy(), exported[key])
