"""Times the official PyTorch Noise-DA training step (bench --torch-reference).

`time_reference_step(PATH)` imports the reference's own, unmodified classes
from a checkout of the official code at PATH, builds the paper's denoising
network (Denoising/configs/options_train.json: guided-diffusion critic,
RestorationNet restorer, kaiming `init_weights()`) and times one iteration of
its trainer (`NoiseDA.train_step`) on random [B, 3, H, W] inputs in [0, 1]:

  dda      netG(gt, syn, real, diff_flag=1) -> α·L_noise + L_charbonnier,
           backward, Adam(lr 1e-4) over every parameter, EMA(0.9999) update.
  vanilla  netG(gt, syn, diff_flag=0) -> L_charbonnier, backward, Adam, EMA
           (the trainer updates the EMA copy of the whole network, critic
           included, in both modes).

What is imported from PATH (put first on sys.path only while importing):
  models.network   Network (pulls in models/__init__ -> core.praser,
                   core.base_network, models.net.UNet and, in Network(),
                   models.guided_diffusion_modules.unet); needs torch, numpy.
  models.loss      mse_loss, charbonnier_loss, cal_triplet_margin_loss.
  models.net.UNet  RestorationNet (only for `small=True`, replacing the
                   restorer Network() builds with its defaults).
  models/model.py  only its `EMA` class: its source is compiled on its own,
                   because importing that module needs cv2, pandas,
                   torchvision and tensorboard (via core.base_model/logger).
Data loading, metric `.item()` calls and logging are not timed.
"""

from __future__ import annotations

import ast
import importlib
import contextlib
import copy
import math
import os
import statistics
import sys
import time

from dada_jax import errors

_PACKAGES = ("models", "core")  # the checkout's top-level packages we import
_REQUIRED = ("models/__init__.py", "models/network.py", "models/loss.py",
             "models/model.py")
_LOSSES = ("mse_loss", "charbonnier_loss", "mse_loss_alpha", "final_loss",
           "cal_triplet_margin_loss")  # options_train.json "which_losses"
_SCHEDULE = {"train": {"schedule": "linear", "n_timestep": 1000,
                       "linear_start": 1e-6, "linear_end": 1e-2}}
# options_train.json critic; scale-shift norm and resblock up/down are the
# UNet defaults (True), as the config leaves them out.
_PAPER_UNET = {"in_channel": 9, "out_channel": 3, "inner_channel": 64,
               "channel_mults": [1, 2, 4, 8], "attn_res": [16],
               "num_head_channels": 32, "res_blocks": 2, "dropout": 0.2}
_SMALL_UNET = dict(_PAPER_UNET, inner_channel=32, channel_mults=[1, 2],
                   attn_res=[2], num_head_channels=16, res_blocks=1)
_SMALL_RESTORER = {"depth": 3, "wf": 8}
_DIFF_WEIGHT = 0.2  # α at full ramp: 0.2·(2 / (1 + e^-5) - 1)


class ReferenceError(errors.UserError):  # pylint: disable=redefined-builtin
  """A one-line message naming --torch-reference PATH and what is wrong."""


def _is_ours(name: str) -> bool:
  return name.split(".")[0] in _PACKAGES


@contextlib.contextmanager
def _reference_on_path(path: str):
  """Imports resolve `models`, `core` from `path`; sys.path/modules restored."""
  saved_path = list(sys.path)
  saved = {k: sys.modules.pop(k) for k in list(sys.modules) if _is_ours(k)}
  saved_bytecode = sys.dont_write_bytecode
  sys.dont_write_bytecode = True  # leave the user's checkout untouched
  sys.path.insert(0, path)
  try:
    yield
  finally:
    sys.path[:] = saved_path
    sys.dont_write_bytecode = saved_bytecode
    for k in [k for k in sys.modules if _is_ours(k)]:
      del sys.modules[k]
    sys.modules.update(saved)


def _load_ema_class(path: str):
  """The `EMA` class of models/model.py, compiled alone (see module doc)."""
  filename = os.path.join(path, "models", "model.py")
  with open(filename, encoding="utf-8") as f:
    tree = ast.parse(f.read(), filename)
  node = [n for n in tree.body if isinstance(n, ast.ClassDef)
          and n.name == "EMA"]
  if not node:
    raise ReferenceError(f"--torch-reference {path}: models/model.py has no "
                         "EMA class (not a Noise-DA checkout?)")
  namespace = {}
  code = compile(ast.Module(body=node, type_ignores=[]), filename, "exec")
  exec(code, namespace)  # pylint: disable=exec-used
  return namespace["EMA"]


def _import_reference(path: str):
  """Returns (models.network, models.loss, models.net.UNet | None, EMA)."""
  if not os.path.isdir(path):
    raise ReferenceError(f"--torch-reference {path}: no such directory")
  for rel in _REQUIRED:
    if not os.path.isfile(os.path.join(path, rel)):
      raise ReferenceError(f"--torch-reference {path}: missing {rel} (expected "
                           "a checkout of github.com/KangLiao929/Noise-DA)")
  try:
    network = importlib.import_module("models.network")
    loss = importlib.import_module("models.loss")
    try:
      unet = importlib.import_module("models.net.UNet")
    except ImportError:
      unet = None
  except Exception as e:  # pylint: disable=broad-except
    msg = " ".join(f"{type(e).__name__}: {e}".split())
    raise ReferenceError(f"--torch-reference {path}: importing its models "
                         f"package failed: {msg}") from e
  return network, loss, unet, _load_ema_class(path)


