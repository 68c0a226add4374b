"""CPU cost of the materialised dropout mask: the paper critic fwd+bwd
(train=True) on [B, P, P, 9], compile seconds and median step seconds, with
layers.Dropout (barrier) and with plain nn.Dropout, interleaved."""
import sys, time
import flax.linen as nn
import jax, jax.numpy as jnp, numpy as np
from dada_jax import config_lib, models
from dada_jax.models import layers

spec = sys.argv[1] if len(sys.argv) > 1 else "configs/denoise.py:runlocal"
b, p = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (8, 32)
cfg = config_lib.load_config(spec)
params = models.init_params(cfg, jax.random.key(0))["critic"]
x = jax.random.normal(jax.random.key(1), (b, p, p, 9))
g = jax.random.uniform(jax.random.key(2), (b,))
Barrier = layers.Dropout

def build(cls):
  layers.Dropout = cls
  net = models.make_critic(cfg)
  f = lambda pr, r: jnp.sum(net.apply({"params": pr}, x, g, train=True,
                                      rngs={"dropout": r}) ** 2)
  t = time.perf_counter()
  c = jax.jit(jax.grad(f)).lower(params, jax.random.key(3)).compile()
  layers.Dropout = Barrier
  return c, time.perf_counter() - t

fns = {"barrier": build(Barrier), "nn.Dropout": build(nn.Dropout)}
times = {k: [] for k in fns}
for i in range(7):
  for k, (c, _) in fns.items():
    t = time.perf_counter()
    jax.block_until_ready(c(params, jax.random.key(i)))
    times[k].append(time.perf_counter() - t)
for k, (c, s) in fns.items():
  print(f"{k}: compile {s:.1f} s, step median {np.median(times[k][1:])*1e3:.1f} ms")
