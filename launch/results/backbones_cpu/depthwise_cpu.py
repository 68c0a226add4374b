"""Depthwise 3x3: XLA:CPU grouped conv vs 9 shifted products; 5 timed runs each after one warm-up."""
import time, jax, jax.numpy as jnp, numpy as np
import dada_jax
from dada_jax.models import layers
conv = lambda x, k: layers._depthwise_grouped(x, k, 1)
taps = lambda x, k: layers._depthwise_taps(x, k, 1)
def times(f, *a, n=5):
  jax.block_until_ready(f(*a)); out = []
  for _ in range(n):
    t = time.perf_counter(); jax.block_until_ready(f(*a)); out.append(time.perf_counter() - t)
  return min(out), max(out)
for b, s, c in [(1, 512, 254), (6, 128, 144)]:
  x = jnp.asarray(np.random.rand(b, s, s, c), jnp.float32); k = jnp.asarray(np.random.rand(3, 3, 1, c), jnp.float32)
  for name, f in [("grouped", conv), ("taps", taps)]:
    fwd = jax.jit(f); g = jax.jit(jax.grad(lambda x, k: jnp.sum(f(x, k) ** 2), argnums=(0, 1)))
    print(f"[{b},{s}²,{c}] {name:8s} fwd min-max %.3f-%.3f s  grad %.3f-%.3f s" % (*times(fwd, x, k), *times(g, x, k)))
