"""The launch/ shell recipes: syntax, --dry-run commands, argument errors."""

import os
import pathlib
import shlex
import shutil
import subprocess
import sys
import tarfile

import pytest

from conftest import REPO

LAUNCH = REPO / "launch"
GPU, TPU_VM, SETUP, SLURM = (
    str(LAUNCH / n) for n in ("gpu.sh", "tpu_vm.sh", "setup_tpu.sh",
                              "slurm.sh"))
TPU_ENV = dict(TPU_NAME="dn", ZONE="us-east5-a", ACCELERATOR="v5litepod-32",
               TPU_VERSION="v2-alpha-tpuv5-lite", PROJECT="proj")
SSH = "gcloud compute tpus tpu-vm ssh dn --zone=us-east5-a --project=proj "


@pytest.fixture
def env(tmp_path):
  """An environment whose PATH has the few tools the scripts use, no gcloud."""
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for tool in ("bash", "dirname", "tar", "gzip"):
    (bin_dir / tool).symlink_to(shutil.which(tool))
  (tmp_path / "home").mkdir()
  return dict(PATH=str(bin_dir), HOME=str(tmp_path / "home"),
              TMPDIR=str(tmp_path))


def _run(script, *args, env, **extra):
  return subprocess.run(["bash", script, *args], env={**env, **extra},
                        cwd=REPO, capture_output=True, text=True, check=False)


def _ok(script, *args, env, **extra):
  result = _run(script, *args, env=env, **extra)
  assert result.returncode == 0, result.stderr
  assert shutil.which("gcloud", path=env["PATH"]) is None
  return result.stdout.splitlines()


def _fails(result, message):
  assert result.returncode == 2 and not result.stdout
  assert message in result.stderr
  return result.stderr.splitlines()


def test_every_script_parses():
  scripts = sorted(LAUNCH.glob("*.sh"))
  assert [p.name for p in scripts] == ["gpu.sh", "gpu_benchmarks.sh",
                                      "setup_tpu.sh", "slurm.sh", "tpu_vm.sh"]
  for script in scripts:
    subprocess.run(["bash", "-n", str(script)], check=True)
    assert os.access(script, os.X_OK), script
  subprocess.run(["bash", "-n", str(LAUNCH / "common.bash")], check=True)


def test_gpu_dry_run(env, tmp_path):
  venv = tmp_path / "venv"
  lines = _ok(GPU, "--dry-run", "configs/denoise.py:runlocal", "runs/a b",
              "--config.train.total_steps=10",
              "--config.critic.channel_mults=(1,2)", env=env, VENV=str(venv))
  assert lines == [
      f"python3 -m venv {venv}",
      f"{venv}/bin/python -m pip install -e '{REPO}[cuda]'",
      "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.90",
      "export XLA_FLAGS=--xla_gpu_enable_latency_hiding_scheduler=true",
      f"{venv}/bin/dada-jax train --config configs/denoise.py:runlocal "
      "--workdir 'runs/a b' --config.train.total_steps=10 "
      "'--config.critic.channel_mults=(1,2)'"]
  lines = _ok(GPU, "--dry-run", "configs/denoise.py", "w", env=env,
              VENV=str(venv), SKIP_INSTALL="1", XLA_FLAGS="--xla_dump_to=/d",
              XLA_PYTHON_CLIENT_MEM_FRACTION="0.5")
  assert lines[1:3] == [
      "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.5",
      "export XLA_FLAGS='--xla_gpu_enable_latency_hiding_scheduler=true "
      "--xla_dump_to=/d'"]


def test_gpu_xla_flags_exist_in_this_xla(env, tmp_path):
  lines = _ok(GPU, "--dry-run", "configs/denoise.py", "w", env=env,
              VENV=str(tmp_path))
  (flags,) = [shlex.split(x)[1] for x in lines if "XLA_FLAGS=" in x]
  # XLA aborts on an unknown flag in XLA_FLAGS, even on the CPU backend.
  subprocess.run(
      [sys.executable, "-c", "import jax; jax.numpy.zeros(1).block_until_ready()"],
      env={**os.environ, "XLA_FLAGS": flags.split("=", 1)[1],
           "JAX_PLATFORMS": "cpu"}, check=True, capture_output=True)


