"""What every data module shares: the error type, a problem record, and
finding the images under a folder."""

from __future__ import annotations

import dataclasses
import os

from dada_jax import errors
from dada_jax import image_io


class DataError(errors.UserError):
  """Unusable training/evaluation data; the message names every bad path."""


@dataclasses.dataclass(frozen=True)
class Problem:
  path: str
  reason: str


def list_images_recursive(folder: str) -> list[str]:
  """Image files anywhere under `folder`, by extension; sorted paths.

  Unlike `image_io.scan_images`, which looks only directly in a folder.
  """
  found = []
  for root, dirs, files in os.walk(folder):
    dirs.sort()
    found.extend(os.path.join(root, f) for f in files
                 if f.lower().endswith(image_io.IMAGE_EXTENSIONS))
  return sorted(found)
