"""Evaluation of the restorer (x + G(x)) on paired sets and SIDD blocks.

  evaluate_paired  paired (or clean + fixed-sigma AWGN) images, restored by
                   `predict.restore_array` (tiled when large)
  evaluate_sidd    SIDD blocks, fixed-size batches through one compiled call
  build_eval       the periodic evaluation trainers run on config.eval
  run              the `dada-jax evaluate` command

Scores are `metrics.evaluate_pair` per image, computed in host threads while
the device restores the next one. SSIM is averaged over all images; PSNR over
the finite values only: an image equal to its target after the preset's
processing (PSNR inf) is left out of the PSNR mean, which is inf only when
every image is such a one. SIDD uses the official "sidd_matlab" preset unless
one is passed, or config.eval.preset is set away from its default ("rgb").
Every process evaluates the whole set.
"""

from __future__ import annotations

import collections
import concurrent.futures
import itertools
import math
import os

import jax
import jax.numpy as jnp
import ml_collections as mlc
import numpy as np

from dada_jax import config_lib
from dada_jax import data
from dada_jax import errors
from dada_jax import image_io
from dada_jax import metrics
from dada_jax import models
from dada_jax import outputs
from dada_jax import predict
from dada_jax import sidd

SIDD_PRESET = "sidd_matlab"
SAMPLE_SIDE = 256  # Largest side of one sample-grid panel.
NOISE_SEED = 0  # Fixed, so AWGN eval inputs are the same in every run.
_GRID_NAME = "samples"


class EvalError(errors.UserError):
  """Bad `evaluate` arguments; the one-line message names the flag."""


def write_sample_grid(path: str | os.PathLike, rows) -> None:
  """Writes [[input, restored, target], ...] uint8 panels as one PNG.

  Every panel is center-cropped to s x s, s = min(SAMPLE_SIDE, the smallest
  side of any panel), so the grid is [len(rows) * s, len(rows[0]) * s, 3].
  """
  s = min(SAMPLE_SIDE, *(min(p.shape[:2]) for row in rows for p in row))

  def crop(p):
    y, x = (p.shape[0] - s) // 2, (p.shape[1] - s) // 2
    return p[y:y + s, x:x + s]

  os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
  image_io.write_png(path, np.concatenate(
      [np.concatenate([crop(p) for p in row], axis=1) for row in rows]))


def _summary(per_image: list[dict[str, float]]) -> dict:
  finite = [m["psnr"] for m in per_image if math.isfinite(m["psnr"])]
  return {"psnr": float(np.mean(finite)) if finite else math.inf,
          "ssim": float(np.mean([m["ssim"] for m in per_image]))}


class _Scorer:
  """`evaluate_pair` in worker threads, at most 2 x workers pending."""

  def __init__(self, preset, value_range):
    self.preset, self.value_range = preset, value_range
    workers = os.cpu_count() or 1
    self.pool = concurrent.futures.ThreadPoolExecutor(workers)
    self.limit = 2 * workers
    self.pending, self.done = collections.deque(), []

  def add(self, restored, target):
    if len(self.pending) >= self.limit:
      self.done.append(self.pending.popleft().result())
    self.pending.append(self.pool.submit(
        metrics.evaluate_pair, restored, target, self.preset,
        self.value_range))

  def results(self) -> list[dict[str, float]]:
    self.done += [f.result() for f in self.pending]
    self.pool.shutdown()
    return self.done


def _output_names(source, n: int) -> list[str]:
  """PNG names for the first n items: input stems, index-prefixed on clashes."""
  paths = getattr(source, "paths", None) or [None] * n
  stems = []
  for i, entry in enumerate(paths[:n]):
    path = entry[0] if isinstance(entry, tuple) else entry
    stems.append(os.path.splitext(os.path.basename(path))[0] if path
                 else f"{i:05d}")
  if len(set(stems)) < n or _GRID_NAME in stems:
    stems = [f"{i:05d}_{s}" for i, s in enumerate(stems)]
  return [s + ".png" for s in stems]


