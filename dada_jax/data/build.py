"""A source from a config's data stream: `build_source`."""

from __future__ import annotations

from dada_jax import config_lib
from dada_jax.data import sources
from dada_jax.data.common import DataError


def build_source(stream, name: str = "stream"):
  """Builds a source from a config stream (see `config_lib.base_config`).

  Args:
    stream: ConfigDict with `kind` (one of config_lib.STREAM_KINDS) and
      `path`, `gt_path`, `split`, `data_dir`, `image_key`, `num`, `size`,
      `seed`; kind simulated also `task`, `domain` and `paired`.
    name: the config field, for error messages (e.g. "config.data.real").

  Returns:
    A source, or None for kind "none".

  Raises:
    DataError: a stream `config_lib.stream_problem` rejects (the same
      message `config_lib.validate` gives as a ConfigError), or no built-in
      photos to read.
  """
  problem = config_lib.stream_problem(stream, name)
  if problem:
    raise DataError(problem)
  kind = stream.kind
  if kind == "none":
    return None
  if kind == "synthetic":
    return sources.SyntheticClean(stream.num, stream.size, stream.seed)
  if kind == "folder":
    return sources.ImageFolder(stream.path)
  if kind == "paired_folders":
    return sources.PairedFolders(stream.path, stream.gt_path)
  if kind == "flist":
    return sources.FlistSource(stream.path)
  if kind == "paired_flists":
    return sources.PairedFlists(stream.path, stream.gt_path)
  if kind in ("builtin", "simulated"):
    # builtin: clean photos from pip wheels (or the folder `path`), max side
    # `size`; simulated: those degraded by `task`/`domain` with `seed`, paired
    # or not per `paired` (see dada_jax.data.simulated). Imported here, as
    # the degradations' scipy.signal takes seconds to import.
    from dada_jax.data import builtin  # pylint: disable=g-import-not-at-top
    from dada_jax.data import simulated  # pylint: disable=g-import-not-at-top
    base = builtin.BuiltinPhotos(stream.split, images_dir=stream.path or None,
                                 max_side=stream.size or None)
    if kind == "builtin":
      return base
    try:
      return simulated.SimulatedPairs(base, stream.task, stream.domain,
                                      stream.seed, paired=stream.paired)
    except ValueError as e:
      raise DataError(f"{name}: {e}") from e
  return sources.TfdsSource(stream.path, stream.split, stream.image_key,
                            stream.data_dir or None)
