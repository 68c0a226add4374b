"""Uformer against the reference `models/net/uformer.py`.

tests/fixtures/uformer_small.npz was recorded by
tests/fixtures/make_uformer_fixture.py (the reference, torch 2.13 CPU, fp32,
eval mode, perturbed weights; shifted windows with masks on a batch of two
32x32 images). Tolerances as parity_test.py: values 1e-5 relative,
gradients 1e-4. Only the export test needs torch and ~/Noise-DA
(skipped without them).
"""

import functools
import json
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from conftest import assert_rel
from conftest import FIXTURES
from dada_jax.models import uformer
from fixtures.make_uformer_fixture import unpack

NOISE_DA = pathlib.Path("~/Noise-DA").expanduser()


@functools.cache
def _fixture():
  npz = np.load(FIXTURES / "uformer_small.npz")
  state, grads = unpack(npz)
  config = {k: tuple(v) if isinstance(v, list) else v
            for k, v in json.loads(str(npz["config"])).items()}
  nhwc = lambda a: a.transpose(0, 2, 3, 1)
  return dict(config=config, state=state, grads=grads,
              input=nhwc(npz["input"]), output=nhwc(npz["output"]),
              loss=float(npz["loss"]))


@pytest.fixture(name="ref")
def _ref():
  return _fixture()


@pytest.fixture(name="model")
def _model(ref):
  return uformer.Uformer(**ref["config"])


@pytest.fixture(name="params")
def _params(ref):
  return uformer.params_from_torch(ref["state"], **ref["config"])["params"]


@functools.cache
def _run_fixture():
  """(output, loss, grads as torch keys) of our model on the fixture: one
  compiled forward and backward for the two parity tests."""
  ref = _fixture()
  model = uformer.Uformer(**ref["config"])
  params = uformer.params_from_torch(ref["state"], **ref["config"])["params"]

  def loss_fn(p):
    out = model.apply({"params": p}, ref["input"])
    return jnp.mean(out**2), out

  (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      params)
  return out, loss, uformer.params_to_torch(grads, **ref["config"])


def test_output_matches_reference(ref):
  out, _, _ = _run_fixture()
  assert out.dtype == jnp.float32
  assert_rel(out, ref["output"])


def test_gradients_match_reference(ref):
  _, loss, grads = _run_fixture()
  np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)
  for key, expected in ref["grads"].items():
    assert_rel(grads[key], expected, tol=1e-4)


def test_export_of_imported_state_is_bitwise_identical(ref, params):
  state = uformer.params_to_torch(params, **ref["config"])
  assert set(state) == set(ref["state"])
  for key, value in ref["state"].items():
    assert state[key].dtype == value.dtype, key
    np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_strict_import_names_every_problem_at_once(ref):
  state = dict(ref["state"])
  del state["conv.blocks.0.norm1.weight"]
  state["conv.blocks.0.extra.weight"] = np.zeros(3, np.float32)
  state["output_proj.proj.0.weight"] = np.zeros((3, 4, 5, 5), np.float32)
  index = "encoderlayer_0.blocks.1.attn.relative_position_index"
  state[index] = state[index][::-1].copy()
  with pytest.raises(ValueError) as error:
    uformer.params_from_torch(state, **ref["config"])
  message = str(error.value)
  for part in ("missing conv.blocks.0.norm1.weight",
               "unexpected conv.blocks.0.extra.weight",
               "misshapen output_proj.proj.0.weight", f"buffer {index}"):
    assert part in message


def test_windows_shift_and_padding_follow_img_size():
  # Levels of img_size 32 with 4x4 windows: 32, 16, 8, 4 (one window, no
  # shift), 2 (window shrunk to 2x2).
  assert uformer.window_and_shift(8, 4, 2) == (4, 2)
  assert uformer.window_and_shift(4, 4, 2) == (4, 0)
  assert uformer.window_and_shift(2, 4, 2) == (2, 0)
  assert uformer.pad_multiple(img_size=32, win_size=4) == 32
  assert uformer.pad_multiple() == 128
  assert uformer.pad_multiple(**uformer.PRESETS["B"]) == 128
  with pytest.raises(ValueError, match="multiple of 32"):
    uformer.Uformer(img_size=32, win_size=4).init(
        jax.random.key(0), jnp.zeros((1, 48, 48, 3)))


def test_train_mode_drops_paths_with_the_dropout_rng(ref, model, params):
  apply = jax.jit(functools.partial(model.apply, train=True))
  x = ref["input"]
  a = apply({"params": params}, x, rngs={"dropout": jax.random.key(0)})
  b = apply({"params": params}, x, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a, b)  # drop_path_rate 0.1 (the default)
  np.testing.assert_array_equal(
      a, apply({"params": params}, x, rngs={"dropout": jax.random.key(0)}))


# From the reference module: sum(p.numel() for p in Uformer(**kw).parameters())
# with torch 2.13 CPU, kw = DEFAULTS updated by each preset.
REFERENCE_PARAMETER_COUNTS = {"T": 5_563_213, "S": 21_836_637,
                              "B": 51_966_386, "defaults": 21_713_757}


@pytest.mark.parametrize("name", sorted(REFERENCE_PARAMETER_COUNTS))
def test_preset_parameter_counts_match_reference(name):
  attrs = uformer.PRESETS.get(name, {})
  layout, _ = uformer._layout(**attrs)  # pylint: disable=protected-access
  count = sum(int(np.prod(shape)) for _, shape in layout.values())
  assert count == REFERENCE_PARAMETER_COUNTS[name]


@pytest.mark.parametrize("variant", [
    {},
    dict(token_projection="conv", token_mlp="ffn", cross_modulator=True,
         shift_flag=False, qk_scale=0.3),
])
def test_export_loads_into_reference_and_agrees(variant):
  """Our freshly initialised params, exported, load into the reference
  module with strict=True, and both give the same output (the runlocal
  preset, and the variants the fixture does not cover)."""
  torch = pytest.importorskip("torch", reason="needs torch")
  if not (NOISE_DA / "models/net/uformer.py").exists():
    pytest.skip(f"needs the reference code at {NOISE_DA}")
  from fixtures import make_uformer_fixture  # pylint: disable=g-import-not-at-top
  attrs = {**uformer.PRESETS["runlocal"], **variant}
  model = uformer.Uformer(**attrs)
  rng = np.random.default_rng(0)
  x = rng.uniform(-1, 1, (2, 32, 32, 3)).astype(np.float32)
  # Random values of init's shapes (init's tiny linear weights would test
  # little, and compiling init costs more than this test's forward).
  shapes = jax.eval_shape(model.init, jax.random.key(0), x)["params"]
  params = jax.tree.map(
      lambda p: rng.normal(0, 0.3, p.shape).astype(np.float32), shapes)
  ref_cls = make_uformer_fixture.load_reference(NOISE_DA).Uformer
  ref = ref_cls(**{k: list(v) if isinstance(v, tuple) else v
                   for k, v in attrs.items()}).eval()
  for m in ref.modules():
    if type(m).__name__ == "SepConv2d":
      # ConvProjection passes its `bias=True` into SepConv2d's dilation slot;
      # torch 2.13 rejects a bool dilation, older torch took it as 1.
      m.depthwise.dilation = (1, 1)
  state = uformer.params_to_torch(params, **attrs)
  ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()},
                      strict=True)
  with torch.no_grad():
    expected = ref(torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2)))
  out = jax.jit(model.apply)({"params": params}, x)
  assert_rel(out, expected.numpy().transpose(0, 2, 3, 1))