def test_gpu_argument_errors(env):
  usage = "usage: launch/gpu.sh [--dry-run] CONFIG WORKDIR"
  assert len(_fails(_run(GPU, env=env), usage)) == 1
  _fails(_run(GPU, "--dry-run", "configs/denoise.py", env=env), usage)
  assert _fails(_run(GPU, "--dry-run", "configs/nope.py", "w", env=env),
                "no such config file: configs/nope.py") == [
                    "gpu.sh: no such config file: configs/nope.py"]
  _fails(_run(GPU, "--dry-run", "configs/denoise.py", "w", "--lr=1", env=env),
         "expected --config.FIELD=VALUE, got: --lr=1")


def test_slurm_dry_run(env, tmp_path):
  """One srun task per host running `train --multihost`; the run itself is
  tests/multihost_test.py (two processes started through this script)."""
  venv = tmp_path / "venv"
  assert _ok(SLURM, "--dry-run", "configs/denoise.py", "/shared/runs/a b",
             "--config.train.total_steps=10", env=env, VENV=str(venv),
             XLA_FLAGS="--xla_dump_to=/d") == [
                 "export XLA_PYTHON_CLIENT_MEM_FRACTION=0.90",
                 "export XLA_FLAGS='--xla_gpu_enable_latency_hiding_scheduler"
                 "=true --xla_dump_to=/d'",
                 f"srun --ntasks-per-node=1 --kill-on-bad-exit=1 "
                 f"{venv}/bin/dada-jax train --multihost --config "
                 "configs/denoise.py --workdir '/shared/runs/a b' "
                 "--config.train.total_steps=10"]


def test_slurm_argument_errors(env, tmp_path):
  usage = "usage: launch/slurm.sh [--dry-run] CONFIG WORKDIR"
  assert len(_fails(_run(SLURM, env=env), usage)) == 1
  _fails(_run(SLURM, "configs/nope.py", "w", env=env),
         "no such config file: configs/nope.py")
  _fails(_run(SLURM, "--dry-run", "configs/denoise.py", "s3://b/r", env=env),
         "WORKDIR must be a shared path or gs://BUCKET/PATH, got: s3://b/r")
  _fails(_run(SLURM, "configs/denoise.py", "w", env=env,
              VENV=str(tmp_path / "none")),
         f"no {tmp_path}/none/bin/dada-jax: set VENV")


def test_setup_tpu_dry_run(env, tmp_path):
  venv = tmp_path / "v"
  lines = _ok(SETUP, "--dry-run", env=env, VENV=str(venv),
              PYTHON=sys.executable)
  py = f"{venv}/bin/python"
  assert lines == [
      f"{sys.executable} -m venv {venv}",
      f"{py} -m pip install --upgrade pip",
      f"{py} -m pip install -e '.[tpu]' gcsfs google-cloud-storage",
      f"{py} -c 'import dada_jax, jax; print(\"jax\", jax.__version__)'"]
  old = tmp_path / "python3.10"
  old.write_text("#!/bin/bash\nexit 1\n")
  old.chmod(0o755)
  assert _fails(_run(SETUP, "--dry-run", env=env, VENV=str(venv),
                     PYTHON=str(old)), ">= 3.11") == [
                         f"setup_tpu.sh: PYTHON={old} is not a Python >= 3.11"]
  _fails(_run(SETUP, "--dry-run", "extra", env=env),
         "usage: launch/setup_tpu.sh [--dry-run]")


