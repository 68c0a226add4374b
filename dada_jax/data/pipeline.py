"""Grain pipelines: the zipped multi-stream training iterator and eval iterator.

Training batches are dicts of [B, P, P, 3] float32 numpy arrays in the task's
value range ([0, 1] or [-1, 1]), B = global_batch_size // process_count:

  syn_lq     synthetic degraded patch (online AWGN for clean-only sources)
  syn_gt     its clean ground truth (same window and augmentation)
  real_lq    real degraded patch, unpaired
  ref_clean  unpaired clean reference patch (only when a `ref` source is given)

Each stream is its own MapDataset (shuffle -> repeat -> crop and augment ->
float [-> noise]) over the whole source, with its own seeds derived from the
main seed, so the streams reshuffle independently and may have different epoch
lengths. They are zipped by index into one global sequence of elements: global
batch k is elements [k·G, (k+1)·G), and host h of n reads only its rows
[h·G/n, (h+1)·G/n) of each (`_HostRows`), decoding nothing else. Everything
stays a MapDataset until batching, so a batch is a pure function of its index:
the iterator state is a single position (Grain checkpointing works), and the
global batch is the same whatever the number of hosts or worker processes.
"""

from __future__ import annotations

from typing import Any, Sequence

import grain
import numpy as np

from dada_jax.data import sources as sources_lib
from dada_jax.data import transforms
from dada_jax.data.common import DataError

# Stream ids feed the seed derivation; never renumber them (it would change
# every stream for a given seed).
_STREAMS = {"syn": 0, "real": 1, "ref": 2}
_KEYS = {
    "syn": {"lq": "syn_lq", "gt": "syn_gt"},
    "real": {"image": "real_lq"},
    "ref": {"image": "ref_clean"},
}


def derive_seed(seed: int, *path: int) -> int:
  """A well-mixed uint32 seed for the sub-stream `path` of `seed`."""
  return int(np.random.SeedSequence([seed, *path]).generate_state(1)[0])


def is_paired(source: Any) -> bool:
  """Whether elements are {"lq", "gt"} pairs (else {"image"})."""
  paired = getattr(source, "paired", None)
  return set(source[0]) == {"lq", "gt"} if paired is None else paired


class _MergeStreams(grain.transforms.Map):
  """(dict, dict, ...) from the zipped streams -> one dict with stream keys."""

  def __init__(self, key_maps: Sequence[dict[str, str]]):
    self.key_maps = list(key_maps)

  def map(self, element):
    return {key_map[k]: v for key_map, part in zip(self.key_maps, element)
            for k, v in part.items()}


def _process(process_index, process_count):
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else (
        process_index)
    process_count = jax.process_count() if process_count is None else (
        process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is not in "
                     f"[0, {process_count})")
  return process_index, process_count


def _train_stream(source, stream: str, *, seed: int, patch_size: int,
                  augment: bool, value_range: str, sigma_range,
                  awgn: bool = False) -> grain.MapDataset:
  """One infinite, shuffled, cropped and augmented stream (all hosts')."""
  ds = grain.MapDataset.source(source)
  if not len(ds):  # pylint: disable=g-explicit-length-test
    raise DataError(f"{source!r} has no images")
  # The 0 was the host index when each host shuffled its own shard; kept so
  # that a given seed still gives the same stream.
  s = lambda op: derive_seed(seed, 0, _STREAMS[stream], op)
  ds = ds.shuffle(seed=s(0)).repeat()  # Shuffle's order changes per epoch.
  ds = ds.random_map(transforms.CropAndAugment(patch_size, augment),
                     seed=s(1))
  ds = ds.map(transforms.ToFloat(value_range))
  if (stream == "syn" or awgn) and not is_paired(source):
    ds = ds.random_map(transforms.AddNoise(value_range, sigma_range),
                       seed=s(2))
    if stream != "syn":  # keep the noisy image only, as an unpaired stream
      ds = ds.map(_NoisyOnly())
  return ds


class _HostRows(grain.MapDataset):
  """This host's rows of each global batch of `parent`, in order.

  Element m is row m % b of local batch m // b, i.e. parent element
  (m // b)·G + host·b + m % b, for global batch G and b = G / host_count.
  """

  def __init__(self, parent: grain.MapDataset, global_batch_size: int,
               host: int, host_count: int):
    super().__init__(parent)
    self._global = global_batch_size
    self._local = global_batch_size // host_count
    self._offset = host * self._local
    self._length = len(parent) // global_batch_size * self._local

  def __len__(self) -> int:
    return self._length

  def _parent_index(self, index: int) -> int:
    batch, row = divmod(index, self._local)
    return batch * self._global + self._offset + row

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._parent_index(index)]

  def __str__(self) -> str:
    return (f"_HostRows(global_batch={self._global}, rows={self._offset}:"
            f"{self._offset + self._local})")


class _NoisyOnly(grain.transforms.Map):
  """{"lq", "gt"} -> {"image": lq}."""

  def map(self, element):
    return {"image": element["lq"]}


