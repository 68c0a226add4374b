"""Where commands write: checks made before any work starts, and atomic writes.

Every command checks its output paths first, so a wrong flag fails in a
second instead of after an hour's work, and nothing is half-written: files
appear whole (written beside their target, then renamed) with the permission
bits a plain `open()` would give them under the user's umask.
"""

from __future__ import annotations

import contextlib
import os
import tempfile

from dada_jax import errors


class OutputError(errors.UserError):
  """An output path that cannot or must not be written; names the flag."""


class OutputExists(OutputError, FileExistsError):
  """An output that exists and is not to be replaced."""


def file_mode() -> int:
  """0o666 less the process umask: the bits `open(path, "w")` would give."""
  mask = os.umask(0)
  os.umask(mask)
  return 0o666 & ~mask


def _closest_existing(path: str) -> str:
  path = os.path.abspath(path)
  while not os.path.lexists(path):
    path = os.path.dirname(path)
  return path


def check_folder(path: str, flag: str, *, empty: bool = False,
                 hint: str = "choose a new one") -> None:
  """Fails unless `path` is a folder, or one can be created there.

  Creates nothing. With `empty`, an existing folder must hold nothing
  (`hint` says what to do instead).

  Raises:
    OutputError: `{flag} {path}: ...` naming what is in the way.
  """
  where = f"{flag} {path}"
  if os.path.lexists(path) and not os.path.isdir(path):
    raise OutputError(f"{where}: exists and is not a folder")
  if os.path.isdir(path):
    if empty and os.listdir(path):
      raise OutputError(f"{where}: folder is not empty; {hint}")
    if not os.access(path, os.W_OK | os.X_OK):
      raise OutputError(f"{where}: folder is not writable")
    return
  _check_creatable(path, where)


def _check_creatable(path: str, where: str) -> None:
  base = _closest_existing(path)
  if not os.path.isdir(base):
    raise OutputError(f"{where}: cannot create it, {base} is a file")
  if not os.access(base, os.W_OK | os.X_OK):
    raise OutputError(f"{where}: cannot create it, {base} is not writable")


def check_file(path: str, flag: str, *, overwrite: bool) -> None:
  """Fails unless `path` can be written as a file (its folder may be new).

  Raises:
    OutputError: a folder is there, the file exists and `overwrite` is off,
      or its folder cannot be created.
  """
  if os.path.isdir(path):
    raise OutputError(f"{flag} {path}: is a folder; give a file name")
  if os.path.lexists(path) and not overwrite:
    raise OutputError(f"{flag} {path}: exists; pass --overwrite to replace "
                      "it")
  _check_creatable(os.path.dirname(os.path.abspath(path)), f"{flag} {path}")


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb"):
  """Yields a file object whose contents replace `path` only on success.

  The temporary file lives beside `path` (same file system, so the final
  rename is atomic) and is removed if anything fails.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.",
                             suffix=".partial", dir=folder)
  try:
    with os.fdopen(fd, mode) as f:
      yield f
    os.chmod(tmp, file_mode())
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(tmp)
    raise


def write_text(path: str | os.PathLike, text: str) -> None:
  """Writes `text` to `path` atomically."""
  with atomic_write(path, "w") as f:
    f.write(text)
