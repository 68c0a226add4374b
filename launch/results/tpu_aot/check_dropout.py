import jax, jax.numpy as jnp, numpy as np, flax.linen as nn
from dada_jax import config_lib, models
from dada_jax.models import layers
cfg = config_lib.load_config('configs/denoise.py:runlocal')
params = models.init_params(cfg, jax.random.key(0))['critic']
x = jax.random.normal(jax.random.key(1), (4, 32, 32, 9)); g = jax.random.uniform(jax.random.key(2), (4,))
def run():
  net = models.make_critic(cfg)
  f = lambda p: jnp.sum(net.apply({'params': p}, x, g, train=True, rngs={'dropout': jax.random.key(3)}) ** 2)
  return jax.jit(jax.value_and_grad(f))(params)
new = run()
Fused = layers.Dropout; layers.Dropout = nn.Dropout
old = run()
layers.Dropout = Fused
print('loss equal', bool(new[0] == old[0]), float(new[0]))
print('grads bitwise equal', all(bool(jnp.array_equal(a, b)) for a, b in zip(jax.tree.leaves(new[1]), jax.tree.leaves(old[1]))))
