"""Times single 3x3 convolutions at the critic's shapes: `python conv_shapes.py torch|jax`
(forward, then input + weight gradient); figures in conv_shapes_jax_vs_torch.txt."""
import sys, time, numpy as np
which = sys.argv[1]
shapes = [(6,128,128,64,64),(6,128,128,128,64),(6,128,128,192,128),(6,128,128,128,128),(6,64,64,128,128),(6,64,64,256,256),(6,32,32,256,256),(6,32,32,512,512),(6,16,16,512,512),(6,16,16,1024,512)]
def med(f, n=4):
  f(); ts=[]
  for _ in range(n):
    t=time.perf_counter(); f(); ts.append(time.perf_counter()-t)
  return np.median(ts)
out=[]
if which == "torch":
  import torch; torch.set_num_threads(2)
  for b,h,w,ci,co in shapes:
    x=torch.randn(b,ci,h,w,requires_grad=True); conv=torch.nn.Conv2d(ci,co,3,padding=1); dy=torch.randn(b,co,h,w)
    fwd=lambda: conv(x)
    def bwd():
      y=conv(x); y.backward(dy)
    tf=med(lambda: conv(x).detach()); tb=med(bwd)-tf
    out.append((f"{h}x{w} {ci}->{co}", tf, tb))
else:
  import dada_jax, jax, jax.numpy as jnp
  conv = lambda x, w: jax.lax.conv_general_dilated(x, w, (1,1), "SAME", dimension_numbers=("NHWC","HWIO","NHWC"))
  for b,h,w,ci,co in shapes:
    x=jax.random.normal(jax.random.key(0),(b,h,w,ci)); k=jax.random.normal(jax.random.key(1),(3,3,ci,co))*0.01; dy=jax.random.normal(jax.random.key(2),(b,h,w,co))
    f=jax.jit(conv); g=jax.jit(lambda x,k,dy: jax.vjp(conv,x,k)[1](dy))
    tf=med(lambda: jax.block_until_ready(f(x,k))); tb=med(lambda: jax.block_until_ready(g(x,k,dy)))
    out.append((f"{h}x{w} {ci}->{co}", tf, tb))
for s,tf,tb in out: print(f"{which:6s} {s:18s} fwd {tf*1e3:7.1f} ms  bwd(in+w) {tb*1e3:7.1f} ms")
