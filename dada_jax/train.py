"""The one training loop, and `train_and_evaluate(config, workdir)` built on it.

  init_state(config, mesh, rng, params=None)  a fresh state in its shardings
  run_steps(config, mesh, state, ...)         the donated, jitted step in a
                                              loop, with an `on_step` hook
  train_and_evaluate(config, workdir)         resume or init, then run_steps
                                              with logging, EMA evaluation,
                                              Orbax checkpoints and signals

Experiments (`dada_jax.sim2real`) build their runs from the first two, so
every run trains through the same code.

Resume order: the workdir's newest checkpoint that restores (state, EMA,
data iterator, step), else `config.train.init_from` (a converted or official
PyTorch checkpoint, or another run's workdir), else a fresh init from
`config.seed`.
"""

from __future__ import annotations

import functools
import json
import signal

from absl import logging
import jax
from jax.experimental import multihost_utils
import ml_collections as mlc

from dada_jax import checkpoint as ckpt_lib
from dada_jax import config_lib
from dada_jax import faults
from dada_jax import metric_writer
from dada_jax import models
from dada_jax import sharding
from dada_jax import train_step as step_lib
from dada_jax import weights
from dada_jax.data import train_data


def resolve_epochs(config: mlc.ConfigDict, num_syn: int) -> None:
  """Fills objective.steps_per_epoch / ramp_steps when set to -1 (auto).

  The reference's epoch is one pass over the synthetic set with
  drop_last=True, and α ramps over 300 epochs.
  """
  o = config.objective
  if o.steps_per_epoch < 0:
    o.steps_per_epoch = max(num_syn // config.data.batch_size, 1)
  if o.ramp_steps < 0:
    o.ramp_steps = 300 * max(o.steps_per_epoch, 1)


def init_state(config: mlc.ConfigDict, mesh: jax.sharding.Mesh, rng,
               params=None):
  """(state, state shardings): a fresh train state placed by the sharding rules.

  Args:
    config: the run's config (models, optimizer, `sharding`).
    mesh: from `sharding.make_mesh`.
    rng: key for the random init of roles missing from `params`.
    params: optional {role: weights} replacing the random init (host
      arrays; a restorer's BatchNorm statistics, if any, come with it).
  """
  init = functools.partial(step_lib.init_state, config)
  shape = jax.eval_shape(init, rng, params)
  shardings = sharding.state_shardings(shape, mesh, config.sharding)
  with jax.set_mesh(mesh):
    state = jax.jit(init, out_shardings=shardings)(rng, params)
  return state, shardings


def run_steps(config: mlc.ConfigDict, mesh: jax.sharding.Mesh, state,
              state_sharding, data_iter, rng, *, stop: int, on_step=None):
  """Trains `state` from its current step up to step `stop`; returns it.

  Args:
    config: the run's config (objective, optimizer).
    mesh, state_sharding: where the state lives (see `init_state`).
    data_iter: this host's batches (`train_data.make_train_data`).
    rng: the run's step key; each step folds in its step number.
    stop: the step count to reach.
    on_step: `on_step(step, state, metrics)` after each step (`step` counts
      the steps done). Metrics stay on the device: fetch them only when
      needed. Raising from it ends the loop.
  """
  step_fn = sharding.jit_train_step(step_lib.make_train_step(config), mesh,
                                    state_sharding)
  batch_sharding = sharding.batch_sharding(mesh)
  step = int(jax.device_get(state["step"]))
  with jax.set_mesh(mesh):
    while step < stop:
      batch = sharding.put_batch(next(data_iter), batch_sharding)
      with jax.profiler.StepTraceAnnotation("train", step_num=step):
        state, metrics = step_fn(state, batch, rng)
      step += 1
      if on_step is not None:
        on_step(step, state, metrics)
  return state


def _initial_state(config, workdir, mesh, shape, checkpointer, data_iter,
                   init_rng):
  """(state, shardings): resumed, initialised from init_from, or fresh.

  `shape` is the state's ShapeDtypeStruct tree.
  """
  current = json.loads(config.to_json())
  shardings = sharding.state_shardings(shape, mesh, config.sharding)
  target = ckpt_lib.abstract_with_shardings(shape, shardings)

  def restore(step):
    saved = checkpointer.restore_meta(step).get("config", {})
    problem = faults.resume_problem(saved, current,
                                    checkpointer.step_dir(step))
    if problem:
      raise config_lib.ConfigError(problem)
    return checkpointer.restore(step, target, data_iter)

  # Unreadable newer steps are moved aside: this run saves those steps again.
  step, state = checkpointer.restore_newest(restore, move_aside=True)
  if step is not None:
    logging.info("resuming from %s step %d", workdir, step)
    return state, shardings
  params = None
  if config.train.init_from:
    params = weights.load_params(config.train.init_from, config,
                                 step_lib.roles(config))
    logging.info("initialising params from %s", config.train.init_from)
  return init_state(config, mesh, init_rng, params)


def train_and_evaluate(config: mlc.ConfigDict, workdir: str) -> dict:
  """Trains until config.train.total_steps; returns the last logged metrics."""
  from dada_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  mesh = sharding.make_mesh(config)
  config_lib.validate(config, num_devices=mesh.shape["data"])
  t = config.train

  eval_fn = evaluate.build_eval(config)  # validates eval data up front
  data_iter, num_syn = train_data.make_train_data(config)
  resolve_epochs(config, num_syn)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state_shape = jax.eval_shape(
      functools.partial(step_lib.init_state, config), init_rng)
  state_bytes = sum(x.size * x.dtype.itemsize
                    for x in jax.tree.leaves(state_shape))
  faults.check_workdir(workdir, (t.keep_ckpts + 1) * state_bytes)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=t.keep_ckpts,
                                       async_save=t.async_ckpt)
  state, state_sharding = _initial_state(config, workdir, mesh, state_shape,
                                         checkpointer, data_iter, init_rng)
  step = int(jax.device_get(state["step"]))
  logging.info("step %d, params: %s", step, ", ".join(
      f"{r} {models.count_params(p):,}" for r, p in state["params"].items()))

  writer = metric_writer.MetricWriter(workdir, tensorboard=t.tensorboard,
                                      resume_step=step)
  writer.write_config(config, resume_step=step)
  progress = metric_writer.Progress(
      t.total_steps, start_step=step, global_batch_size=config.data.batch_size,
      bar=t.progress_bar, enabled=jax.process_index() == 0)

  def save(step, state):
    if int(jax.device_get(state["bad_steps"])):
      logging.warning("step %d: not checkpointing inside a streak of "
                      "skipped steps", step)
      return
    try:
      checkpointer.save(step, state, data_iter, config)
    except OSError as e:
      raise faults.TrainingStopped(
          f"step {step}: saving the checkpoint failed ({e}); earlier "
          f"checkpoints in {ckpt_lib.checkpoint_dir(workdir)} are intact: "
          f"{checkpointer.all_steps()}") from e

  last = {}

  def on_step(step, state, metrics):
    nonlocal last
    final = step == t.total_steps
    if step % t.log_every == 0 or final:
      last = {k: float(v) for k, v in jax.device_get(metrics).items()}
      last.update(progress.update(step, last))
      writer.write_scalars(step, last)
      _check_streak(state, step, t.max_bad_steps, checkpointer, workdir)
    if t.eval_every and eval_fn and (step % t.eval_every == 0 or final):
      ema_restorer = jax.device_get(models.with_stats(
          state["ema"]["restorer"],
          state.get("batch_stats", {}).get("restorer")))
      results = eval_fn(ema_restorer, step=step, workdir=workdir)
      writer.write_scalars(step, {f"eval/{k}": v for k, v in results.items()})
    if step % t.ckpt_every == 0 or final:
      save(step, state)
    received = signals.received
    if multi_process and multihost_utils.reached_preemption_sync_point(step):
      received = signal.SIGTERM  # every process stops after this same step
    if received is not None:
      if step % t.ckpt_every and not final:
        save(step, state)
      checkpointer.wait()
      name = signal.Signals(received).name
      raise faults.TrainingStopped(
          f"stopped by {name} at step {step}; checkpoint saved in "
          f"{ckpt_lib.checkpoint_dir(workdir)}; rerun the same command "
          "to continue", exit_code=128 + received)

  # One process must not checkpoint alone (a collective save), so with several
  # processes SIGTERM is left to JAX's preemption notifier, which makes all of
  # them stop after the same step, and SIGINT keeps its default.
  multi_process = jax.process_count() > 1
  try:
    with faults.SignalCatcher(() if multi_process else None) as signals:
      run_steps(config, mesh, state, state_sharding, data_iter, step_rng,
                stop=t.total_steps, on_step=on_step)
  finally:
    checkpointer.close()
    progress.close()
    writer.close()
  return last


def _check_streak(state, step, max_bad, checkpointer, workdir):
  bad = int(jax.device_get(state["bad_steps"]))
  if bad >= max_bad:
    good = checkpointer.latest_step()
    where = (f"{ckpt_lib.checkpoint_dir(workdir)}/{good}" if good is not None
             else "none yet")
    raise faults.TrainingStopped(
        f"step {step}: the last {bad} steps had non-finite loss or gradients "
        f"and were skipped (config.train.max_bad_steps={max_bad}); last good "
        f"checkpoint: {where} (left intact)")
