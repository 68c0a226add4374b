"""Joining a multi-process (multi-host) run: `dada-jax train --multihost`.

Every process of the job runs the same command. Where the job's shape comes
from, in order:

  JAX_COORDINATOR_ADDRESS  host:port of process 0's coordinator (read by JAX;
                           overrides what auto-detection would pick)
  JAX_NUM_PROCESSES,       the process count and this process's id, for
  JAX_PROCESS_ID           launches without a cluster manager (read here)
  auto-detection           Cloud TPU VMs (from the TPU metadata), SLURM
                           (SLURM_JOB_ID, SLURM_STEP_NODELIST, SLURM_NTASKS,
                           SLURM_PROCID, SLURM_LOCALID), Open MPI, Kubernetes

On CPUs the processes exchange collectives through gloo. A process that does
not reach the coordinator, or whose peers do not all arrive, stops after
`timeout_s` with one line saying so instead of hanging or aborting with a
C++ stack trace (`MultihostError`, reported by the CLI).
"""

from __future__ import annotations

import os
import sys
import threading

from dada_jax import errors

NUM_PROCESSES = "JAX_NUM_PROCESSES"
PROCESS_ID = "JAX_PROCESS_ID"
COORDINATOR = "JAX_COORDINATOR_ADDRESS"
# XLA's own connection timeout is set this much later than ours, so that the
# clear message wins the race against XLA's fatal abort.
_GRACE_S = 30


class MultihostError(errors.UserError):
  """The job's shape is malformed in the environment."""


def _int_env(name: str, environ) -> int | None:
  value = environ.get(name)
  if value is None or value == "":
    return None
  try:
    return int(value)
  except ValueError:
    raise MultihostError(f"{name}={value!r} is not an integer") from None


def job_from_env(environ=os.environ) -> dict:
  """Keyword arguments for `jax.distributed.initialize` set by the environment.

  Raises:
    MultihostError: a malformed or inconsistent variable.
  """
  num, pid = _int_env(NUM_PROCESSES, environ), _int_env(PROCESS_ID, environ)
  if (num is None) != (pid is None):
    raise MultihostError(f"set both {NUM_PROCESSES} and {PROCESS_ID}, or "
                         "neither (to auto-detect them)")
  if num is not None and not 0 <= pid < num:
    raise MultihostError(f"{PROCESS_ID}={pid} is not in [0, {NUM_PROCESSES}"
                         f"={num})")
  address = environ.get(COORDINATOR) or None
  if address is not None and address.rpartition(":")[2].isdigit() is False:
    raise MultihostError(f"{COORDINATOR}={address!r}: expected host:port")
  job = {"coordinator_address": address, "num_processes": num,
         "process_id": pid}
  return {k: v for k, v in job.items() if v is not None}


def _describe(job: dict, environ) -> str:
  where = job.get("coordinator_address", "the auto-detected coordinator")
  if "process_id" in job:
    who = f"process {job['process_id']} of {job['num_processes']}"
  elif "SLURM_PROCID" in environ and "SLURM_NTASKS" in environ:
    who = f"process {environ['SLURM_PROCID']} of {environ['SLURM_NTASKS']}"
  else:
    who = "this process"
  return f"{who}, coordinator {where}"


def initialize(timeout_s: float = 300.0, environ=os.environ) -> None:
  """`jax.distributed.initialize` for this job, bounded by `timeout_s`.

  If the coordinator is not reached, or not every process registers, within
  `timeout_s`, prints one line naming the coordinator and the process and
  exits this process with status 2 (XLA would abort later with a stack trace;
  there is no exception to catch).
  """
  import jax  # pylint: disable=g-import-not-at-top

  job = job_from_env(environ)
  jax.config.update("jax_cpu_collectives_implementation", "gloo")

  def give_up():
    print(f"dada-jax: error: --multihost: {_describe(job, environ)}: the job "
          f"did not come together within {timeout_s:g} s (--coordinator-timeout): is "
          "process 0 running and reachable at that address, and were all "
          "processes started?", file=sys.stderr, flush=True)
    os._exit(2)  # pylint: disable=protected-access

  watchdog = threading.Timer(timeout_s, give_up)
  watchdog.daemon = True
  watchdog.start()
  try:
    jax.distributed.initialize(
        **job, initialization_timeout=int(timeout_s) + _GRACE_S)
  except (ValueError, RuntimeError) as e:  # e.g. nothing to auto-detect
    raise MultihostError(f"--multihost: {_describe(job, environ)}: {e}") from e
  finally:
    watchdog.cancel()
