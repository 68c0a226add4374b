"""bench.profile: the op classes a profile table is made of."""

import jax
import jax.numpy as jnp

from dada_jax.bench import profile


def _step(w, x, q):
  y = jax.lax.conv_general_dilated(x, w, (1, 1), "SAME",
                                   dimension_numbers=("NHWC", "HWIO", "NHWC"))
  keep = jax.random.bernoulli(jax.random.key(0), 0.8, y.shape)
  return jnp.sum(jnp.tanh(jnp.where(keep, y, 0.0) @ q))  # needs y itself


def test_each_convolution_is_classed_by_its_role():
  w, x, q = jnp.ones((3, 3, 4, 8)), jnp.ones((2, 16, 16, 4)), jnp.ones((8, 8))
  grad = jax.jit(jax.grad(_step, argnums=(0, 1)))
  hlo = grad.lower(w, x, q).compile().as_text()
  classify = profile.hlo_classifier(hlo)
  names = [line.split("=")[0].split("%")[-1].strip()
           for line in hlo.splitlines() if " = " in line and "%" in line]
  classes = {classify(n) for n in names}
  assert {"conv forward", "conv input-grad", "conv weight-grad", "matmul",
          "RNG"} <= classes, classes
  assert classify("ThunkExecutor::Execute") is None  # not an instruction


def test_reference_ops_are_classed_by_aten_name():
  assert profile.torch_class("aten::convolution_backward") == (
      "conv backward (input + weight)")
  assert profile.torch_class("aten::mkldnn_convolution") == "conv forward"
  assert profile.torch_class("aten::native_group_norm") == "normalisation"
  assert profile.torch_class("aten::bernoulli_") == "RNG"
  assert profile.torch_class("aten::_foreach_addcdiv_") == "optimizer + EMA"
  assert profile.torch_class("aten::cat") == "copies, transposes, concat/pad"
  assert profile.torch_class("aten::silu") == "elementwise"
  assert profile.torch_class("aten::bmm") == "matmul"


def test_table_puts_ours_beside_the_reference():
  ours = {"seconds": {"conv weight-grad": 3.0, "elementwise": 1.0},
          "wall_s": 3.5, "cores_used": 1.8}
  ref = {"seconds": {"conv backward (input + weight)": 2.0,
                     "elementwise": 2.0}, "wall_s": 4.0, "cores_used": 1.9}
  rows = profile.table(ours, ref).splitlines()
  assert "| conv weight-grad | 3.00 | 75% | 0.00 | 0% |" in rows
  assert "| elementwise | 1.00 | 25% | 2.00 | 50% |" in rows
  assert "| step wall | 3.50 | | 4.00 | |" in rows
  assert "| cores used | 1.80 | | 1.90 | |" in rows
  assert "| step wall | 3.50 | | - | |" in profile.table(ours).splitlines()
