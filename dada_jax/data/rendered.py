"""Rendered pairs: a simulated domain gap made of the degradation alone.

The sim2real benchmark needs a "real" domain whose only difference from the
synthetic one is the degradation: the same clean targets, the same content,
at the photos' native resolution. Each item is a window of a clean photo:

  patches  (`patch_size` set) item i is a uniformly random window of a
           random photo (photos weighted by their number of windows), so
           every training patch brings a fresh window, camera and noise;
  blocks   (`block_size` set) item i is one cell of a fixed grid of
           non-overlapping blocks over each photo, under draw d of `draws`:
           the test and validation sets, cut as SIDD's benchmark cuts its
           images (the photos' grids in order, then the draws).

Item i draws from `np.random.default_rng([seed, i])`, so it depends on
(seed, i) alone, not on the order or the number of reads.

Clean target, per task:
  denoise          the window photographed by a random camera with the
                   sensor noise off (`camera.render`: unprocess, mosaic,
                   demosaic, ISP; Brooks et al. 2019's camera draws)
  derain, deblur   the window itself

Degraded, per `domain`:
  clean      nothing: the clean target alone (a synthetic denoising stream
             gets the paper's online, unclipped AWGN in the pipeline)
  synthetic  denoise: clean + σ N(0, 1), σ ~ U[sigma_range] / 255;
             derain / deblur: `degrade.synthetic_rain` / `synthetic_blur`
  real       denoise: the same camera with shot/read noise in the raw mosaic
             before the demosaic and ISP (optionally JPEG);
             derain / deblur: `degrade.real_rain` / `real_blur`

Elements are uint8 [S, S, 3] (rounded, clipped): {"lq", "gt"} when `paired`,
else {"image"} (the degraded image, or the clean one for domain clean).
"""

from __future__ import annotations

import threading
from typing import Any

import numpy as np

from dada_jax.data import camera
from dada_jax.data import degrade
from dada_jax.data.common import Problem

DOMAINS = ("clean", "synthetic", "real")
# Raw shot-noise gain range of the simulated-real denoising domain,
# log-uniform. Chosen on TRAIN photos only (`launch/calibrate_noise.py`) so
# that the median input PSNR of real patches is SIDD-like (23-24 dB: 23.1
# on 128-px patches), at the noisy end, which widens the go/no-go margin.
SHOT_NOISE_RANGE = (8e-4, 1.1e-2)
# JPEG of the real denoising domain (None: off), as `camera.jpeg` takes it.
JPEG_QUALITY = None
# Pixels degraded around a window and cut off after, so a window's border is
# degraded as its inside is (the demosaic's 5x5 kernels, blur kernels <= 33).
MARGIN = {"denoise": 2, "derain": 0, "deblur": 16}
# A training stream's virtual length: patches never repeat in practice.
PATCHES = 1 << 24


