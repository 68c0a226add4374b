"""Test setup: 8 simulated CPU devices, set before jax initialises a backend."""

import os

os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                           " --xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")

import dada_jax  # pylint: disable=g-import-not-at-top,unused-import  # its XLA:CPU flags

import copy  # pylint: disable=g-import-not-at-top
import functools  # pylint: disable=g-import-not-at-top
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
# configs/denoise.py at test size: tiny networks, synthetic data, 6 steps.
RUNLOCAL = str(REPO / "configs/denoise.py") + ":runlocal"
# configs/demo.py (the sim2real benchmark's simulated data), and at test size.
DEMO = str(REPO / "configs/demo.py")
DEMO_RUNLOCAL = DEMO + ":runlocal"


@functools.cache
def _loaded(spec, overrides):
  from dada_jax import config_lib  # pylint: disable=g-import-not-at-top
  return config_lib.load_config(spec, list(overrides))


def cached_config(spec=RUNLOCAL, overrides=()):
  """`config_lib.load_config(spec, overrides)`, run once per session; every
  call returns its own copy (locked, as loaded) to change."""
  return copy.deepcopy(_loaded(spec, tuple(overrides)))


def tiny_config(mode="dda", **data_fields):
  """The train-step tests' config: RUNLOCAL with objective `mode`, α ramping
  over 4 steps, batches of 8 patches of 8x8, then `data_fields`."""
  c = cached_config()
  c.objective.mode = mode
  c.objective.ramp_steps = 4
  c.data.batch_size = 8
  c.data.patch_size = 8
  c.data.update(data_fields)
  return c


def train_config(total_steps, *, spec=RUNLOCAL, one_device=False,
                 **train_fields):
  """`spec` (cached) for end-to-end training runs: 16x16 patches,
  `total_steps` steps logged every step, no evaluation, synchronous
  checkpoints, no TensorBoard, then `train_fields`. `one_device`: a mesh of
  one device (Orbax saves of arrays split over 8 simulated devices cost
  seconds each)."""
  c = cached_config(spec)
  if one_device:
    c.mesh = (("data", 1),)
  c.data.patch_size = 16
  c.train.update(total_steps=total_steps, log_every=1, eval_every=0,
                 async_ckpt=False, tensorboard=False)
  c.train.update(train_fields)
  return c


def restored_params(workdir, step, use_ema=False):
  """{role: params} of `workdir`'s checkpoint `step` (its EMA with
  `use_ema`), opened read-only."""
  from dada_jax import checkpoint  # pylint: disable=g-import-not-at-top
  ckpt = checkpoint.Checkpointer(str(workdir), read_only=True)
  try:
    return ckpt.restore_params(step, use_ema=use_ema)
  finally:
    ckpt.close()


def random_batch(config, seed=0):
  """A training batch of config's shape: noisy synthetic pairs (σ 0.1) and
  uniform real and reference images, all float32 in [0, 1] (lq unclipped)."""
  rng = np.random.default_rng(seed)
  shape = (config.data.batch_size, config.data.patch_size,
           config.data.patch_size, 3)
  gt = rng.uniform(0, 1, shape).astype(np.float32)
  return {"syn_gt": gt,
          "syn_lq": gt + rng.normal(0, 0.1, shape).astype(np.float32),
          "real_lq": rng.uniform(0, 1, shape).astype(np.float32),
          "ref_clean": rng.uniform(0, 1, shape).astype(np.float32)}


def compiled_step(config, mesh, state=None):
  """(state, step, state shardings, batch sharding) on `mesh`: the initial
  state from config.seed (or `state`, host arrays, put on the mesh), and the
  jitted train step with the trainer's shardings, the state donated."""
  from dada_jax import sharding  # pylint: disable=g-import-not-at-top
  from dada_jax import train_step as step_lib  # pylint: disable=g-import-not-at-top
  init = functools.partial(step_lib.init_state, config)
  init_rng = jax.random.key(config.seed)
  shapes = jax.eval_shape(init, init_rng) if state is None else state
  state_sh = sharding.state_shardings(shapes, mesh, config.sharding)
  batch_sh = sharding.batch_sharding(mesh)
  repl = sharding.replicated(mesh)
  if state is None:
    with jax.set_mesh(mesh):
      state = jax.jit(init, out_shardings=state_sh)(init_rng)
  else:
    state = jax.device_put(state, state_sh)
  step = jax.jit(step_lib.make_train_step(config),
                 in_shardings=(state_sh, batch_sh, repl),
                 out_shardings=(state_sh, repl), donate_argnums=0)
  return state, step, state_sh, batch_sh


def first_step(config, mesh, batch, rng=7):
  """(state, metrics) on the host after one train step from config.seed's
  initial state on `mesh`, with base key `rng`."""
  from dada_jax import sharding  # pylint: disable=g-import-not-at-top
  state, step, _, batch_sh = compiled_step(config, mesh)
  with jax.set_mesh(mesh):
    state, metrics = step(state, sharding.put_batch(batch, batch_sh),
                          jax.random.key(rng))
  return jax.device_get((state, metrics))


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
  from dada_jax.torch_io import convert  # pylint: disable=g-import-not-at-top
  return convert.params_from_state_dict(ref_state, small, source="fixture")


def assert_rel(actual, expected, tol=1e-5):
  """max |actual - expected| / max |expected| <= tol, shapes equal: the
  parity tests' measure (fp32 values 1e-5, gradients 1e-4)."""
  actual, expected = np.asarray(actual), np.asarray(expected)
  assert actual.shape == expected.shape
  err = np.abs(actual - expected).max() / max(np.abs(expected).max(), 1e-12)
  assert err <= tol, f"relative error {err:.3g} > {tol}"


@functools.cache
def packed_record(path, name):
  """(attrs, state, grads, input NHWC, output NHWC, loss) of config `name`
  in a fixture whose state and gradients are packed into flat arrays with a
  JSON key list (tests/fixtures/make_{restormer,nafnet}_fixture.py)."""
  import json  # pylint: disable=g-import-not-at-top
  with np.load(path) as f:
    rec = {k[len(name) + 1:]: f[k] for k in f.files if k.startswith(name + "/")}
  attrs = {k: tuple(v) if isinstance(v, list) else v
           for k, v in json.loads(rec["config"].item()).items()}
  state, grads, offset = {}, {}, 0
  for key, shape in json.loads(rec["keys"].item()):
    size = int(np.prod(shape))
    state[key] = rec["state"][offset:offset + size].reshape(shape)
    grads[key] = rec["grad"][offset:offset + size].reshape(shape)
    offset += size
  return (attrs, state, grads, nhwc(rec["input"]), nhwc(rec["output"]),
          rec["loss"])


def nhwc(x):
  return np.transpose(np.asarray(x), (0, 2, 3, 1))
