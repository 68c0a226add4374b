"""Conv weight-gradient formulations on XLA:CPU at the critic's shapes (batch 6, 3x3, fp32):
autodiff's convolution (Eigen) against 9 shifted dots, im2col + one dot, and 3 row-shift dots;
also the input gradient. `python weight_grad_formulations.py [names]`; medians of 5 calls.
Output of 2026-11-30 in weight_grad_formulations.txt."""
import sys, time, numpy as np
import dada_jax, jax, jax.numpy as jnp
from jax import lax
shapes = [(6,128,128,64,64),(6,128,128,128,64),(6,128,128,128,128),(6,64,64,128,128),(6,64,64,256,256),(6,32,32,256,256),(6,16,16,512,512),(6,16,16,1024,512)]
def med(f, n=5):
  f(); ts=[]
  for _ in range(n):
    t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
  return np.median(ts)
dn=("NHWC","HWIO","NHWC")
conv = lambda x, w: lax.conv_general_dilated(x, w, (1,1), "SAME", dimension_numbers=dn)
def wg_auto(x, dy, k):
  return jax.vjp(lambda k: conv(x,k), k)[1](dy)[0]
def ig_auto(x, dy, k):
  return jax.vjp(lambda x: conv(x,k), x)[1](dy)[0]
def wg_dots(x, dy, k):
  b,h,w,ci = x.shape; co = dy.shape[-1]
  xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
  d = dy.reshape(-1, co)
  rows=[]
  for i in range(3):
    for j in range(3):
      rows.append(jnp.dot(xp[:, i:i+h, j:j+w, :].reshape(-1, ci).T, d))
  return jnp.stack(rows).reshape(3,3,ci,co)
def wg_im2col(x, dy, k):
  b,h,w,ci = x.shape; co = dy.shape[-1]
  xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
  cols = jnp.concatenate([xp[:, i:i+h, j:j+w, :] for i in range(3) for j in range(3)], -1)
  return lax.dot_general(cols.reshape(-1, 9*ci), dy.reshape(-1, co), (((0,),(0,)),((),()))).reshape(3,3,ci,co)
def wg_rows(x, dy, k):
  # contract over batch*W per row shift: 3 dots with kh shift, kw via concat of 3 column shifts
  b,h,w,ci = x.shape; co = dy.shape[-1]
  xp = jnp.pad(x, ((0,0),(1,1),(1,1),(0,0)))
  xw = jnp.concatenate([xp[:, :, j:j+w, :] for j in range(3)], -1)  # [b,h+2,w,3ci]
  d = dy.reshape(-1, co)
  return jnp.stack([lax.dot_general(xw[:, i:i+h].reshape(-1,3*ci), d, (((0,),(0,)),((),()))).reshape(3,ci,co) for i in range(3)])
fns = dict(ig_auto=ig_auto, wg_auto=wg_auto, wg_dots=wg_dots, wg_im2col=wg_im2col, wg_rows=wg_rows)
sel = sys.argv[1:] or list(fns)
for b,h,w,ci,co in shapes:
  x=jax.random.normal(jax.random.key(0),(b,h,w,ci)); k=jax.random.normal(jax.random.key(1),(3,3,ci,co))*0.01; dy=jax.random.normal(jax.random.key(2),(b,h,w,co))
  ref = np.asarray(jax.jit(wg_auto)(x,dy,k), np.float64)
  line=f"{h}x{w} {ci}->{co}:"
  for name in sel:
    f=jax.jit(fns[name])
    t=med(lambda: jax.block_until_ready(f(x,dy,k)))
    if name.startswith("wg") and name!="wg_auto":
      err=np.abs(np.asarray(f(x,dy,k))-ref).max()/np.abs(ref).max()
      line+=f" {name} {t*1e3:6.1f}ms(err {err:.1e})"
    else: line+=f" {name} {t*1e3:6.1f}ms"
  print(line, flush=True)