class RenderedPairs:
  """Windows of clean photos, rendered and degraded (module docstring).

  Args:
    photos: clean source, elements {"image": uint8 [H, W, 3]} (e.g.
      `builtin.BuiltinPhotos` at native resolution), with `names`.
    task: "denoise", "derain" or "deblur".
    domain: "clean", "synthetic" or "real".
    seed: item i draws from `np.random.default_rng([seed, i])`.
    paired: elements {"lq", "gt"} (else {"image"}).
    patch_size: random windows of this side (training streams).
    block_size: the fixed grid of blocks of this side (test sets); exactly
      one of patch_size and block_size.
    draws: (blocks) renders of each block, each with its own draw.
    blocks_per_photo: (blocks) keep this many grid cells of each photo,
      evenly spaced over its grid (0: all).
    sigma_range: AWGN levels of the synthetic denoising domain (8-bit units).
    shot_noise_range: raw shot-noise gains of the real denoising domain
      (None: `SHOT_NOISE_RANGE`).
    jpeg_quality: real domains' JPEG: None, an int or an inclusive (lo, hi);
      "default": `JPEG_QUALITY` for denoise, the degradation's own default
      for derain and deblur.
  """

  def __init__(self, photos: Any, task: str, domain: str, seed: int = 0, *,
               paired: bool = True, patch_size: int | None = None,
               block_size: int | None = None, draws: int = 1,
               blocks_per_photo: int = 0,
               sigma_range: tuple[float, float] = (0.0, 75.0),
               shot_noise_range: tuple[float, float] | None = None,
               jpeg_quality="default"):
    if task not in degrade.DEGRADATIONS or domain not in DOMAINS:
      raise ValueError(f"unknown rendered domain {task}/{domain}; tasks "
                       f"{sorted(degrade.DEGRADATIONS)}, domains {DOMAINS}")
    if (patch_size is None) == (block_size is None):
      raise ValueError("give exactly one of patch_size and block_size")
    if draws < 1 or blocks_per_photo < 0:
      raise ValueError(f"draws={draws} must be >= 1 and blocks_per_photo="
                       f"{blocks_per_photo} >= 0")
    self.photos, self.task, self.domain = photos, task, domain
    self.seed, self.paired = int(seed), bool(paired)
    self.patch_size, self.block_size = patch_size, block_size
    self.draws, self.blocks_per_photo = int(draws), int(blocks_per_photo)
    self.sigma_range = tuple(float(s) for s in sigma_range)
    self.shot_noise_range = tuple(
        float(s) for s in (shot_noise_range or SHOT_NOISE_RANGE))
    self.jpeg_quality = jpeg_quality
    self.problems: list[Problem] = list(getattr(photos, "problems", []))
    self._lock = threading.Lock()
    self._layout = None  # (window counts, block list), made on first use.
    size = (f"patch_size={patch_size}" if patch_size else
            f"block_size={block_size}, draws={draws}, "
            f"blocks_per_photo={blocks_per_photo}")
    self.name = (f"RenderedPairs({photos!r}, task={task!r}, domain={domain!r}"
                 f", seed={self.seed}, paired={self.paired}, {size})")

  # ------------------------------------------------------------ layout
  @property
  def margin(self) -> int:
    return MARGIN[self.task]

  def _shapes(self) -> list[tuple[int, int]]:
    return [self.photos[i]["image"].shape[:2] for i in range(len(self.photos))]

  def _blocks(self, shapes) -> list[tuple[int, int, int]]:
    """(photo, top, left) of every kept block: each photo's centred grid."""
    b, out = self.block_size, []
    for p, (h, w) in enumerate(shapes):
      rows, cols = h // b, w // b
      cells = [(p, (h - rows * b) // 2 + r * b, (w - cols * b) // 2 + c * b)
               for r in range(rows) for c in range(cols)]
      k = self.blocks_per_photo
      if k and len(cells) > k:
        cells = [cells[j] for j in np.linspace(0, len(cells) - 1, k)
                 .round().astype(int)]
      out += cells
    return out

  def layout(self):
    with self._lock:
      if self._layout is None:
        shapes = self._shapes()
        if self.patch_size:
          s = self.patch_size + 2 * self.margin
          counts = np.array([max(h - s + 1, 0) * max(w - s + 1, 0)
                             for h, w in shapes], np.float64)
          self._layout = (counts, None)
        else:
          self._layout = (None, self._blocks(shapes))
      return self._layout

  def blocks(self) -> list[dict]:
    """(blocks) what item i is: photo name, top, left, size, draw, seed."""
    if not self.block_size:
      raise ValueError(f"{self!r}: blocks() needs block_size (a test set)")
    _, cells = self.layout()
    names = getattr(self.photos, "names", None) or [
        str(i) for i in range(len(self.photos))]
    return [{"photo": names[p], "top": t, "left": l, "size": self.block_size,
             "draw": i // len(cells), "seed": [self.seed, i]}
            for i in range(len(self))
            for (p, t, l) in [cells[i % len(cells)]]]

  def __len__(self) -> int:
    if self.patch_size:
      return PATCHES
    return len(self.layout()[1]) * self.draws

  # ------------------------------------------------------------ items
  def window(self, index: int, rng: np.random.Generator):
    """(photo index, top, left, side) of item `index`, margin included."""
    m = self.margin
    counts, cells = self.layout()
    if self.patch_size:
      if not counts.sum():
        raise ValueError(f"{self!r}: every photo is smaller than "
                         f"{self.patch_size + 2 * m} pixels")
      p = int(rng.choice(len(counts), p=counts / counts.sum()))
      h, w = self.photos[p]["image"].shape[:2]
      s = self.patch_size + 2 * m
      return p, int(rng.integers(h - s + 1)), int(rng.integers(w - s + 1)), s
    p, top, left = cells[index % len(cells)]
    # Blocks at a photo's edge get their margin by repeating edge pixels.
    return p, top - m, left - m, self.block_size + 2 * m

  def _crop(self, p: int, top: int, left: int, side: int) -> np.ndarray:
    image = self.photos[p]["image"]
    h, w = image.shape[:2]
    rows = np.clip(np.arange(top, top + side), 0, h - 1)
    cols = np.clip(np.arange(left, left + side), 0, w - 1)
    return image[rows][:, cols].astype(np.float32) / 255.0

  def render(self, crop: np.ndarray, rng: np.random.Generator):
    """(degraded or None, clean) float of a clean float crop."""
    if self.task == "denoise":
      cam = camera.sample_camera_params(rng, self.shot_noise_range)
      clean = camera.render(crop, cam)
      if self.domain == "clean":
        return None, clean
      if self.domain == "synthetic":
        sigma = rng.uniform(*self.sigma_range) / 255.0
        return clean + sigma * rng.standard_normal(clean.shape), clean
      noisy = camera.render(crop, cam, rng)
      quality = JPEG_QUALITY if self.jpeg_quality == "default" else (
          self.jpeg_quality)
      return camera.jpeg(noisy, camera.resolve_jpeg_quality(quality, rng)), clean
    if self.domain == "clean":
      return None, crop
    params = {"jpeg_quality": self.jpeg_quality} if (
        self.domain == "real" and self.jpeg_quality != "default") else {}
    return degrade.degrade(self.task, self.domain, crop, rng, **params), crop

  def __getitem__(self, index: int) -> dict[str, np.ndarray]:
    if not 0 <= index < len(self):
      raise IndexError(index)
    rng = np.random.default_rng([self.seed, index])
    p, top, left, side = self.window(index, rng)
    lq, gt = self.render(self._crop(p, top, left, side), rng)
    lq = gt if lq is None else lq
    m = self.margin
    u8 = lambda x: np.clip(np.round(np.asarray(x)[m:side - m, m:side - m]
                                    * 255.0), 0, 255).astype(np.uint8)
    if self.paired:
      return {"lq": u8(lq), "gt": u8(gt)}
    return {"image": u8(lq)}

  def __repr__(self) -> str:
    return self.name

  def check(self, min_size: int) -> list[Problem]:
    """The photos' problems: unreadable, or too small for one window."""
    side = max(self.patch_size or self.block_size, min_size)
    need = side + (2 * self.margin if self.patch_size else 0)
    problems = []
    check = getattr(self.photos, "check_item", None)
    for i in range(len(self.photos)):
      found = check(i, need) if check is not None else []
      problems += found
    if self.block_size and not problems and not len(self):
      problems.append(Problem(repr(self.photos), f"no photo holds one "
                              f"{self.block_size}x{self.block_size} block"))
    return problems