def _build(torch, path: str, size: int, small: bool, device: str):
  """Builds (netG, netG_EMA, EMA updater) as the reference's training does."""
  network, loss, unet, ema_cls = _import_reference(path)
  unet_args = dict(_SMALL_UNET if small else _PAPER_UNET, image_size=size)
  try:
    net = network.Network(unet=unet_args, beta_schedule=_SCHEDULE,
                          module_name="guided_diffusion", init_type="kaiming")
    if small:
      if unet is None:
        raise ImportError("models.net.UNet is needed for small=True")
      net.RestorationNet = unet.RestorationNet(**_SMALL_RESTORER)
    net.init_weights()  # define_network(), phase "train"
    net_ema = copy.deepcopy(net)  # NoiseDA.__init__ copies before the schedule
    net.set_loss([getattr(loss, name, None) for name in _LOSSES])
    net.set_new_noise_schedule(device=torch.device(device), phase="train")
  except Exception as e:  # pylint: disable=broad-except
    msg = " ".join(f"{type(e).__name__}: {e}".split())
    raise ReferenceError(f"--torch-reference {path}: building its Network "
                         f"failed: {msg}") from e
  return net.to(device), net_ema.to(device), ema_cls(beta=0.9999)


def _make_step(torch, net, net_ema, ema, inputs, mode: str, device: str,
               amp_bf16: bool):
  """One NoiseDA.train_step iteration; inputs: gt, syn, real [B, 3, H, W]."""
  gt, syn, real = inputs
  opt = torch.optim.Adam([p for p in net.parameters() if p.requires_grad],
                         lr=1e-4, weight_decay=0)
  alpha = (2.0 / (1.0 + math.exp(-5.0)) - 1.0) * _DIFF_WEIGHT

  def step():
    opt.zero_grad()
    with torch.autocast(device, dtype=torch.bfloat16, enabled=amp_bf16):
      if mode == "dda":
        loss_noise, loss_syn = net(gt, syn, real, gt, diff_flag=1)
        loss = alpha * loss_noise + loss_syn
      else:
        loss = net(gt, syn, diff_flag=0)
    loss.backward()
    opt.step()
    ema.update_model_average(net_ema, net)  # every iteration once iter > 1
    if device == "cuda":
      torch.cuda.synchronize()

  return step


def _num_params(module) -> int:
  return sum(p.numel() for p in module.parameters())


def time_reference_step(path: str, *, mode: str = "dda", batch: int = 3,
                        size: int = 128, steps: int = 5, warmup: int = 1,
                        device: str = "cpu", small: bool = False,
                        amp_bf16: bool = False, seed: int = 0,
                        profile_dir: str | None = None) -> dict:
  """Times the reference's training step at [batch, 3, size, size].

  Returns step times (median/min/max seconds over `steps`, `warmup` steps
  excluded), images_per_s (synthetic+real pairs per second: batch / median),
  the torch version and threads, and the restorer and critic parameter counts.
  With `profile_dir`, one more step runs under torch.profiler there and
  "profile" holds its seconds by op class (bench.profile).
  """
  if mode not in ("dda", "vanilla"):
    raise ValueError(f"mode {mode!r}: expected 'dda' or 'vanilla'")
  if device not in ("cpu", "cuda") or steps < 1 or warmup < 0:
    raise ValueError(f"device={device!r} steps={steps} warmup={warmup}")
  try:
    import torch  # pylint: disable=g-import-not-at-top
  except ImportError as e:
    raise ReferenceError(
        "--torch-reference needs PyTorch: pip install torch==2.13.0") from e
  if device == "cuda" and not torch.cuda.is_available():
    raise ReferenceError(f"--torch-reference {path}: device cuda requested "
                         "but torch.cuda.is_available() is False")
  path = os.path.abspath(os.path.expanduser(path))
  torch.manual_seed(seed)
  with _reference_on_path(path):
    net, net_ema, ema = _build(torch, path, size, small, device)
  net.train()  # train_step(): dropout on
  inputs = [torch.rand(batch, 3, size, size, device=device) for _ in range(3)]
  step = _make_step(torch, net, net_ema, ema, inputs, mode, device, amp_bf16)
  times = []
  for i in range(warmup + steps):
    start = time.perf_counter()
    step()
    if i >= warmup:
      times.append(time.perf_counter() - start)
  median = statistics.median(times)
  profiled = None
  if profile_dir:
    from dada_jax.bench import profile  # pylint: disable=g-import-not-at-top
    profiled = profile.profile_torch_step(torch, step, profile_dir)
  counts = _num_params(net.RestorationNet), _num_params(net.denoise_fn)
  del net, net_ema, ema, step, inputs
  if device == "cuda":
    torch.cuda.empty_cache()  # hand the memory back before JAX runs
  return {"step_time_median_s": median, "step_time_min_s": min(times),
          "step_time_max_s": max(times), "images_per_s": batch / median,
          "steps": steps, "warmup": warmup, "device": device,
          "torch_version": torch.__version__,
          "torch_threads": torch.get_num_threads(),
          "restorer_params": counts[0], "critic_params": counts[1],
          "profile": profiled}
