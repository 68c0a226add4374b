"""The reference's training sets as `dada-jax prepare` presets.

Each preset names where the official code's scripts find the images, how it
pairs them and how it cuts them (`windows`). Inputs are listed in the
reference's order (natural sort, as natsort) and every input gives its
windows row-major, so the records come in the order the reference writes
its crops (the reference's own file order on disk does not matter: its
loader sorts and shuffles them).

  dfwb        Denoising/generate_patches_dfwb.py: DIV2K, Flickr2K,
              WaterlooED, BSD400 (.png/.jpg/.bmp directly in each), clean
              only; 512 px windows, overlap 96, when both sides > 800 px,
              else the whole image.
  sidd_train  Denoising/generate_patches_sidd.py: SIDD Medium sRGB scene
              folders, *NOISY*.PNG paired with the *GT*.PNG of the same
              name; 512 px windows, overlap 128, every image.
  sidd_val    the 256x256 SIDD validation crops the reference downloads
              ready-cut (val/SIDD/input_crops, target_crops): whole images,
              paired by file name.
  gopro       Deblurring/generate_patches_gopro.py: GoPro train input/ and
              target/ (.png/.jpg), paired by file name; 512 px windows,
              overlap 256, every image.
  realblur_j  Deblurring/data_split.py: the (gt, blur) pairs a RealBlur
              split list names (default RealBlur_J_train_list.txt in the
              input folder), whole images (the reference crops at random
              while training).
  rain13k     Deraining: Rain13K train input/ and target/, paired by file
              name, whole images.
  spa         Deraining (path_wrapper.py --subfolders): the SPA real rainy
              images in the subfolders of SPA/input, clean-free, whole images.

Deviation from the reference: an image smaller than the window on a side,
which the reference slices with a negative offset into a partial crop, is
skipped here with a line saying so; and file extensions match in any case
(the reference's globs are case-sensitive).
"""

from __future__ import annotations

import dataclasses
import os
import re
from typing import Callable

from dada_jax.data.common import DataError
from dada_jax.data.common import Problem

# An input: (name, paths): name is the relative path(s) the records cite,
# paths one file (clean-only) or (lq, gt).
Input = tuple[str, tuple[str, ...]]


@dataclasses.dataclass(frozen=True)
class Preset:
  name: str
  reference: str       # the reference file this preset follows
  paired: bool
  patch_size: int      # 0: whole images
  overlap: int
  min_side: int        # cut only images with both sides > min_side (p_max)
  lister: Callable[[str, str | None], tuple[list[Input], list[Problem]]]
  layout: str          # what --input must hold, for messages and the README


def natural_key(text: str):
  """natsort's order: digit runs compare as numbers ('im2' < 'im10')."""
  return [(0, int(t), "") if t.isdigit() else (1, 0, t)
          for t in re.split(r"(\d+)", text)]


def windows(h: int, w: int, preset: Preset) -> list[tuple[int, int, int, int]]:
  """The reference's crops of an h x w image, as (y, x, height, width).

  Rows y in range(0, h - P, P - overlap) then h - P, columns likewise,
  row-major (the reference's `w1`/`h1` loops: its `w` is the row count);
  one window of the whole image when the preset does not cut or a side is
  <= min_side. ValueError for a side < P, which the reference would slice
  into a partial window.
  """
  p = preset.patch_size
  if not p or not (h > preset.min_side and w > preset.min_side):
    return [(0, 0, h, w)]
  if h < p or w < p:
    raise ValueError(f"image is {h}x{w}, smaller than the {p}x{p} window")
  stride = p - preset.overlap
  ys = [*range(0, h - p, stride), h - p]
  xs = [*range(0, w - p, stride), w - p]
  return [(y, x, p, p) for y in ys for x in xs]


def _files(folder: str, extensions: tuple[str, ...]) -> list[str]:
  """Files directly in `folder` with these extensions, natural order."""
  if not os.path.isdir(folder):
    return []
  return sorted((os.path.join(folder, f) for f in os.listdir(folder)
                 if f.lower().endswith(extensions)
                 and os.path.isfile(os.path.join(folder, f))), key=natural_key)


def _need_dir(path: str) -> None:
  if not os.path.isdir(path):
    raise DataError(f"--input {path}: no such folder")


def _pair_by_name(root: str, lq_dir: str, gt_dir: str,
                  extensions: tuple[str, ...]):
  """Inputs of same-stem files in root/lq_dir and root/gt_dir."""
  _need_dir(root)
  lq = {os.path.splitext(os.path.basename(p))[0]: p
        for p in _files(os.path.join(root, lq_dir), extensions)}
  gt = {os.path.splitext(os.path.basename(p))[0]: p
        for p in _files(os.path.join(root, gt_dir), extensions)}
  if not lq or not gt:
    empty = lq_dir if not lq else gt_dir
    raise DataError(f"--input {root}: {empty}/ is missing or holds no "
                    f"{'/'.join(extensions)} images")
  problems = [Problem(lq[s], f"no file of this name in {gt_dir}/")
              for s in sorted(lq.keys() - gt.keys(), key=natural_key)]
  problems += [Problem(gt[s], f"no file of this name in {lq_dir}/")
               for s in sorted(gt.keys() - lq.keys(), key=natural_key)]
  inputs = [(os.path.relpath(lq[s], root), (lq[s], gt[s]))
            for s in sorted(lq.keys() & gt.keys(), key=natural_key)]
  return inputs, problems