def test_tpu_vm_dry_run(env):
  where = "--zone=us-east5-a --project=proj"
  assert _ok(TPU_VM, "--dry-run", "create", "--spot", env=env, **TPU_ENV) == [
      f"gcloud compute tpus tpu-vm create dn {where} "
      "--accelerator-type=v5litepod-32 --version=v2-alpha-tpuv5-lite --spot"]
  tarball = f"{env['TMPDIR']}/dada-jax-dn.tgz"
  assert _ok(TPU_VM, "--dry-run", "copy", env=env, **TPU_ENV) == [
      f"tar -czf {tarball} -C {REPO} --exclude=.git '--exclude=.venv*' "
      "--exclude=__pycache__ '--exclude=*.egg-info' --exclude=.pytest_cache .",
      f"gcloud compute tpus tpu-vm scp {tarball} dn:dada-jax.tgz {where} "
      "--worker=all",
      SSH + "--worker=all --command 'rm -rf dada-jax && mkdir dada-jax && "
      "tar -xzf dada-jax.tgz -C dada-jax && rm dada-jax.tgz'"]
  assert _ok(TPU_VM, "--dry-run", "setup", env=env, **TPU_ENV) == [
      SSH + "--worker=all --command 'bash dada-jax/launch/setup_tpu.sh'"]
  assert _ok(TPU_VM, "--dry-run", "run", "configs/denoise.py",
             "gs://bucket/runs/dn", "--config.train.log_every=50", env=env,
             **TPU_ENV) == [
                 SSH + "--worker=all --command 'cd dada-jax && "
                 "~/dada-jax-venv/bin/dada-jax train --multihost --config "
                 "configs/denoise.py --workdir gs://bucket/runs/dn "
                 "--config.train.log_every=50'"]
  assert _ok(TPU_VM, "--dry-run", "delete", env=env, **TPU_ENV) == [
      f"gcloud compute tpus tpu-vm delete dn {where}"]
  assert _ok(TPU_VM, "--dry-run", "create", env=env) == [
      "gcloud compute tpus tpu-vm create dada-jax --zone=us-west4-a "
      "--accelerator-type=v5litepod-16 --version=v2-alpha-tpuv5-lite"]


@pytest.mark.parametrize("workdir", ["/tmp/run", "runs/x", "gs://", "s3://b/x"])
def test_tpu_vm_run_needs_a_bucket_workdir(env, workdir):
  lines = _fails(_run(TPU_VM, "--dry-run", "run", "configs/denoise.py",
                      workdir, env=env), "WORKDIR must be a gs:// path")
  assert len(lines) == 1 and workdir in lines[0]


@pytest.mark.parametrize("args", [
    (), ("--dry-run",), ("start",), ("run", "configs/denoise.py"),
    ("copy", "extra"), ("setup", "extra")])
def test_tpu_vm_usage(env, args):
  _fails(_run(TPU_VM, *args, env=env), "usage: launch/tpu_vm.sh")


def test_tpu_vm_run_errors(env):
  _fails(_run(TPU_VM, "run", "configs/nope.py", "gs://b/r", env=env),
         "CONFIG must be a file in this repository")
  _fails(_run(TPU_VM, "run", "configs/denoise.py", "gs://b/r", "x", env=env),
         "expected --config.FIELD=VALUE, got: x")


def test_tpu_vm_calls_gcloud_with_these_arguments(env, tmp_path):
  log = tmp_path / "gcloud.log"
  gcloud = pathlib.Path(env["PATH"]) / "gcloud"
  gcloud.write_text('#!/bin/bash\n(IFS=$\'\\x1f\'; echo "$*") >> "$LOG"\n')
  gcloud.chmod(0o755)
  override = "--config.critic.channel_mults=(1, 2)"
  for command in (["copy"], ["run", "configs/denoise.py", "gs://b/r", override],
                  ["delete", "--quiet"]):
    result = _run(TPU_VM, *command, env=env, LOG=str(log), **TPU_ENV)
    assert result.returncode == 0, result.stderr
  calls = [line.split("\x1f") for line in log.read_text().splitlines()]
  assert [c[:5] for c in calls] == [
      ["compute", "tpus", "tpu-vm", "scp", f"{tmp_path}/dada-jax-dn.tgz"],
      ["compute", "tpus", "tpu-vm", "ssh", "dn"],
      ["compute", "tpus", "tpu-vm", "ssh", "dn"],
      ["compute", "tpus", "tpu-vm", "delete", "dn"]]
  assert calls[3][5:] == ["--zone=us-east5-a", "--project=proj", "--quiet"]
  remote = calls[2][-1]
  assert calls[2][-3:-1] == ["--worker=all", "--command"]
  prefix = "cd dada-jax && ~/dada-jax-venv/bin/dada-jax "
  assert remote.startswith(prefix)
  assert shlex.split(remote[len(prefix):]) == [
      "train", "--multihost", "--config", "configs/denoise.py", "--workdir",
      "gs://b/r", override]
  with tarfile.open(tmp_path / "dada-jax-dn.tgz") as tar:
    names = set(tar.getnames())
  assert {"./launch/tpu_vm.sh", "./dada_jax/metric_writer.py",
          "./pyproject.toml"} <= names
  assert not any(n.startswith("./.git/") or "__pycache__" in n for n in names)
