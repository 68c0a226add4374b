"""Test setup: 8 simulated CPU devices, set before jax initialises a backend."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import pathlib  # pylint: disable=g-import-not-at-top
import tempfile  # pylint: disable=g-import-not-at-top

from absl import flags  # pylint: disable=g-import-not-at-top
import jax  # pylint: disable=g-import-not-at-top
import numpy as np  # pylint: disable=g-import-not-at-top
import pytest  # pylint: disable=g-import-not-at-top

flags.FLAGS.mark_as_parsed()
jax.config.update("jax_default_matmul_precision", "highest")
# Compile time dominates these tiny-model tests: fewer XLA passes, and a
# compilation cache shared by the tests of this session (identical steps
# built by different tests compile once).
jax.config.update("jax_disable_most_optimizations", True)
jax.config.update("jax_compilation_cache_dir",
                  tempfile.mkdtemp(prefix="dada_jax_xla_cache_"))
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.5)

FIXTURES = pathlib.Path(__file__).parent / "fixtures"
REPO = pathlib.Path(__file__).parent.parent

# configs/denoise.py shrunk by overrides to the fixture model's shape (the
# reference's small run, noise_da_small.json), for command-line tests.
SMALL_ARGS = [
    "--config", str(REPO / "configs/denoise.py"), "--config.restorer.depth=3",
    "--config.restorer.wf=16", "--config.critic.inner_channels=32",
    "--config.critic.channel_mults=(1,2)", "--config.critic.res_blocks=1",
    "--config.critic.attn_res=(2,)", "--config.critic.num_head_channels=16",
    "--config.predict.tile=64", "--config.predict.tile_overlap=16",
    "--config.predict.max_untiled_pixels=4096"]


@pytest.fixture(scope="session")
def ref():
  """The PyTorch reference's recorded small-config run (see fixtures/README)."""
  with np.load(FIXTURES / "noise_da_small.npz") as data:
    return {k: data[k] for k in data.files}


@pytest.fixture(scope="session")
def ref_state(ref):
  return {k[len("state/"):]: v for k, v in ref.items() if k.startswith("state/")}


def small_config():
  """Our config for the reference's small fixture model (noise_da_small.json)."""
  import json  # pylint: disable=g-import-not-at-top
  from dada_jax import config_lib  # pylint: disable=g-import-not-at-top
  meta = json.loads((FIXTURES / "noise_da_small.json").read_text())
  c = config_lib.base_config("denoise")
  r, k, s = meta["restorer"], meta["critic"], meta["schedule"]
  c.restorer.update(depth=r["depth"], wf=r["wf"], slope=r["slope"])
  c.critic.update(
      in_channels=k["in_channel"], out_channels=k["out_channel"],
      inner_channels=k["inner_channel"],
      channel_mults=tuple(k["channel_mults"]), res_blocks=k["res_blocks"],
      attn_res=tuple(k["attn_res"]), num_head_channels=k["num_head_channels"],
      dropout=k["dropout"])
  c.diffusion.update(schedule=s["schedule"], num_timesteps=s["n_timestep"],
                     linear_start=s["linear_start"], linear_end=s["linear_end"])
  return c


@pytest.fixture(scope="session")
def small():
  return small_config()


@pytest.fixture(scope="session")
def small_params(ref_state, small):
  from dada_jax import convert_torch  # pylint: disable=g-import-not-at-top
  return convert_torch.params_from_state_dict(ref_state, small,
                                              source="fixture")


def nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))
