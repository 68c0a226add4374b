"""DnCNN (Zhang et al., TIP 2017) as the reference's `models/net/dncnn.py`.

conv3x3-ReLU, (num_of_layers - 2) x conv3x3-BatchNorm-ReLU, conv3x3, all
convs without bias, 64 features (fixed in the reference), NHWC. The forward
returns the last conv's output and adds or subtracts no input itself;
Noise-DA's wrapper adds the input.

Submodules are named after the torch `nn.Sequential` indices (`dncnn.3`
becomes `dncnn_3`), so conversion is a rename plus a layout transpose.

BatchNorm state lives in the `batch_stats` collection:
  eval:  model.apply({"params": p, "batch_stats": s}, x)
  train: y, new = model.apply({"params": p, "batch_stats": s}, x, train=True,
                              mutable=["batch_stats"])
A train state keeps `batch_stats` beside the params (outside the optimizer)
and replaces it with `new["batch_stats"]` after each step. Batch statistics
are taken over the whole (global) batch that is passed in, as torch does in
one process; under data-parallel jit that is the global batch, not each
device's shard (torch DDP without SyncBatchNorm would use per-GPU shards).
`num_batches_tracked` is an int32 counter there (torch keeps int64; it only
matters to torch when momentum is None), so code averaging batch_stats
should leave it alone.
"""

from __future__ import annotations

from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from dada_jax.models import layers
from dada_jax.models import torch_layout

FEATURES = 64  # hard-coded in the reference constructor
DEFAULTS = dict(channels=3, num_of_layers=17)

PRESETS = {
    # Tiny, for tests: one conv-BN-ReLU layer between the first and last conv.
    "runlocal": dict(num_of_layers=3),
    # Zhang et al.: DnCNN-S (one known noise level) has 17 layers (the
    # reference default), DnCNN-B (blind) 20.
    "dncnn_s": {},
    "dncnn_b": dict(num_of_layers=20),
}


def pad_multiple(**attrs) -> int:
  """Any input size works (stride-1 convs only)."""
  del attrs
  return 1


class BatchNorm2d(nn.Module):
  """torch `nn.BatchNorm2d` over the last axis of [B, H, W, C].

  train: normalise with the batch's mean and biased variance over B, H, W;
  update running_mean / running_var (the latter from the unbiased variance)
  by `momentum` and count the batch. eval: normalise with the running stats.
  Statistics in float32; the result is in x's dtype.
  """
  momentum: float = 0.1
  eps: float = 1e-5

  @nn.compact
  def __call__(self, x, train: bool):
    c = x.shape[-1]
    scale = self.param("scale", nn.initializers.ones, (c,), jnp.float32)
    bias = self.param("bias", nn.initializers.zeros, (c,), jnp.float32)
    running_mean = self.variable("batch_stats", "mean", jnp.zeros, (c,),
                                 jnp.float32)
    running_var = self.variable("batch_stats", "var", jnp.ones, (c,),
                                jnp.float32)
    count = self.variable("batch_stats", "num_batches_tracked",
                          lambda: jnp.zeros((), jnp.int32))
    x32 = x.astype(jnp.float32)
    if train:
      mean = x32.mean(axis=(0, 1, 2))
      var = jnp.square(x32 - mean).mean(axis=(0, 1, 2))
      n = x.size // c
      if not self.is_initializing():
        if n < 2:
          raise ValueError(f"BatchNorm in train mode needs more than one "
                           f"value per channel, got input shape {x.shape}")
        m = self.momentum
        running_mean.value = (1 - m) * running_mean.value + m * mean
        unbiased = var * (n / (n - 1))
        running_var.value = (1 - m) * running_var.value + m * unbiased
        count.value = count.value + 1
    else:
      mean, var = running_mean.value, running_var.value
    y = (x32 - mean) / jnp.sqrt(var + self.eps) * scale + bias
    return y.astype(x.dtype)


