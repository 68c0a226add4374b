"""One process of the interleaved old-vs-new A/B in ab_fused_norm.log.

Prints the paper DDA step's (batch 3 of 128², fp32) median/min wall time,
median process CPU time per step and the VM's steal time over STEPS timed
steps (default 4) after one warm-up. Run from the repository root, old and
new trees alternating in fresh processes:

  git worktree add /tmp/old <commit before the change>
  for round in 1 2; do
    PYTHONPATH=/tmp/old python launch/results/bench_cpu_issue14/ab_step.py old
    python launch/results/bench_cpu_issue14/ab_step.py new
  done
"""
import sys, os, time, resource, statistics
import dada_jax, jax
from dada_jax import config_lib, sharding, train_step as step_lib
from dada_jax.bench import timing
mode = os.environ.get("MODE", "dda")
config = config_lib.load_config("configs/denoise.py", [])
config.objective.mode = mode
mesh = sharding.make_mesh(config)
init = lambda rng: step_lib.init_state(config, rng)
ss = sharding.state_shardings(jax.eval_shape(init, jax.random.key(0)), mesh, config.sharding)
state = jax.jit(init, out_shardings=ss)(jax.random.key(0))
data = sharding.put_batch(timing._random_batch(mode, 3, 128), sharding.batch_sharding(mesh))
rng = jax.device_put(jax.random.key(1), sharding.replicated(mesh))
t0 = time.perf_counter()
step = sharding.jit_train_step(step_lib.make_train_step(config), mesh, ss).lower(state, data, rng).compile()
comp = time.perf_counter() - t0
def steal():
  return int(open("/proc/stat").readline().split()[8])
state, m = step(state, data, rng); jax.block_until_ready(m)
walls, cpus, steals = [], [], []
for _ in range(int(os.environ.get("STEPS", 4))):
  r0 = resource.getrusage(resource.RUSAGE_SELF); s0 = steal(); t = time.perf_counter()
  state, m = step(state, data, rng); jax.block_until_ready(m)
  walls.append(time.perf_counter() - t); r1 = resource.getrusage(resource.RUSAGE_SELF)
  cpus.append(r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime); steals.append((steal() - s0) / 100)
print(f"{sys.argv[1]} {mode} wall med {statistics.median(walls):.2f} min {min(walls):.2f} | cpu med {statistics.median(cpus):.2f} | steal {sum(steals):.1f}s | compile {comp:.1f}", flush=True)
