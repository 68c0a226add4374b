"""The training loop: `train_and_evaluate(config, workdir)`.

Mesh from config, Grain input, state initialised (or resumed) directly into its
shardings, one jit-compiled donated train step, metrics fetched to the host
only on log steps, periodic EMA evaluation and async Orbax checkpoints.

Resume order: the workdir's latest checkpoint (state, EMA, data iterator,
step), else `config.train.init_from` (a converted or official PyTorch
checkpoint, or another run's workdir), else a fresh init from `config.seed`.
"""

from __future__ import annotations

import functools
import json
import signal

from absl import logging
import jax
import ml_collections as mlc

from dada_jax import checkpoint as ckpt_lib
from dada_jax import config_lib
from dada_jax import data
from dada_jax import faults
from dada_jax import metric_writer
from dada_jax import models
from dada_jax import sharding
from dada_jax import train_step as step_lib
from dada_jax import weights


def check_config(config: mlc.ConfigDict, num_devices: int) -> None:
  """Training-specific checks, each naming the field."""
  config_lib.validate(config)
  d, t = config.data, config.train
  data_size = num_devices
  if d.batch_size % data_size:
    raise config_lib.ConfigError(
        f"config.data.batch_size={d.batch_size} is not divisible by the "
        f"{data_size} devices of the data axis")
  multiple = max(models.pad_multiple(config),
                 2 ** (len(config.critic.channel_mults) - 1))
  if d.patch_size % multiple:
    raise config_lib.ConfigError(
        f"config.data.patch_size={d.patch_size} must be a multiple of "
        f"{multiple} (restorer depth and critic levels)")
  if config.objective.mode == "dda_ex" and d.ref.kind == "none":
    raise config_lib.ConfigError("config.objective.mode='dda_ex' needs a clean "
                                 "reference stream: set config.data.ref.kind")
  for name in ("total_steps", "log_every", "ckpt_every", "max_bad_steps"):
    if t[name] <= 0:
      raise config_lib.ConfigError(f"config.train.{name}={t[name]} must be "
                                   "positive")


def make_train_data(config: mlc.ConfigDict):
  """The infinite training iterator of this host, and the synthetic set size."""
  d = config.data
  syn = data.build_source(d.syn, "config.data.syn")
  real = None
  if config.objective.mode != "vanilla":
    real = data.build_source(d.real, "config.data.real")
  ref = None
  if config.objective.mode == "dda_ex":
    ref = data.build_source(d.ref, "config.data.ref")
  if syn is None or (config.objective.mode != "vanilla" and real is None):
    raise data.DataError("config.data.syn and config.data.real need a kind")
  ds = data.make_train_dataset(
      syn, real, ref, patch_size=d.patch_size, global_batch_size=d.batch_size,
      seed=config.seed, value_range=d.value_range, augment=d.augment,
      sigma_range=tuple(d.sigma_range), num_workers=d.num_workers,
      check_files=d.check_files)
  return iter(ds), len(syn)


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


def _initial_state(config, workdir, mesh, state_sharding, state_shape,
                   checkpointer, data_iter, init_rng):
  current = json.loads(config.to_json())
  target = ckpt_lib.abstract_with_shardings(state_shape, state_sharding)

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
    return state
  init = functools.partial(step_lib.init_state, config)
  if config.train.init_from:
    params = weights.load_params(config.train.init_from, config,
                                 step_lib.roles(config))
    logging.info("initialising params from %s", config.train.init_from)
    with jax.set_mesh(mesh):
      return jax.jit(lambda p: init(init_rng, p),
                     out_shardings=state_sharding)(params)
  with jax.set_mesh(mesh):
    return jax.jit(init, out_shardings=state_sharding)(init_rng)


def train_and_evaluate(config: mlc.ConfigDict, workdir: str) -> dict:
  """Trains until config.train.total_steps; returns the last logged metrics."""
  from dada_jax import evaluate  # pylint: disable=g-import-not-at-top
  config = config.copy_and_resolve_references()
  mesh = sharding.make_mesh(config)
  check_config(config, mesh.shape["data"])
  t = config.train

  eval_fn = evaluate.build_eval(config)  # validates eval data up front
  data_iter, num_syn = make_train_data(config)
  resolve_epochs(config, num_syn)
  init_rng, step_rng = jax.random.split(jax.random.key(config.seed))
  state_shape = jax.eval_shape(
      functools.partial(step_lib.init_state, config), init_rng)
  state_sharding = sharding.state_shardings(state_shape, mesh, config.sharding)
  batch_sharding = sharding.batch_sharding(mesh)

  state_bytes = sum(x.size * x.dtype.itemsize
                    for x in jax.tree.leaves(state_shape))
  faults.check_workdir(workdir, (t.keep_ckpts + 1) * state_bytes)
  checkpointer = ckpt_lib.Checkpointer(workdir, keep=t.keep_ckpts,
                                       async_save=t.async_ckpt)
  state = _initial_state(config, workdir, mesh, state_sharding, state_shape,
                         checkpointer, data_iter, init_rng)
  step = int(jax.device_get(state["step"]))
  logging.info("step %d, params: %s", step, ", ".join(
      f"{r} {models.count_params(p):,}" for r, p in state["params"].items()))
  train_step = sharding.jit_train_step(step_lib.make_train_step(config),
                                       mesh, state_sharding)

  writer = metric_writer.MetricWriter(workdir, tensorboard=t.tensorboard,
                                      resume_step=step)
  writer.write_config(config, resume_step=step)
  progress = metric_writer.Progress(
      t.total_steps, start_step=step, global_batch_size=config.data.batch_size,
      bar=t.progress_bar, enabled=jax.process_index() == 0)

  def save(step):
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
  try:
    with faults.SignalCatcher() as signals, jax.set_mesh(mesh):
      while step < t.total_steps:
        batch = sharding.put_batch(next(data_iter), batch_sharding)
        with jax.profiler.StepTraceAnnotation("train", step_num=step):
          state, metrics = train_step(state, batch, step_rng)
        step += 1
        if step % t.log_every == 0 or step == t.total_steps:
          last = {k: float(v) for k, v in jax.device_get(metrics).items()}
          last.update(progress.update(step, last))
          writer.write_scalars(step, last)
          _check_streak(state, step, t.max_bad_steps, checkpointer, workdir)
        if t.eval_every and eval_fn and (step % t.eval_every == 0
                                         or step == t.total_steps):
          ema_restorer = jax.device_get(state["ema"]["restorer"])
          results = eval_fn(ema_restorer, step=step, workdir=workdir)
          writer.write_scalars(step, {f"eval/{k}": v for k, v in
                                      results.items()})
        if step % t.ckpt_every == 0 or step == t.total_steps:
          save(step)
        if signals.received is not None:
          if step % t.ckpt_every and step != t.total_steps:
            save(step)
          checkpointer.wait()
          name = signal.Signals(signals.received).name
          raise faults.TrainingStopped(
              f"stopped by {name} at step {step}; checkpoint saved in "
              f"{ckpt_lib.checkpoint_dir(workdir)}; rerun the same command "
              "to continue", exit_code=128 + signals.received)
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
