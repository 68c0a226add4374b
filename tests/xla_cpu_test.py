"""dada_jax's XLA:CPU kernel choice: set on import, effective, overridable."""

import os
import subprocess
import sys

from dada_jax import xla_cpu

_PROBE = """
import dada_jax, jax, jax.numpy as jnp
x = jnp.ones((2, 32, 32, 64)); w = jnp.ones((3, 3, 64, 64))
conv = lambda w: jax.lax.conv_general_dilated(
    x, w, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")).sum()
print("__ynn_fusion" in jax.jit(jax.grad(conv)).lower(w).compile().as_text())
"""


def _uses_ynn_for_convolutions(**env) -> bool:
  environ = {k: v for k, v in os.environ.items()
             if k not in ("XLA_FLAGS", xla_cpu.KEEP_DEFAULTS)}
  out = subprocess.run([sys.executable, "-c", _PROBE], env={**environ, **env},
                       capture_output=True, text=True, check=True)
  return out.stdout.strip().splitlines()[-1] == "True"


def test_flag_is_appended_once_and_user_flags_win():
  env = {"XLA_FLAGS": "--xla_force_host_platform_device_count=8"}
  assert xla_cpu.prefer_eigen_convolutions(env, jaxlib_version="0.10.2")
  assert env["XLA_FLAGS"] == ("--xla_force_host_platform_device_count=8 "
                              f"{xla_cpu.YNN_FLAG}=")
  assert not xla_cpu.prefer_eigen_convolutions(env, jaxlib_version="0.10.2")
  assert env["XLA_FLAGS"].count(xla_cpu.YNN_FLAG) == 1
  mine = {"XLA_FLAGS": f"{xla_cpu.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT"}
  assert not xla_cpu.prefer_eigen_convolutions(mine, jaxlib_version="0.10.2")
  assert mine["XLA_FLAGS"] == f"{xla_cpu.YNN_FLAG}=LIBRARY_FUSION_TYPE_DOT"


def test_opt_out_and_untested_jaxlib_leave_xla_flags_alone():
  keep = {xla_cpu.KEEP_DEFAULTS: "1"}
  assert not xla_cpu.prefer_eigen_convolutions(keep, jaxlib_version="0.10.2")
  assert "XLA_FLAGS" not in keep
  newer = {}  # an unknown XLA flag aborts the process: only tested jaxlibs
  assert not xla_cpu.prefer_eigen_convolutions(newer, jaxlib_version="0.12.0")
  assert "XLA_FLAGS" not in newer


def test_importing_dada_jax_moves_convolutions_off_ynnpack():
  assert not _uses_ynn_for_convolutions()
  assert _uses_ynn_for_convolutions(**{xla_cpu.KEEP_DEFAULTS: "1"})
