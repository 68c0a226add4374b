"""SwinIR against the reference `models/net/swinir.py`.

tests/fixtures/swinir_small.npz was recorded by
tests/fixtures/make_swinir_fixture.py (the reference, torch 2.13 CPU, fp32,
eval mode, perturbed weights; two RSTBs with shifted windows, '3conv',
img_range 255, on a batch of two 18x13 images that the forward pads to
20x16 and crops back). Tolerances as parity_test.py: values 1e-5 relative,
gradients 1e-4. Only the export test needs torch and ~/Noise-DA (skipped
without them).
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
from dada_jax.models import swinir
from dada_jax.models import uformer
from fixtures.make_swinir_fixture import unpack

NOISE_DA = pathlib.Path("~/Noise-DA").expanduser()


@functools.cache
def _fixture():
  npz = np.load(FIXTURES / "swinir_small.npz")
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


@functools.cache
def _run_fixture():
  """(output, loss, grads as torch keys) of our model on the fixture: one
  compiled forward and backward for the two parity tests."""
  ref = _fixture()
  model = swinir.SwinIR(**ref["config"])
  variables = swinir.params_from_torch(ref["state"], **ref["config"])

  def loss_fn(p):
    out = model.apply({"params": p}, ref["input"])
    return jnp.mean(out**2), out

  (loss, out), grads = jax.jit(jax.value_and_grad(loss_fn, has_aux=True))(
      variables["params"])
  return out, loss, swinir.params_to_torch({"params": grads},
                                           **ref["config"])


def test_output_matches_reference(ref):
  out, _, _ = _run_fixture()
  assert out.dtype == jnp.float32 and out.shape == (2, 18, 13, 3)
  assert_rel(out, ref["output"])


def test_gradients_match_reference(ref):
  _, loss, grads = _run_fixture()
  np.testing.assert_allclose(loss, ref["loss"], rtol=1e-5)
  assert set(ref["grads"]) < set(grads)  # the rest are buffers
  for key, expected in ref["grads"].items():
    assert_rel(grads[key], expected, tol=1e-4)


def test_export_of_imported_state_is_bitwise_identical(ref):
  variables = swinir.params_from_torch(ref["state"], **ref["config"])
  state = swinir.params_to_torch(variables, **ref["config"])
  assert set(state) == set(ref["state"])
  for key, value in ref["state"].items():
    assert state[key].dtype == value.dtype, key
    np.testing.assert_array_equal(state[key], value, err_msg=key)


def test_strict_import_names_every_problem_at_once(ref):
  state = dict(ref["state"])
  del state["layers.0.residual_group.blocks.0.norm1.weight"]
  state["layers.0.extra.weight"] = np.zeros(3, np.float32)
  state["conv_last.weight"] = np.zeros((3, 4, 5, 5), np.float32)
  mask = "layers.1.residual_group.blocks.1.attn_mask"
  state[mask] = state[mask][::-1].copy()
  with pytest.raises(ValueError) as error:
    swinir.params_from_torch(state, **ref["config"])
  message = str(error.value)
  for part in ("missing layers.0.residual_group.blocks.0.norm1.weight",
               "unexpected layers.0.extra.weight",
               "misshapen conv_last.weight", f"buffer {mask}"):
    assert part in message


def test_windows_masks_and_sizes():
  # A patch resolution of at most the window becomes the (unshifted) window.
  assert swinir.window_and_shift((16, 16), 4, True) == (4, 2)
  assert swinir.window_and_shift((16, 16), 4, False) == (4, 0)
  assert swinir.window_and_shift((8, 6), 8, True) == (6, 0)
  np.testing.assert_array_equal(swinir.shift_mask(12, 8, 4, 2),
                                uformer.shift_mask(12, 8, 4, 2))
  assert swinir.pad_multiple() == 1
  assert swinir.pixel_shuffle(jnp.arange(8.0).reshape(1, 1, 2, 4), 2)[
      0, :, :, 0].tolist() == [[0, 1, 4, 5], [2, 3, 6, 7]]
  model = swinir.SwinIR(**swinir.PRESETS["runlocal"])
  with pytest.raises(ValueError, match="reflect-padded"):
    model.init(jax.random.key(0), jnp.zeros((1, 2, 8, 3)))  # pad 2 of 2
  with pytest.raises(ValueError, match="upsampler"):
    swinir.SwinIR(**swinir.PRESETS["runlocal"], upsampler="bicubic").init(
        jax.random.key(0), jnp.zeros((1, 8, 8, 3)))


def test_train_mode_drops_paths_with_the_dropout_rng(ref):
  model = swinir.SwinIR(**ref["config"])  # drop_path_rate 0.1 (default)
  variables = swinir.params_from_torch(ref["state"], **ref["config"])
  apply = jax.jit(functools.partial(model.apply, train=True))
  x = ref["input"]
  a = apply(variables, x, rngs={"dropout": jax.random.key(0)})
  b = apply(variables, x, rngs={"dropout": jax.random.key(1)})
  assert not np.allclose(a, b)
  np.testing.assert_array_equal(
      a, apply(variables, x, rngs={"dropout": jax.random.key(0)}))


# From the reference module: sum(p.numel() for p in SwinIR(**DEFAULTS)
# .parameters()) with torch 2.13 CPU (the published colour-denoising size;
# its state_dict has 544 entries with the buffers).
REFERENCE_PARAMETER_COUNT = 11_504_163


def test_default_parameter_count_matches_reference():
  layout, buffers = swinir._layout()  # pylint: disable=protected-access
  assert sum(int(np.prod(s)) for _, s in layout.values()) == (
      REFERENCE_PARAMETER_COUNT)
  assert len(layout) + len(buffers) == 544


@pytest.mark.parametrize("variant, size", [
    ({}, (14, 15)),
    (dict(ape=True, patch_norm=False, qk_scale=0.3, in_chans=1), (13, 16)),
    (dict(img_size=4, window_size=8), (11, 9)),  # windows shrunk to 4x4
    (dict(upsampler="pixelshuffle", upscale=2), (8, 12)),
    (dict(upsampler="pixelshuffledirect", upscale=3), (8, 12)),
    (dict(upsampler="nearest+conv", upscale=4, img_range=255.0), (8, 12)),
])
def test_export_loads_into_reference_and_agrees(variant, size):
  """Random params of our shapes, exported, load into the reference module
  with strict=True, and both give the same output (the runlocal preset and
  what the fixture does not cover)."""
  torch = pytest.importorskip("torch", reason="needs torch")
  if not (NOISE_DA / "models/net/swinir.py").exists():
    pytest.skip(f"needs the reference code at {NOISE_DA}")
  from fixtures import make_swinir_fixture  # pylint: disable=g-import-not-at-top
  attrs = {**swinir.PRESETS["runlocal"], **variant}
  model = swinir.SwinIR(**attrs)
  rng = np.random.default_rng(0)
  x = rng.uniform(0, 1, (2, *size, attrs.get("in_chans", 3)))
  x = x.astype(np.float32)
  layout, _ = swinir._layout(**attrs)  # pylint: disable=protected-access
  params = {}
  for path, shape in layout.values():
    node = params
    for seg in path[:-1]:
      node = node.setdefault(seg, {})
    shape = shape[::-1] if len(shape) == 2 and path[-1] == "kernel" else (
        tuple(shape[i] for i in (2, 3, 1, 0)) if len(shape) == 4 else shape)
    node[path[-1]] = rng.normal(0, 0.3, shape).astype(np.float32)
  # All of DEFAULTS: the reference constructor's own defaults differ.
  ref_kw = {k: list(v) if isinstance(v, tuple) else v for k, v in
            {**swinir.DEFAULTS, **attrs}.items()}
  ref = make_swinir_fixture.load_reference(NOISE_DA).SwinIR(**ref_kw).eval()
  state = swinir.params_to_torch({"params": params}, **attrs)
  ref.load_state_dict({k: torch.from_numpy(v.copy()) for k, v in state.items()},
                      strict=True)
  with torch.no_grad():
    expected = ref(torch.from_numpy(x.transpose(0, 3, 1, 2)))
  out = jax.jit(model.apply)({"params": params}, x)
  assert_rel(out, expected.numpy().transpose(0, 2, 3, 1))
