"""Tests for bench_torch: timing the PyTorch reference from a checkout PATH.

The official code cannot ship with the tests, so most tests write a fake
checkout with the same import layout and constructor/loss interface; a probe
module records what the timed step called.
"""

import os
import sys
import textwrap
import types

import pytest

from dada_jax.bench import reference as bench_torch

torch = pytest.importorskip(
    "torch", reason="torch (the [test] extra) runs the torch cross-checks")

REAL_CHECKOUT = "/tmp/noise_da"
PROBE = "_bench_torch_probe"

FAKE_FILES = {
    "core/praser.py": "INIT_OBJ = True\n",
    "core/base_network.py": """
        import torch.nn as nn
        import _bench_torch_probe as probe

        class BaseNetwork(nn.Module):
          def __init__(self, init_type='kaiming', gain=0.02):
            super().__init__()
            self.init_type = init_type

          def init_weights(self):
            probe.calls.append(('init_weights', self.init_type))
        """,
    "models/__init__.py": "from core.praser import INIT_OBJ\n",
    "models/loss.py": """
        import torch
        import torch.nn.functional as F

        def mse_loss(output, target):
          return F.mse_loss(output, target)

        def charbonnier_loss(output, target):
          return torch.mean(torch.sqrt((output - target) ** 2 + 1e-6))

        def cal_triplet_margin_loss(anchor, positive, negative):
          return torch.relu(F.mse_loss(anchor, positive)
                            - F.mse_loss(anchor, negative) + 0.1)
        """,
    "models/model.py": """
        import cv2_is_not_installed  # model.py's heavy imports are skipped

        class EMA():
          def __init__(self, beta=0.9999):
            super().__init__()
            self.beta = beta

          def update_model_average(self, ma_model, current_model):
            import _bench_torch_probe as probe
            probe.calls.append(('ema', self.beta))
            for cur, ma in zip(current_model.parameters(),
                               ma_model.parameters()):
              ma.data = ma.data * self.beta + (1 - self.beta) * cur.data
        """,
    "models/net/UNet.py": """
        from torch import nn

        class RestorationNet(nn.Module):
          def __init__(self, in_channels=3, out_channels=3, depth=4, wf=64):
            super().__init__()
            self.body = nn.Sequential(nn.Conv2d(in_channels, wf, 3, padding=1),
                                      nn.LeakyReLU(0.2),
                                      nn.Conv2d(wf, out_channels, 3, padding=1))

          def forward(self, x):
            return self.body(x)
        """,
    "models/guided_diffusion_modules/unet.py": """
        from torch import nn

        class UNet(nn.Module):
          def __init__(self, image_size, in_channel, inner_channel,
                       out_channel, res_blocks, attn_res, dropout=0,
                       channel_mults=(1, 2, 4, 8), num_head_channels=-1):
            super().__init__()
            self.inp = nn.Conv2d(in_channel, inner_channel, 3, padding=1)
            self.emb = nn.Linear(1, inner_channel)
            self.drop = nn.Dropout(dropout)
            self.out = nn.Conv2d(inner_channel, out_channel, 3, padding=1)

          def forward(self, x, gammas):
            e = self.emb(gammas.view(-1, 1))[:, :, None, None]
            return self.out(self.drop(self.inp(x) + e))
        """,
    "models/network.py": """
        import torch
        from core.base_network import BaseNetwork
        from .net.UNet import RestorationNet
        import _bench_torch_probe as probe

        class Network(BaseNetwork):
          def __init__(self, unet, beta_schedule, module_name='sr3', **kwargs):
            super().__init__(**kwargs)
            from .guided_diffusion_modules.unet import UNet
            self.denoise_fn = UNet(**unet)
            self.beta_schedule = beta_schedule
            self.RestorationNet = RestorationNet()
            probe.calls.append(('unet', unet))

          def set_loss(self, loss_fn):
            self.mse_loss, self.pix_loss = loss_fn[0], loss_fn[1]
            self.triplet_margin_loss = loss_fn[-1]

          def set_new_noise_schedule(self, device=torch.device('cuda'),
                                     phase='train'):
            s = self.beta_schedule[phase]
            betas = torch.linspace(s['linear_start'], s['linear_end'],
                                   s['n_timestep'], device=device)
            self.register_buffer('gammas', torch.cumprod(1 - betas, 0))
            probe.calls.append(('schedule', str(device)))

          def forward(self, y_0, y_syn=None, y_real=None, ref_img=None,
                      diff_flag=0, noise=None):
            probe.calls.append(('forward', diff_flag, tuple(y_0.shape)))
            syn = y_syn + self.RestorationNet(y_syn)
            loss_syn = self.pix_loss(y_0, syn)
            if diff_flag == 0:
              return loss_syn
            real = y_real + self.RestorationNet(y_real)
            g = self.gammas[torch.randint(1, 1000, (y_0.shape[0],))]
            noise = torch.randn_like(y_0)
            y_noisy = g.sqrt().view(-1, 1, 1, 1) * y_0 + (1 - g).sqrt().view(
                -1, 1, 1, 1) * noise
            hat = self.denoise_fn(torch.cat([y_noisy, syn, real], 1), g)
            neg = self.denoise_fn(torch.cat([y_noisy, real, syn], 1), g)
            return (self.mse_loss(noise, hat)
                    + self.triplet_margin_loss(noise, hat, neg)) / 2, loss_syn
        """,
}


def _write_checkout(root, files):
  for rel, text in files.items():
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(textwrap.dedent(text))
  return str(root)


