"""Restormer against the reference (Noise-DA models/net/restormer.py).

Fixture: tests/fixtures/restormer_small.npz (make_restormer_fixture.py), two
tiny configs with perturbed weights: BiasFree norms without biases, and
WithBias norms with biases and the dual-pixel skip. Tolerances: outputs 1e-5
relative, gradients 1e-4.
"""

import functools
import importlib.util
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_rel
from conftest import packed_record
from dada_jax.models import restormer

FIXTURE = pathlib.Path(__file__).parents[1] / "fixtures" / "restormer_small.npz"
CONFIGS = ("biasfree", "withbias_dual_pixel")


def _record(name):
  return packed_record(FIXTURE, name)


@functools.cache
def _output_and_grads(name):
  attrs, state, _, x, _, _ = _record(name)
  model = restormer.Restormer(**attrs)

  def loss(params):
    out = model.apply({"params": params}, x)
    return jnp.mean(jnp.square(out)), out

  params = restormer.params_from_torch(state, **attrs)["params"]
  (value, out), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
  return value, out, restormer.params_to_torch({"params": grads}, **attrs)


@pytest.mark.parametrize("name", CONFIGS)
def test_output_matches_reference(name):
  value, out, _ = _output_and_grads(name)
  *_, expected_out, expected_loss = _record(name)
  assert_rel(out, expected_out)
  assert_rel(value, expected_loss)


@pytest.mark.parametrize("name", CONFIGS)
def test_gradients_match_reference(name):
  _, _, grads = _output_and_grads(name)
  expected = _record(name)[2]
  assert grads.keys() == expected.keys()
  for key in expected:
    assert_rel(grads[key], expected[key], tol=1e-4)


@pytest.mark.parametrize("name", CONFIGS)
def test_state_dict_round_trips_bitwise(name):
  attrs, state, *_ = _record(name)
  back = restormer.params_to_torch(
      restormer.params_from_torch(state, **attrs), **attrs)
  assert list(back) and back.keys() == state.keys()
  for key, value in state.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape
    assert back[key].tobytes() == value.tobytes(), key


def test_strict_import_names_every_bad_key_at_once():
  attrs, state, *_ = _record("biasfree")
  state = dict(state)
  del state["latent.0.attn.temperature"]
  state["latent.0.attn.extra"] = np.zeros(3, np.float32)
  state["output.weight"] = state["output.weight"][:, :1]
  with pytest.raises(ValueError) as err:
    restormer.params_from_torch(state, **attrs)
  for key in ("latent.0.attn.temperature", "latent.0.attn.extra",
              "output.weight (3, 1, 3, 3) (expected (3, 4, 3, 3))"):
    assert key in str(err.value)


def test_pixel_shuffles_use_torch_channel_order():
  """Unshuffled channel c*4 + i*2 + j holds pixel (2h + i, 2w + j) of c."""
  x = jnp.arange(2 * 4 * 6 * 3, dtype=jnp.float32).reshape(2, 4, 6, 3)
  down = restormer.pixel_unshuffle2(x)
  assert down.shape == (2, 2, 3, 12)
  np.testing.assert_array_equal(down[1, 1, 2, 2 * 4 + 1 * 2 + 0],
                                x[1, 2 * 1 + 1, 2 * 2 + 0, 2])
  np.testing.assert_array_equal(restormer.pixel_shuffle2(down), x)


def test_defaults_size_and_padding():
  fields = restormer.Restormer.__dataclass_fields__
  defaults = {k: fields[k].default for k in restormer.DEFAULTS}
  assert defaults == restormer.DEFAULTS
  layout = restormer._layout()  # pylint: disable=protected-access
  # The reference's state_dict(): 406 tensors, 26,111,668 numbers.
  assert len(layout) == 406
  assert sum(int(np.prod(shape)) for _, shape in layout.values()) == 26_111_668
  assert restormer.pad_multiple(**restormer.DEFAULTS) == 8


def _reference():
  torch = pytest.importorskip("torch", reason="torch is not installed")
  pytest.importorskip("einops", reason="the reference needs einops")
  root = pathlib.Path(os.environ.get("NOISE_DA", "~/Noise-DA")).expanduser()
  path = root / "models" / "net" / "restormer.py"
  if not path.is_file():
    pytest.skip(f"no reference checkout at {root} (set NOISE_DA)")
  spec = importlib.util.spec_from_file_location("noise_da_restormer", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return torch, module.Restormer


def test_export_loads_into_the_reference_strictly():
  torch, reference = _reference()
  rng = np.random.default_rng(0)
  for attrs in (restormer.PRESETS["runlocal"], _record(CONFIGS[1])[0]):
    model = restormer.Restormer(**attrs)
    x = jax.ShapeDtypeStruct((1, 8, 8, model.inp_channels), jnp.float32)
    variables = jax.tree.map(  # random values: init's are too regular
        lambda s: rng.standard_normal(s.shape).astype(np.float32),
        jax.eval_shape(model.init, jax.random.PRNGKey(0), x))
    exported = restormer.params_to_torch(variables, **attrs)
    ref = reference(**attrs)
    ref.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()},
                        strict=True)
    assert all(exported[k].dtype == np.float32 for k in exported)
    for key, value in ref.state_dict().items():
      np.testing.assert_array_equal(value.numpy(), exported[key])
  with torch.device("meta"):  # the full size: names and shapes only
    expected = {k: tuple(v.shape) for k, v in reference().state_dict().items()}
  layout = restormer._layout()  # pylint: disable=protected-access
  assert {k: shape for k, (_, shape) in layout.items()} == expected