def make_train_dataset(
    syn, real, ref=None, *, patch_size: int, global_batch_size: int,
    seed: int, value_range: str = "zero_one", augment: bool = True,
    sigma_range: tuple[float, float] = transforms.DEFAULT_SIGMA_RANGE,
    num_workers: int = 0, num_threads: int = 4,
    prefetch_buffer_size: int = 8, check_files: bool = True,
    process_index: int | None = None,
    process_count: int | None = None,
    real_awgn: bool = False) -> grain.IterDataset:
  """The infinite training stream of this host (see the module docstring).

  Args:
    syn: synthetic source: paired ({"lq", "gt"}), or clean-only ({"image"}),
      in which case syn_lq = syn_gt + σ·N(0, 1), σ ~ U[sigma_range] / 255 in
      [0, 1] units (x2 in [-1, 1]), unclipped.
    real: unpaired real degraded source ({"image"}).
    ref: optional unpaired clean reference source ({"image"}).
    patch_size: side of the square training patches.
    global_batch_size: batch over all hosts; must divide by process_count.
    seed: main seed; every stream's shuffle, crop and noise derive from it.
    value_range: "zero_one" or "minus_one_one".
    augment: random dihedral (rot90 x flip) op per element.
    sigma_range: online noise levels (8-bit units) for a clean-only `syn`.
    num_workers: worker processes (`mp_prefetch`); 0 reads in this process.
    num_threads: reader threads per process; each computes whole batches.
    prefetch_buffer_size: batches read ahead per process.
    check_files: decode every file once first (`check_sources`); listing
      problems (missing folders, unmatched pairs, ...) are always checked.
    process_index: this host (default `jax.process_index()`).
    process_count: number of hosts (default `jax.process_count()`).
    real_awgn: `real` is clean-only and gets `syn`'s online AWGN (its own
      draws): the sim2real control, a second synthetic stream.

  Returns:
    An IterDataset of dicts of [B, patch, patch, 3] float32 arrays.

  Raises:
    DataError: bad data or a batch size that does not split over hosts.
  """
  process_index, process_count = _process(process_index, process_count)
  if global_batch_size % process_count:
    raise DataError(f"global_batch_size={global_batch_size} is not divisible "
                    f"by process_count={process_count}")
  streams = {"syn": syn, "real": real, "ref": ref}
  streams = {k: v for k, v in streams.items() if v is not None}
  if real_awgn and real is not None and is_paired(real):
    raise DataError(f"real_awgn: {real!r} is paired; the AWGN control needs "
                    "a clean-only real stream ({'image'} elements)")
  sources_lib.check_sources(list(streams.values()), patch_size,
                            decode=check_files,
                            shard=(process_index, process_count))
  datasets = [
      _train_stream(source, name, seed=seed, patch_size=patch_size,
                    augment=augment, value_range=value_range,
                    sigma_range=sigma_range,
                    awgn=real_awgn and name == "real")
      for name, source in streams.items()]
  # All streams are infinite (the same length), so zipping by index is exact.
  ds = grain.experimental.ZipMapDataset(datasets)
  ds = ds.map(_MergeStreams([_KEYS[name] for name in streams]))
  ds = _HostRows(ds, global_batch_size, process_index, process_count)
  ds = ds.batch(global_batch_size // process_count, drop_remainder=True)
  return _to_iter(ds, num_workers, num_threads, prefetch_buffer_size)


def make_train_iterator(*args, **kwargs) -> grain.DatasetIterator:
  """`iter(make_train_dataset(...))`: supports get_state()/set_state()."""
  return iter(make_train_dataset(*args, **kwargs))


def make_eval_dataset(
    source, *, value_range: str = "zero_one", sigma: float | None = None,
    seed: int = 0, num_threads: int = 2, check_files: bool = True,
    process_index: int = 0, process_count: int = 1) -> grain.IterDataset:
  """One pass over `source` in order: {"lq", "gt"}, each [1, H, W, 3] float32.

  No shuffle, crop or augmentation; batch 1 because sizes may differ.
  Element i is the source's item i (on one host).

  Args:
    source: paired source, or clean-only with `sigma` set: lq = gt + noise of
      std `sigma` (8-bit units), deterministic for `seed`, unclipped.
    value_range: "zero_one" or "minus_one_one".
    sigma: fixed noise level for a clean-only source.
    seed: noise seed.
    num_threads: reader threads.
    check_files: decode every file once first (`check_sources`).
    process_index: this host's shard (default: no sharding).
    process_count: number of shards.
  """
  paired = is_paired(source)
  if not paired and sigma is None:
    raise DataError(f"{source!r} has no ground truth: pass a paired source, "
                    "or sigma to add noise to clean images")
  sources_lib.check_sources([source], 0, decode=check_files)
  ds = grain.MapDataset.source(source)[process_index::process_count]
  ds = ds.map(transforms.ToFloat(value_range))
  if not paired:
    ds = ds.random_map(transforms.AddNoise(value_range, (sigma, sigma)),
                       seed=derive_seed(seed, process_index))
  ds = ds.batch(1)
  return _to_iter(ds, 0, num_threads, 2 * max(num_threads, 1))


def make_eval_iterator(*args, **kwargs) -> grain.DatasetIterator:
  """`iter(make_eval_dataset(...))`."""
  return iter(make_eval_dataset(*args, **kwargs))


def _to_iter(ds: grain.MapDataset, num_workers: int, num_threads: int,
             prefetch_buffer_size: int) -> grain.IterDataset:
  read = grain.ReadOptions(num_threads=num_threads,
                           prefetch_buffer_size=prefetch_buffer_size)
  out = ds.to_iter_dataset(read)
  if num_workers > 0:
    out = out.mp_prefetch(grain.MultiprocessingOptions(num_workers=num_workers))
  return out