@pytest.fixture
def probe(monkeypatch):
  module = types.ModuleType(PROBE)
  module.calls = []
  monkeypatch.setitem(sys.modules, PROBE, module)
  threads = torch.get_num_threads()
  torch.set_num_threads(1)  # tiny ops; a shared CPU makes OpenMP waits costly
  yield module
  torch.set_num_threads(threads)


@pytest.fixture
def fake(tmp_path):
  return _write_checkout(tmp_path / "Noise-DA", FAKE_FILES)


@pytest.mark.parametrize("mode,diff_flag", [("dda", 1), ("vanilla", 0)])
def test_times_the_training_step(fake, probe, monkeypatch, mode, diff_flag):
  sentinel = types.ModuleType("models")  # someone else's `models` package
  monkeypatch.setitem(sys.modules, "models", sentinel)
  path_before = list(sys.path)
  r = bench_torch.time_reference_step(fake, mode=mode, batch=2, size=16,
                                      steps=3, warmup=1, small=True)
  assert sys.path == path_before
  assert sys.modules["models"] is sentinel
  assert not [k for k in sys.modules
              if k.split(".")[0] == "core" or k.startswith("models.")]
  assert 0 < r["step_time_min_s"] <= r["step_time_median_s"]
  assert r["step_time_median_s"] <= r["step_time_max_s"] < 60
  assert r["images_per_s"] == pytest.approx(2 / r["step_time_median_s"])
  assert (r["steps"], r["warmup"], r["device"]) == (3, 1, "cpu")
  assert r["torch_version"] == torch.__version__ and r["torch_threads"] >= 1
  # The small restorer replaces the default one: 3->8->3 channels, 3x3 convs.
  assert r["restorer_params"] == (3 * 8 * 9 + 8) + (8 * 3 * 9 + 3)
  assert r["critic_params"] > 0
  calls = probe.calls
  assert ("init_weights", "kaiming") in calls and ("schedule", "cpu") in calls
  unet = next(c[1] for c in calls if c[0] == "unet")
  assert unet["inner_channel"] == 32 and unet["image_size"] == 16
  forwards = [c for c in calls if c[0] == "forward"]
  assert forwards == [("forward", diff_flag, (2, 3, 16, 16))] * 4
  assert [c for c in calls if c[0] == "ema"] == [("ema", 0.9999)] * 4


def test_profiles_one_more_step_by_op_class(fake, probe, tmp_path):
  r = bench_torch.time_reference_step(fake, batch=2, size=16, steps=1,
                                      warmup=0, small=True,
                                      profile_dir=str(tmp_path / "torch"))
  seconds = r["profile"]["seconds"]
  assert seconds["conv forward"] > 0
  assert seconds["conv backward (input + weight)"] > 0
  assert (tmp_path / "torch" / "trace.json").is_file()
  forwards = [c for c in probe.calls if c[0] == "forward"]
  assert len(forwards) == 2  # the timed step, then the profiled one


def test_paper_config_is_built(fake, probe):
  r = bench_torch.time_reference_step(fake, steps=1, warmup=0, batch=1,
                                      size=8)
  unet = next(c[1] for c in probe.calls if c[0] == "unet")
  assert unet == dict(
      in_channel=9, out_channel=3, inner_channel=64,
      channel_mults=[1, 2, 4, 8], attn_res=[16], num_head_channels=32,
      res_blocks=2, dropout=0.2, image_size=8)
  assert r["restorer_params"] == (3 * 64 * 9 + 64) + (64 * 3 * 9 + 3)


def test_missing_path(tmp_path):
  missing = str(tmp_path / "nowhere")
  path_before = list(sys.path)
  with pytest.raises(bench_torch.ReferenceError, match="nowhere") as e:
    bench_torch.time_reference_step(missing, steps=1)
  assert "--torch-reference" in str(e.value) and "\n" not in str(e.value)
  assert sys.path == path_before


def test_checkout_without_network(tmp_path):
  files = {k: v for k, v in FAKE_FILES.items() if k != "models/network.py"}
  path = _write_checkout(tmp_path / "not-noise-da", files)
  with pytest.raises(bench_torch.ReferenceError) as e:
    bench_torch.time_reference_step(path, steps=1)
  assert path in str(e.value) and "models/network.py" in str(e.value)


def test_import_failure_is_one_line(tmp_path, probe):
  files = dict(FAKE_FILES)
  files["models/network.py"] = "import einops_missing_here\n"
  path = _write_checkout(tmp_path / "broken", files)
  path_before = list(sys.path)
  with pytest.raises(bench_torch.ReferenceError) as e:
    bench_torch.time_reference_step(path, steps=1)
  msg = str(e.value)
  assert path in msg and "einops_missing_here" in msg and "\n" not in msg
  assert sys.path == path_before
  assert not [k for k in sys.modules if k.split(".")[0] in ("models", "core")]


def test_missing_torch(fake, monkeypatch):
  monkeypatch.setitem(sys.modules, "torch", None)  # import torch fails
  with pytest.raises(bench_torch.ReferenceError,
                     match=r"needs PyTorch: pip install torch==2\.13\.0"):
    bench_torch.time_reference_step(fake, steps=1)


def test_bad_mode(fake):
  with pytest.raises(ValueError, match="mode"):
    bench_torch.time_reference_step(fake, mode="dda_ex")


@pytest.mark.skipif(
    not os.path.isfile(os.path.join(REAL_CHECKOUT, "models", "network.py")),
    reason=f"no official Noise-DA checkout at {REAL_CHECKOUT}")
def test_real_checkout_small(probe):
  del probe  # only for the thread count
  r = bench_torch.time_reference_step(REAL_CHECKOUT, batch=1, size=32,
                                      steps=1, warmup=0, small=True)
  assert r["step_time_median_s"] > 0
  assert 0 < r["restorer_params"] < r["critic_params"]
