"""Micro-benchmarks behind BENCHMARKS.md's fused-GroupNorm figures.

`python norm_and_bias_micro.py C`: forward and forward+backward of
GroupNorm + FiLM + SiLU on [6, 128, 128, C], autodiff of the plain formula
("plain") vs `group_norm.group_norm_act` ("fused"); then the conv bias
gradient of [6, 128, 128, C] as one reduction vs rows first.
"""
import sys, time
import dada_jax
import jax, jax.numpy as jnp, numpy as np
from dada_jax.models import group_norm, layers
C=int(sys.argv[1]); B,H,W=6,128,128
x = jax.random.normal(jax.random.PRNGKey(0),(B,H,W,C))*2+0.5
fs = jax.random.normal(jax.random.PRNGKey(1),(B,1,1,C))*0.1
fsh = jax.random.normal(jax.random.PRNGKey(2),(B,1,1,C))*0.1
sc=jnp.ones((C,)); bi=jnp.zeros((C,))
dy = jax.random.normal(jax.random.PRNGKey(4),(B,H,W,C))
def plain(x, scale, bias, fs, fsh):
  g = x.reshape(x.shape[0], -1, 32, C//32)
  m = g.mean(axis=(1,3), keepdims=True); v = jnp.square(g-m).mean(axis=(1,3), keepdims=True)
  y = ((g-m)*jax.lax.rsqrt(v+1e-5)).reshape(x.shape)*scale+bias
  return jax.nn.silu(y*(1+fs)+fsh)
fused = lambda *a: group_norm.group_norm_act(*a, 32, 1e-5, True)
def timeit(name, fn, *args, n=7):
  jax.block_until_ready(fn(*args)); ts=[]
  for _ in range(n):
    t0=time.perf_counter(); jax.block_until_ready(fn(*args)); ts.append(time.perf_counter()-t0)
  print(f"{name:30s} {np.median(ts)*1e3:7.1f} ms")
for name,f in (("plain",plain),("fused",fused)):
  timeit(name+" fwd", jax.jit(f), x,sc,bi,fs,fsh)
  timeit(name+" fwd+bwd", jax.jit(lambda *a: jax.vjp(f,*a[:-1])[1](a[-1])), x,sc,bi,fs,fsh,dy)
dy = jax.random.normal(jax.random.PRNGKey(5), (B, H, W, C))
timeit("bias grad, one reduction", jax.jit(lambda d: d.sum((0, 1, 2))), dy)
timeit("bias grad, rows first", jax.jit(
    lambda d: layers.sum_rows_first((d,), (3,))[0]), dy)