class DnCNN(nn.Module):
  """The reference DnCNN; attributes are its constructor's arguments.

  Attributes:
    channels: image channels, in and out.
    num_of_layers: convs in all (>= 2); all but the first and last are
      followed by BatchNorm.
    dtype: compute dtype; parameters and batch statistics stay float32.

  Call: x [B, H, W, channels], any size and value range; `train` selects
  batch statistics (and needs mutable=["batch_stats"]) or running ones.
  Returns [B, H, W, channels] float32, the last conv's output.
  """
  channels: int = 3
  num_of_layers: int = 17
  dtype: jnp.dtype = jnp.float32

  def _conv(self, features, index):
    return nn.Conv(features, (3, 3), padding=((1, 1), (1, 1)), use_bias=False,
                   dtype=self.dtype, param_dtype=jnp.float32,
                   kernel_init=layers.KAIMING, name=f"dncnn_{index}")

  @nn.compact
  def __call__(self, x, train: bool = False):
    x = nn.relu(self._conv(FEATURES, 0)(x.astype(self.dtype)))
    for i in range(self.num_of_layers - 2):
      x = self._conv(FEATURES, 3 * i + 2)(x)
      x = nn.relu(BatchNorm2d(name=f"dncnn_{3 * i + 3}")(x, train))
    x = self._conv(self.channels, 3 * self.num_of_layers - 4)(x)
    return x.astype(jnp.float32)


# --- Conversion from / to the reference's state_dict -----------------------

_PARAM_NAMES = {"kernel": "weight", "scale": "weight", "bias": "bias"}
_STAT_NAMES = {"mean": "running_mean", "var": "running_var",
               "num_batches_tracked": "num_batches_tracked"}


def _layout(**attrs):
  """{torch key: (collection, Flax path, torch shape, torch dtype)}."""
  model = DnCNN(**attrs)
  x = jax.ShapeDtypeStruct((1, 4, 4, model.channels), jnp.float32)
  variables = jax.eval_shape(model.init, jax.random.PRNGKey(0), x)
  out = {}
  for collection, names in (("params", _PARAM_NAMES),
                            ("batch_stats", _STAT_NAMES)):
    flat = jax.tree_util.tree_flatten_with_path(variables.get(collection, {}))
    for keys, leaf in flat[0]:
      path = tuple(k.key for k in keys)
      module, leaf_name = path[0], path[-1]
      shape = tuple(leaf.shape)
      if leaf_name == "kernel":  # HWIO -> OIHW
        shape = (shape[3], shape[2], shape[0], shape[1])
      dtype = np.int64 if leaf_name == "num_batches_tracked" else np.float32
      key = f"{module.replace('_', '.')}.{names[leaf_name]}"
      out[key] = (collection, path, shape, dtype)
  # torch's order: by layer index, then weight, bias, buffers.
  leaf_order = ["weight", "bias", *_STAT_NAMES.values()]
  return dict(sorted(out.items(), key=lambda kv: (
      int(kv[0].split(".")[1]), leaf_order.index(kv[0].split(".")[2]))))


def params_from_torch(state: Mapping[str, np.ndarray], **attrs) -> dict:
  """{"params": ..., "batch_stats": ...} from the reference
  `DnCNN(**attrs)`'s `state_dict()` (keys without any `RestorationNet.`
  prefix; numpy arrays or CPU tensors). Strict: every missing, unexpected
  and misshapen key is named in one ValueError."""
  layout = _layout(**attrs)
  torch_layout.check_state(state,
                           {k: spec[2] for k, spec in layout.items()})
  variables = {"params": {}, "batch_stats": {}}
  for key, (collection, path, _, dtype) in layout.items():
    value = np.asarray(state[key])
    if dtype == np.int64:
      value = value.astype(np.int32)
    else:
      value = value.astype(np.float32)
    if path[-1] == "kernel":  # OIHW -> HWIO
      value = value.transpose(2, 3, 1, 0)
    variables[collection].setdefault(path[0], {})[path[-1]] = value
  return variables


def params_to_torch(variables, **attrs) -> dict[str, np.ndarray]:
  """The reference `DnCNN(**attrs).state_dict()` (numpy; float32, and int64
  `num_batches_tracked`) from Flax variables {"params", "batch_stats"}."""
  state = {}
  for key, (collection, path, _, dtype) in _layout(**attrs).items():
    value = np.asarray(variables[collection][path[0]][path[-1]]).astype(dtype)
    if path[-1] == "kernel":
      value = value.transpose(3, 2, 0, 1)
    state[key] = np.array(value)  # a writable, contiguous copy
  return state
