"""The SR3 critic agrees number for number with the reference's SR3 U-Net.

tests/fixtures/sr3_small.npz was recorded by tests/fixtures/make_sr3_fixture.py
(Noise-DA models/sr3_modules/unet.py, torch CPU fp32, eval mode) on a small
config with perturbed weights. Tolerances: values 1e-5 relative, gradients
1e-4. Only the last test uses torch, and skips without it.
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
from dada_jax.models import sr3_critic


@pytest.fixture(scope="module")
def rec():
  with np.load(FIXTURES / "sr3_small.npz") as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="module")
def attrs(rec):
  return {k: tuple(v) if isinstance(v, list) else v
          for k, v in json.loads(str(rec["config"])).items()}


@pytest.fixture(scope="module")
def state(rec):
  return {k[len("state/"):]: v for k, v in rec.items()
          if k.startswith("state/")}


@pytest.fixture(scope="module")
def params(state, attrs):
  return sr3_critic.params_from_torch(state, **attrs)["params"]


def _apply(attrs, params, x, gammas, **kw):
  return sr3_critic.SR3UNet(**attrs).apply({"params": params}, x, gammas,
                                           **kw)


@pytest.fixture(scope="module")
def recorded_step(rec, attrs, params):
  """(loss, ε̂, d loss / d params) of the recorded loss, mean((ε̂ - target)²),
  from one compiled program."""

  def loss(p):
    eps_hat = _apply(attrs, p, nhwc(rec["x"]), rec["gammas"])
    return jnp.mean(jnp.square(eps_hat - nhwc(rec["target"]))), eps_hat

  (value, eps_hat), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(
      params)
  return value, eps_hat, grads


def test_output_matches_reference(rec, attrs, params, recorded_step):
  _, eps_hat, _ = recorded_step
  assert eps_hat.shape == (2, 16, 16, 3) and eps_hat.dtype == jnp.float32
  assert_rel(eps_hat, nhwc(rec["out"]))
  # The reference is fed γ as [B, 1]; [B] means the same (to round-off:
  # this forward-only program fuses differently from the one above).
  assert rec["gammas"].shape == (2, 1)
  assert_rel(jax.jit(functools.partial(_apply, attrs))(
      params, nhwc(rec["x"]), rec["gammas"][:, 0]), eps_hat, tol=1e-6)


def test_every_gradient_matches_reference(rec, attrs, recorded_step):
  """d mean((ε̂ - target)²) / d every parameter, 1e-4 relative per tensor."""
  value, _, grads = recorded_step
  assert_rel(value, rec["loss"])
  ours = sr3_critic.params_to_torch({"params": grads}, **attrs)
  theirs = {k[len("grad/"):]: v for k, v in rec.items()
            if k.startswith("grad/")}
  assert sorted(ours) == sorted(theirs)
  for key, expected in theirs.items():
    err = np.abs(ours[key] - expected).max() / np.abs(expected).max()
    assert err <= 1e-4, f"{key}: relative error {err:.3g}"


def test_noise_level_encoding_matches_reference(rec):
  enc = sr3_critic.noise_level_encoding(jnp.asarray(rec["posenc_in"]), 8)
  assert_rel(enc, rec["posenc_out"])


def test_affine_feature_wise_affine_matches_reference(rec):
  """use_affine_level=True: (1 + γ)·x + β (no SR3UNet block enables it)."""
  layer = sr3_critic.FeatureWiseAffine(4, use_affine_level=True)
  variables = {"params": {"noise_func_0": {"kernel": rec["fwa_weight"].T,
                                           "bias": rec["fwa_bias"]}}}
  out = layer.apply(variables, nhwc(rec["fwa_x"]), rec["fwa_emb"])
  assert_rel(out, nhwc(rec["fwa_out"]))


def test_dropout_draws_from_the_dropout_rng(rec, attrs, params):
  apply = jax.jit(functools.partial(_apply, attrs, train=True))
  x, g = nhwc(rec["x"]), rec["gammas"]
  a = apply(params, x, g, rngs={"dropout": jax.random.key(1)})
  b = apply(params, x, g, rngs={"dropout": jax.random.key(1)})
  c = apply(params, x, g, rngs={"dropout": jax.random.key(2)})
  np.testing.assert_array_equal(a, b)
  assert not np.allclose(a, c)
  assert not np.allclose(a, nhwc(rec["out"]), atol=1e-3)


def test_conversion_round_trip_is_bitwise(state, attrs, params):
  back = sr3_critic.params_to_torch({"params": params}, **attrs)
  assert list(back) and sorted(back) == sorted(state)
  for key, value in state.items():
    assert back[key].dtype == value.dtype and back[key].shape == value.shape
    np.testing.assert_array_equal(back[key], value, err_msg=key)
  again = sr3_critic.params_from_torch(back, **attrs)["params"]
  jax.tree.map(np.testing.assert_array_equal, again, params)
  # Layouts: conv OIHW -> HWIO, linear OI -> IO, GroupNorm weight -> scale.
  w = state["downs.1.res_block.block1.block.3.weight"]
  np.testing.assert_array_equal(
      params["downs_1"]["res_block"]["block1"]["block_3"]["kernel"],
      np.transpose(w, (2, 3, 1, 0)))
  np.testing.assert_array_equal(params["noise_level_mlp_1"]["kernel"],
                                state["noise_level_mlp.1.weight"].T)
  np.testing.assert_array_equal(params["final_conv"]["block_0"]["scale"],
                                state["final_conv.block.0.weight"])


def test_import_is_strict_and_names_every_problem(state, attrs):
  bad = dict(state)
  del bad["mid.0.attn.qkv.weight"]
  bad["mid.0.attn.qkv.bias"] = np.zeros(36, np.float32)
  bad["ups.0.res_block.res_conv.weight"] = np.zeros((12, 24, 3, 3),
                                                    np.float32)
  with pytest.raises(ValueError) as info:
    sr3_critic.params_from_torch(bad, **attrs)
  msg = str(info.value)
  assert "missing keys: mid.0.attn.qkv.weight" in msg
  assert "unexpected keys: mid.0.attn.qkv.bias" in msg
  assert "ups.0.res_block.res_conv.weight (12, 24, 3, 3) (expected " \
      "(12, 24, 1, 1))" in msg
  # The other config's state does not fit either.
  with pytest.raises(ValueError, match="wrong shapes"):
    sr3_critic.params_from_torch(state, **{**attrs, "inner_channel": 9})


def _shapes(attrs, levels):
  side = 2 ** (levels - 1)
  model = sr3_critic.SR3UNet(**attrs)
  return jax.eval_shape(
      model.init, jax.random.key(0),
      jax.ShapeDtypeStruct((1, side, side, model.in_channel), jnp.float32),
      jax.ShapeDtypeStruct((1,), jnp.float32))["params"]


def test_parameter_counts_match_the_reference():
  """As torch counts the reference's UNet with these arguments."""
  count = lambda a: sum(int(np.prod(x.shape)) for x in jax.tree.leaves(
      _shapes(a, len(a["channel_mults"]))))
  assert count(sr3_critic.DEFAULTS) == 32_230_691
  assert count(sr3_critic.PRESETS["runlocal"]) == 164_803
  with pytest.raises(ValueError, match="with_noise_level_emb"):
    _shapes({**sr3_critic.DEFAULTS, "with_noise_level_emb": False}, 5)


def _reference_unet():
  torch = pytest.importorskip("torch", reason="torch is not installed")
  root = pathlib.Path(os.environ.get("NOISE_DA", "~/Noise-DA")).expanduser()
  path = root / "models" / "sr3_modules" / "unet.py"
  if not path.is_file():
    pytest.skip(f"no reference checkout at {root} (set NOISE_DA)")
  spec = importlib.util.spec_from_file_location("noise_da_sr3_unet", path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return torch, module.UNet


def test_export_loads_into_the_reference_strictly(rec, attrs, params):
  torch, unet = _reference_unet()
  model = unet(**json.loads(str(rec["config"]))).eval()
  exported = sr3_critic.params_to_torch({"params": params}, **attrs)
  model.load_state_dict({k: torch.from_numpy(v) for k, v in exported.items()},
                        strict=True)
  with torch.no_grad():
    out = model(torch.from_numpy(rec["x"]), torch.from_numpy(rec["gammas"]))
  assert_rel(out.numpy(), rec["out"], tol=1e-6)