DFWB_SUBSETS = ("DIV2K", "Flickr2K", "WaterlooED", "BSD400")


def _list_dfwb(root, _):
  _need_dir(root)
  inputs, missing = [], []
  for subset in DFWB_SUBSETS:
    files = _files(os.path.join(root, subset), (".png", ".jpg", ".bmp"))
    missing += [subset] * (not files)
    inputs += [(os.path.relpath(p, root), (p,)) for p in files]
  if not inputs:
    raise DataError(f"--input {root}: holds none of {', '.join(DFWB_SUBSETS)}"
                    " with .png/.jpg/.bmp images")
  return inputs, [Problem(os.path.join(root, s), "subset folder missing or "
                          "empty (left out)") for s in missing]


def _list_sidd_train(root, _):
  _need_dir(root)
  scenes = sorted((d for d in os.listdir(root)
                   if os.path.isdir(os.path.join(root, d))), key=natural_key)
  files = sorted((p for d in scenes for p in _files(os.path.join(root, d),
                                                    (".png",))),
                 key=natural_key)
  noisy = [p for p in files if "NOISY" in os.path.basename(p)]
  gt = {p for p in files if "GT" in os.path.basename(p)}
  if not noisy:
    raise DataError(f"--input {root}: no */*NOISY*.PNG files (expected SIDD "
                    "Medium sRGB scene folders)")
  inputs, problems, used = [], [], set()
  for p in noisy:
    q = os.path.join(os.path.dirname(p),
                     os.path.basename(p).replace("NOISY", "GT"))
    if q in gt:
      inputs.append((os.path.relpath(p, root), (p, q)))
      used.add(q)
    else:
      problems.append(Problem(p, f"no ground truth {os.path.basename(q)}"))
  problems += [Problem(q, "ground truth without a NOISY image")
               for q in sorted(gt - used, key=natural_key)]
  return inputs, problems


def _list_realblur(root, list_path):
  _need_dir(root)
  list_path = list_path or os.path.join(root, "RealBlur_J_train_list.txt")
  if not os.path.isfile(list_path):
    raise DataError(f"--list {list_path}: no such file (a RealBlur split list"
                    ", lines 'GT_PATH BLUR_PATH')")
  inputs, problems = [], []
  with open(list_path, encoding="utf-8") as f:
    for lineno, line in enumerate(f, 1):
      parts = line.split()
      if not parts:
        continue
      if len(parts) != 2:  # data_split.py skips such lines; say so
        problems.append(Problem(f"{list_path}:{lineno}", "expected "
                                "'GT_PATH BLUR_PATH', line left out"))
        continue
      gt, blur = (os.path.join(root, p) for p in parts)
      missing = [p for p in (blur, gt) if not os.path.isfile(p)]
      if missing:
        problems += [Problem(p, f"listed in {list_path} line {lineno} but "
                             "does not exist") for p in missing]
        continue
      inputs.append((parts[1], (blur, gt)))
  if not inputs:
    raise DataError(f"--list {list_path}: names no existing image pairs under"
                    f" {root}")
  return inputs, problems


def _list_spa(root, _):
  _need_dir(root)
  found = []
  for d in sorted(os.listdir(root)):
    if os.path.isdir(os.path.join(root, d)):
      for r, _dirs, names in os.walk(os.path.join(root, d)):
        found += [os.path.join(r, n) for n in names
                  if n.lower().endswith((".png", ".jpg", ".jpeg", ".gif"))]
  if not found:
    raise DataError(f"--input {root}: no images in its subfolders (expected "
                    "SPA's train input/ with one folder per scene)")
  return [(os.path.relpath(p, root), (p,))
          for p in sorted(found, key=natural_key)], []


_IMAGES = (".png", ".jpg")
PRESETS = {p.name: p for p in (
    Preset("dfwb", "Denoising/generate_patches_dfwb.py", False, 512, 96, 800,
           _list_dfwb, "Downloads/ with DIV2K/ Flickr2K/ WaterlooED/ BSD400/"),
    Preset("sidd_train", "Denoising/generate_patches_sidd.py", True, 512, 128,
           0, _list_sidd_train, "SIDD Medium sRGB Data/ (scene folders of "
           "*GT_SRGB*.PNG, *NOISY_SRGB*.PNG)"),
    Preset("sidd_val", "Denoising/download_data.py (val.zip, ready-cut)",
           True, 0, 0, 0,
           lambda r, _: _pair_by_name(r, "input_crops", "target_crops",
                                      _IMAGES),
           "val/SIDD/ with input_crops/ and target_crops/"),
    Preset("gopro", "Deblurring/generate_patches_gopro.py", True, 512, 256, 0,
           lambda r, _: _pair_by_name(r, "input", "target", _IMAGES),
           "GoPro train/ with input/ and target/"),
    Preset("realblur_j", "Deblurring/data_split.py", True, 0, 0, 0,
           _list_realblur, "the RealBlur root (holding RealBlur-J_ECC_..._ref/"
           "); --list a split list, default RealBlur_J_train_list.txt there"),
    Preset("rain13k", "Deraining/README.md (train/Rain13K)", True, 0, 0, 0,
           lambda r, _: _pair_by_name(r, "input", "target", _IMAGES),
           "Rain13K train/ with input/ and target/"),
    Preset("spa", "Deraining/README.md (path_wrapper.py --subfolders)", False,
           0, 0, 0, _list_spa, "SPA train input/ (one folder per scene)"),
)}
