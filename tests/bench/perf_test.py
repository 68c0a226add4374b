"""Performance switches keep the numbers: bf16, remat, one compile, FSDP.

Every reference here is the unsharded fp32 objective at the exact params,
batch, draws, dropout key and α of the train step's first step, so one
compiled train step (the costly compile of this file) serves two tests.
"""

import functools
import re

import jax
import numpy as np

from conftest import cached_config
from conftest import compiled_step
from conftest import random_batch
from dada_jax import objective
from dada_jax import sharding
from dada_jax import train_step as step_lib

LOWER_EVENT = "/jax/core/compile/jaxpr_to_mlir_module_duration"
STEP_RNG = 3


def config(**fields):
  """Runlocal models, batch 8 of 16x16 (CPU time), α at full weight from
  step 0; `fields` override config fields, `__` standing for `.`."""
  c = cached_config(overrides=[f"{k.replace('__', '.')}={v!r}"
                                for k, v in fields.items()])
  c.objective.ramp_steps = 1
  c.data.patch_size = 16
  return c


@functools.cache
def initial_state():
  """The fresh fp32 state (host arrays); params do not depend on dtype."""
  c = config()
  return jax.device_get(jax.jit(functools.partial(step_lib.init_state, c))(
      jax.random.key(c.seed)))


@functools.cache
def loss_and_grads(dtype="float32", remat=False):
  """DDA loss, grads and the grad jaxpr with train step 0's draws and keys."""
  c = config(dtype=dtype, train__remat=remat)
  params = initial_state()["params"]
  batch = random_batch(c)
  # What train_step draws at step 0 from the base key STEP_RNG.
  rng = jax.random.fold_in(jax.random.key(STEP_RNG), 0)
  draws = objective.sample_draws(jax.random.split(rng)[0],
                                 batch["syn_gt"].shape,
                                 c.diffusion.num_timesteps)
  alpha = step_lib.alpha_at(c, 0)
  loss_fn = objective.make_objective(c)
  fn = lambda p: loss_fn(p, batch, rng, alpha, draws=draws)[0]
  traced = jax.jit(jax.value_and_grad(fn)).trace(params)
  loss, grads = traced.lower().compile()(params)
  return float(loss), jax.device_get(grads), traced.jaxpr


def flat(tree):
  return np.concatenate([np.ravel(x) for x in jax.tree.leaves(tree)])


def test_bfloat16_loss_and_grads_stay_close_to_float32():
  """bf16 keeps 8 significant bits (unit round-off 2^-9 = 2e-3 per op).

  Round-off through the ~20 layers of each net grows like a random walk,
  ~sqrt(20)·2e-3 ≈ 1e-2 per element at worst, and the losses average
  thousands of elements; 2e-2 on the total loss leaves room. Gradients
  keep their direction: cosine > 0.99.
  """
  l32, g32, _ = loss_and_grads("float32")
  l16, g16, jaxpr = loss_and_grads("bfloat16")
  rel = abs(l16 - l32) / abs(l32)
  assert rel < 2e-2, (l16, l32)
  # bf16 took effect: the convs run in bf16 and the loss moved well beyond
  # fp32 round-off (~1e-7).
  assert "bf16" in str(jaxpr)
  assert rel > 1e-5, (l16, l32, rel)
  cos = {}
  for role in ("restorer", "critic"):
    a, b = flat(g32[role]), flat(g16[role])
    assert np.all(np.isfinite(b)), role
    cos[role] = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
  print(f"bf16 vs fp32: loss rel. error {rel:.2e}, grad cosine {cos}")
  assert min(cos.values()) > 0.99, cos


def test_remat_changes_nothing_but_the_program():
  l0, g0, jaxpr0 = loss_and_grads(remat=False)
  l1, g1, jaxpr1 = loss_and_grads(remat=True)
  np.testing.assert_allclose(l1, l0, rtol=1e-6)
  # Recomputing the forward pass is a different XLA program (other fusions,
  # other summation orders): fp32 round-off, ~sqrt(n)·6e-8 over reductions
  # of n ~ 1e3 terms, i.e. ~1e-6 relative, not more.
  for role in ("restorer", "critic"):
    a, b = flat(g0[role]), flat(g1[role])
    rel = np.linalg.norm(b - a) / np.linalg.norm(a)
    print(f"remat: {role} grads rel. difference {rel:.1e}")
    assert rel <= 1e-5, role
  # The flag is not ignored: the critic sits inside a remat (checkpoint)
  # primitive only when asked for.
  remat = lambda j: len(re.findall(r"\b(?:remat\d*|checkpoint)\[", str(j)))
  assert remat(jaxpr1) >= 1 and remat(jaxpr0) == 0


