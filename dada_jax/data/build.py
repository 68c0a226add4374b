"""A source from a config's data stream: `build_source`."""

from __future__ import annotations

from dada_jax import config_lib
from dada_jax.data import shards
from dada_jax.data import sources
from dada_jax.data.common import DataError

# The training streams that read single images ({"image"}), and the side of
# a paired prepared set each would use.
_SINGLE_STREAMS = {"config.data.real": "lq", "config.data.ref": "gt"}


def _prepared(stream, name: str) -> shards.PreparedShards:
  """A `dada-jax prepare` folder; a paired one read whole by a single-image
  training stream is a DataError naming the image_key that fixes it."""
  source = shards.PreparedShards(stream.path, stream.image_key)
  side = _SINGLE_STREAMS.get(name)
  if side and source.paired:
    raise DataError(
        f"{name}: {stream.path} holds (lq, gt) pairs of "
        f"{source.manifest.get('preset')} but this stream reads single "
        f"images: set --{name}.image_key={side}")
  return source


def build_source(stream, name: str = "stream", patch_size: int = 0):
  """Builds a source from a config stream (see `config_lib.base_config`).

  Args:
    stream: ConfigDict with `kind` (one of config_lib.STREAM_KINDS) and
      `path`, `gt_path`, `split`, `data_dir`, `image_key`, `num`, `size`,
      `seed` (kind array_record: `path` a `dada-jax prepare` folder,
      `image_key` "image", "lq" or "gt", see shards.PreparedShards); kind
      simulated also `task`, `domain` and `paired`; kind rendered also
      `block_size`, `draws` and `blocks_per_photo`.
    name: the config field, for error messages (e.g. "config.data.real").
    patch_size: the training patch: a rendered stream without block_size
      renders windows of this side (see dada_jax.data.rendered).

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
  if kind == "array_record":
    return _prepared(stream, name)
  if kind in ("builtin", "simulated", "rendered"):
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
    if kind == "rendered":
      from dada_jax.data import rendered  # pylint: disable=g-import-not-at-top
      if not (stream.block_size or patch_size):
        raise DataError(f"{name}: kind 'rendered' needs block_size > 0 "
                        "(a test set) or a training patch size")
      try:
        return rendered.RenderedPairs(
            base, stream.task, stream.domain, stream.seed,
            paired=stream.paired,
            patch_size=None if stream.block_size else patch_size,
            block_size=stream.block_size or None, draws=stream.draws,
            blocks_per_photo=stream.blocks_per_photo)
      except ValueError as e:
        raise DataError(f"{name}: {e}") from e
    try:
      return simulated.SimulatedPairs(base, stream.task, stream.domain,
                                      stream.seed, paired=stream.paired)
    except ValueError as e:
      raise DataError(f"{name}: {e}") from e
  return sources.TfdsSource(stream.path, stream.split, stream.image_key,
                            stream.data_dir or None)