def evaluate_paired(config: mlc.ConfigDict, restorer_params, source, *,
                    preset: str | None = None, max_images: int = 0,
                    samples_path: str | os.PathLike | None = None,
                    num_samples: int | None = None,
                    output_dir: str | os.PathLike | None = None) -> dict:
  """Restores and scores every image of `source`, in order.

  Args:
    config: model config (restorer, predict, data.value_range, eval).
    restorer_params: restorer params.
    source: a `dada_jax.data` source of {"lq", "gt"} uint8 pairs, or of
      clean {"image"} items, whose inputs are then gt + AWGN of std
      config.eval.noise_sigma (8-bit units, seed NOISE_SEED, unclipped).
    preset: a `metrics.PRESETS` name (default config.eval.preset).
    max_images: score only the first N images (0: all).
    samples_path: where to write the sample grid PNG: rows input | restored
      | target of the first num_samples images (see `write_sample_grid`).
    num_samples: grid rows (default config.eval.num_samples).
    output_dir: also write each restored image there as <input stem>.png.

  Returns:
    {"psnr": mean dB, "ssim": mean, "num_images": int}; see the module
    docstring for how inf PSNRs are averaged.

  Raises:
    DataError: listing problems, or a clean-only source without a sigma.
  """
  value_range = config.data.value_range
  preset = preset or config.eval.preset
  metrics.get_preset(preset)
  sigma = config.eval.noise_sigma
  ds = data.make_eval_dataset(
      source, value_range=value_range, sigma=sigma if sigma >= 0 else None,
      seed=NOISE_SEED, check_files=False)
  n = min(max_images, len(source)) if max_images > 0 else len(source)
  num_samples = config.eval.num_samples if num_samples is None else num_samples
  names = _output_names(source, n) if output_dir else None
  if output_dir:
    os.makedirs(output_dir, exist_ok=True)
  # Once, rather than a host-to-device copy per image.
  restorer_params = jax.device_put(restorer_params)
  scorer, rows = _Scorer(preset, value_range), []
  for i, element in enumerate(itertools.islice(ds, n)):
    lq = element["lq"][0]
    # ToFloat of uint8 is exact to invert: score against the stored 8 bits.
    gt = image_io.to_uint8(element["gt"][0], value_range)
    restored = predict.restore_array(config, restorer_params, lq)
    scorer.add(restored, gt)
    restored8 = image_io.to_uint8(restored, value_range)
    if names:
      image_io.write_png(os.path.join(output_dir, names[i]), restored8)
    if i < num_samples and samples_path:
      rows.append([image_io.to_uint8(lq, value_range), restored8, gt])
  per_image = scorer.results()
  if rows:
    write_sample_grid(samples_path, rows)
  return {**_summary(per_image), "num_images": len(per_image)}


def _as_blocks(blocks) -> np.ndarray:
  return blocks if isinstance(blocks, np.ndarray) else sidd.read_blocks(blocks)


def sidd_preset(config: mlc.ConfigDict) -> str:
  """SIDD_PRESET, or config.eval.preset when set away from its default."""
  preset = config.eval.preset
  return SIDD_PRESET if preset == config_lib.DEFAULT_EVAL_PRESET else preset