def test_remat_policy_reaches_the_checkpoint():
  """train.remat_policy is the policy of each critic ResBlock's checkpoint
  (traced only: the numbers are remat's, checked above)."""
  c = config(train__remat=True, train__remat_policy="dots_saveable")
  params, batch = initial_state()["params"], random_batch(c)
  loss_fn = objective.make_objective(c)
  jaxpr = jax.make_jaxpr(jax.grad(
      lambda p: loss_fn(p, batch, jax.random.key(0), 0.2)[0]))(params)
  policies = [p.replace("_", "").lower() for p in re.findall(
      r"policy=<?(?:function )?(\w+)", str(jaxpr))]
  # One checkpoint per critic ResBlock (not one around the whole critic).
  assert len(policies) >= 2 and set(policies) == {"dotssaveable"}, policies


def assert_shardings(state, state_sh):
  for leaf, want in zip(jax.tree.leaves(state), jax.tree.leaves(state_sh)):
    assert leaf.sharding.is_equivalent_to(want, leaf.ndim), (leaf.sharding,
                                                              want)


def param_bytes_on_device0(state):
  return sum(x.addressable_shards[0].data.nbytes
             for x in jax.tree.leaves(state["params"]))


@functools.cache
def fsdp_steps():
  """Three FSDP steps of the step jitted as train.py does, on 8 devices.

  Returns the lowerings of the step seen by a jax.monitoring listener, the
  jit cache size, each step's metrics and the final step counter; checks
  the state shardings after every step.
  """
  c = config(sharding="fsdp")
  mesh = sharding.make_mesh(c)
  assert mesh.shape["data"] == 8
  state, step, state_sh, batch_sh = compiled_step(c, mesh, initial_state())
  batches = [sharding.put_batch(random_batch(c, i), batch_sh)
             for i in range(3)]
  rng = jax.random.key(STEP_RNG)
  lowered, metrics = [], []

  def listen(event, duration, **kw):
    del duration
    if event == LOWER_EVENT and "train_step" in str(kw.get("fun_name")):
      lowered.append(kw["fun_name"])

  jax.monitoring.register_event_duration_secs_listener(listen)
  try:
    with jax.set_mesh(mesh):
      for b in batches:
        state, m = step(state, b, rng)
        assert_shardings(state, state_sh)
        metrics.append(jax.device_get(m))
  finally:
    jax.monitoring.unregister_event_duration_listener(listen)
  return dict(lowered=lowered, metrics=metrics,
              cache_size=step._cache_size(),  # pylint: disable=protected-access
              step=int(state["step"]))


def test_sharded_step_compiles_once():
  run = fsdp_steps()
  assert len(run["lowered"]) == 1, run["lowered"]
  assert run["cache_size"] == 1
  assert run["step"] == 3
  assert all(np.isfinite(m["loss/total"]) for m in run["metrics"])
  assert all(m["skipped"] == 0 for m in run["metrics"])


def test_fsdp_shards_params_and_keeps_the_loss():
  """FSDP holds ~1/8 of the params per device and computes the same step.

  The reference is the unsharded objective at step 0's draws, which is what
  the replicated step computes (train_step_test checks replicated steps
  against one device).
  """
  c = config()
  mesh = sharding.make_mesh(c)
  host = initial_state()
  nbytes = {s: param_bytes_on_device0(jax.device_put(
      host, sharding.state_shardings(host, mesh, s)))
            for s in ("replicate", "fsdp")}
  ratio = nbytes["replicate"] / nbytes["fsdp"]
  print(f"per-device param bytes: {nbytes}, ratio {ratio:.2f}")
  assert ratio > 6, nbytes
  first = fsdp_steps()["metrics"][0]
  loss, grads, _ = loss_and_grads()
  np.testing.assert_allclose(first["loss/total"], loss, rtol=1e-5)
  for role in ("restorer", "critic"):
    np.testing.assert_allclose(first[f"grad_norm/{role}"],
                               np.linalg.norm(flat(grads[role])), rtol=1e-5,
                               err_msg=role)