def evaluate_sidd(config: mlc.ConfigDict, restorer_params, noisy_mat,
                  gt_mat=None, *, preset: str | None = None,
                  output_dir: str | os.PathLike | None = None,
                  batch_size: int = 32, max_images: int = 0,
                  samples_path: str | os.PathLike | None = None,
                  num_samples: int | None = None) -> dict:
  """Restores SIDD blocks in batches; scores them against GT if given.

  Args:
    config: model config (restorer, data.value_range, eval).
    restorer_params: restorer params.
    noisy_mat: noisy blocks: a .mat path (see `sidd.read_blocks`) or a uint8
      [N_img, N_blk, H, W, 3] array.
    gt_mat: ground-truth blocks, same forms and shape; None: no metrics.
    preset: metrics preset (default `sidd_preset(config)`).
    output_dir: write <output_dir>/Idenoised.mat (float32 in [0, 1]).
    batch_size: blocks per compiled call; the last batch is padded.
    max_images: keep only the first N_img rows of blocks (0: all).
    samples_path: sample grid PNG of the first blocks (input | restored
      [| target]); see `write_sample_grid`.
    num_samples: grid rows (default config.eval.num_samples).

  Returns:
    {"psnr", "ssim" (per-block means; inf handling as in the module
    docstring, only with GT), "num_blocks": int}.
  """
  value_range = config.data.value_range
  lo, hi = config_lib.VALUE_RANGES[value_range]
  preset = preset or sidd_preset(config)
  metrics.get_preset(preset)
  noisy = _as_blocks(noisy_mat)
  gt = None if gt_mat is None else _as_blocks(gt_mat)
  if gt is not None and gt.shape != noisy.shape:
    raise sidd.SiddError(f"ground-truth blocks {list(gt.shape)} do not match "
                         f"the noisy blocks {list(noisy.shape)}")
  noisy = noisy[:max_images or None]
  gt = None if gt is None else gt[:max_images or None]
  shape = noisy.shape
  h, w = shape[2:4]
  flat = noisy.reshape(-1, h, w, 3)
  flat_gt = None if gt is None else gt.reshape(-1, h, w, 3)
  m = models.pad_multiple(config)
  ph, pw = -(-h // m) * m, -(-w // m) * m
  # The cached compiled x + G(x) that restore_array uses.
  restore = predict._compiled_restore(  # pylint: disable=protected-access
      models.make_restorer(config))
  restorer_params = jax.device_put(restorer_params)
  restored = np.empty(flat.shape, np.float32)
  scorer = _Scorer(preset, value_range)
  for start in range(0, len(flat), batch_size):
    chunk = image_io.to_float(flat[start:start + batch_size], value_range)
    k = len(chunk)
    x = np.pad(chunk, ((0, batch_size - k), (0, ph - h), (0, pw - w), (0, 0)),
               mode="edge")
    y = np.asarray(restore(restorer_params, jnp.asarray(x)))[:k, :h, :w]
    restored[start:start + k] = np.clip(y, lo, hi)
    if flat_gt is not None:
      for j in range(start, start + k):
        scorer.add(restored[j], flat_gt[j])
  per_block = scorer.results()
  if output_dir:
    sidd.write_denoised(os.path.join(output_dir, "Idenoised.mat"),
                        restored.reshape(shape), value_range=value_range)
  num_samples = config.eval.num_samples if num_samples is None else num_samples
  if samples_path and num_samples > 0:
    write_sample_grid(samples_path, [
        [flat[j], image_io.to_uint8(restored[j], value_range)]
        + ([] if flat_gt is None else [flat_gt[j]])
        for j in range(min(num_samples, len(flat)))])
  out = _summary(per_block) if gt is not None else {}
  return {**out, "num_blocks": len(flat)}


def source_from_config(config: mlc.ConfigDict):
  """The config.eval source, for its kinds other than none and sidd_mat.

  Kinds paired_folders / paired_flists (path = degraded, gt_path = clean),
  simulated (paired unless config.eval.paired is False), or clean-only
  folder / flist / tfds / synthetic / builtin, which need
  config.eval.noise_sigma >= 0.

  Raises:
    ConfigError: another kind, an empty path, or clean-only without
      noise_sigma (see `config_lib.validate`).
    DataError: no built-in photos to read (kinds builtin and simulated).
  """
  config_lib.validate(config, eval_source=True)
  return data.build_source(config.eval, "config.eval")


def build_eval(config: mlc.ConfigDict):
  """The periodic evaluation on config.eval, or None for kind "none".

  Data are listed and validated now (decoded too when config.data.check_files;
  SIDD blocks are read into memory), so bad eval data fail before training.

  Returns:
    eval_fn(restorer_params, *, step, workdir) -> metrics dict, which also
    writes the sample grid to workdir/samples/step_{step:07d}.png (process 0).

  Raises:
    ConfigError: a bad config.eval; DataError: unusable data files.
  """
  e = config.eval
  if e.kind == "none":
    return None
  try:
    metrics.get_preset(e.preset)
  except ValueError as err:
    raise config_lib.ConfigError(f"config.eval.preset: {err}") from err
  if e.kind == "sidd_mat":
    try:
      noisy = sidd.read_blocks(e.path)
      gt = sidd.read_blocks(e.gt_path) if e.gt_path else None
    except sidd.SiddError as err:
      raise data.DataError(f"config.eval: {err}") from err
    run_eval = lambda params, **kw: evaluate_sidd(
        config, params, noisy, gt, max_images=e.max_images, **kw)
  else:
    source = source_from_config(config)
    data.check_sources([source], 0, decode=config.data.check_files)
    run_eval = lambda params, **kw: evaluate_paired(
        config, params, source, max_images=e.max_images, **kw)

  def eval_fn(restorer_params, *, step: int, workdir) -> dict:
    samples = None
    if jax.process_index() == 0 and e.num_samples > 0:
      samples = os.path.join(workdir, "samples", f"step_{step:07d}.png")
    return run_eval(restorer_params, samples_path=samples)

  return eval_fn


def run(config: mlc.ConfigDict, *, checkpoint: str, preset: str | None = None,
        input: str | None = None, target: str | None = None,  # pylint: disable=redefined-builtin
        sidd_noisy: str | None = None, sidd_gt: str | None = None,
        output: str | None = None, max_images: int | None = None,
        overwrite: bool = False) -> int:
  """Evaluates the restorer; prints a Markdown table of the results.

  Evaluates a paired set (`input` and `target`), SIDD blocks (`sidd_noisy`,
  optionally `sidd_gt`), or, with neither, config.eval's set.

  Args:
    config: model config (restorer, predict, data.value_range, eval).
    checkpoint: a directory from `convert`, or a .pth/.npz.
    preset: a `metrics.PRESETS` name (default: config.eval.preset; for SIDD
      `sidd_preset(config)`).
    input: degraded images: a folder, or a .flist.
    target: their ground truth, in the same form as `input`.
    sidd_noisy: SIDD noisy blocks .mat.
    sidd_gt: SIDD ground-truth blocks .mat.
    output: folder for restored PNGs (Idenoised.mat for SIDD) and the
      sample grid.
    max_images: first N images (SIDD: rows of blocks); None: all, or
      config.eval.max_images for config.eval's set.
    overwrite: write into a non-empty `output`, replacing files.

  Returns:
    0.

  Raises:
    EvalError: arguments that do not go together (messages name the flags).
  """
  from dada_jax import weights  # pylint: disable=g-import-not-at-top
  if input and sidd_noisy:
    raise EvalError("--input and --sidd-noisy cannot be given together")
  if (input is None) != (target is None):
    raise EvalError("--input and --target must be given together")
  if sidd_gt and not sidd_noisy:
    raise EvalError("--sidd-gt needs --sidd-noisy")
  if max_images is not None and max_images < 0:
    raise EvalError(f"--max-images {max_images}: must be >= 0")
  e = config.eval
  explicit = bool(input or sidd_noisy)
  if not explicit and e.kind == "none":
    raise EvalError("nothing to evaluate: pass --input/--target or "
                    "--sidd-noisy, or set config.eval.kind")
  if output:
    outputs.check_folder(output, "--output", empty=not overwrite,
                         hint="choose a new one or pass --overwrite")
  if max_images is None:
    max_images = 0 if explicit else e.max_images
  samples = os.path.join(output, f"{_GRID_NAME}.png") if output else None
  noisy = sidd_noisy or (e.path if e.kind == "sidd_mat" and not explicit
                         else None)
  source = None
  if input:
    flists = [p.endswith(".flist") for p in (input, target)]
    if any(flists) != all(flists):
      raise EvalError(f"--input {input} / --target {target}: give two "
                      "folders or two .flist files")
    source = (data.PairedFlists if all(flists) else data.PairedFolders)(
        input, target)
  elif not noisy:
    source = source_from_config(config)
  params = weights.load_params(checkpoint, config, ("restorer",))
  if source is not None:
    preset = preset or e.preset
    res = evaluate_paired(config, params["restorer"], source, preset=preset,
                          max_images=max_images, samples_path=samples,
                          output_dir=output)
    name, count = input or e.path, str(res["num_images"])
  else:
    gt = sidd_gt if sidd_noisy else (e.gt_path or None)
    preset = preset or sidd_preset(config)
    res = evaluate_sidd(config, params["restorer"], noisy, gt, preset=preset,
                        output_dir=output, max_images=max_images,
                        samples_path=samples)
    name, count = os.path.basename(noisy), f"{res['num_blocks']} blocks"
  psnr = f"{res['psnr']:.2f}" if "psnr" in res else "-"
  ssim = f"{res['ssim']:.4f}" if "ssim" in res else "-"
  print("| set | preset | images | PSNR | SSIM |\n|---|---|---|---|---|\n"
        f"| {name} | {preset} | {count} | {psnr} | {ssim} |")
  return 0
