"""Restoration: whole-image vs tiled paths."""

import jax
import numpy as np
import pytest

from dada_jax import config_lib
from dada_jax import image_io
from dada_jax import models
from dada_jax import predict


def _test_image(h, w, seed=0):
  rng = np.random.default_rng(seed)
  yy, xx = np.mgrid[0:h, 0:w] / max(h, w)
  img = np.stack([0.5 + 0.3 * np.sin(6 * xx + 3 * yy),
                  0.5 + 0.3 * np.cos(5 * yy), xx * yy], -1)
  return np.clip(img + rng.normal(0, 0.1, img.shape), 0, 1).astype(np.float32)


@pytest.fixture(scope="module")
def depth4():
  """The paper's depth-4 restorer at width 8, with a strong random residual
  (std ~0.15 on [0, 1] images): a demanding case for tile seams."""
  c = config_lib.base_config("denoise")
  c.restorer.wf = 8
  params = jax.jit(lambda k: models.init_params(c, k, roles=("restorer",)))(
      jax.random.key(0))["restorer"]
  params["last"]["kernel"] = params["last"]["kernel"] * 0.2
  return c, params


def test_tiled_matches_whole_image_at_1024(depth4):
  """Default tile and overlap: no visible seams (<= 2/255 anywhere)."""
  c, params = depth4
  img = _test_image(1024, 1024)
  whole = predict.restore_array(c, params, img, tile=0)
  assert np.std(whole - img) > 0.05  # the residual is far from zero
  tiled = predict.restore_array(c, params, img, tile=c.predict.tile)
  diff = np.abs(image_io.to_uint8(tiled, "zero_one").astype(int)
                - image_io.to_uint8(whole, "zero_one").astype(int))
  assert diff.max() <= 2, diff.max()


def test_tiles_share_one_compiled_function(depth4):
  c, params = depth4
  restore = predict._compiled_restore(models.make_restorer(c))
  traces = []
  before = restore._cache_size()  # pylint: disable=protected-access
  # Odd sizes, an axis shorter than the tile, and a second image size.
  for shape in ((600, 700), (300, 900)):
    out = predict.restore_array(c, params, _test_image(*shape), tile=256,
                                overlap=64)
    assert out.shape == (*shape, 3)
    traces.append(restore._cache_size())  # pylint: disable=protected-access
  assert traces[0] - before == 1 and traces[1] == traces[0]


def test_small_image_untiled_by_default_and_padding_cropped(depth4):
  c, params = depth4
  img = _test_image(37, 45)
  out = predict.restore_array(c, params, img)
  assert out.shape == (37, 45, 3)
  # Replicate padding: the top-left block is the same as restoring a
  # pre-padded image and cropping.
  padded = np.pad(img, ((0, 3), (0, 3), (0, 0)), mode="edge")
  np.testing.assert_allclose(
      out, predict.restore_array(c, params, padded)[:37, :45], atol=1e-6)


@pytest.mark.parametrize("kwargs,match", [
    (dict(tile=100), "multiple of 8"),
    (dict(tile=128, overlap=64), "twice the tile overlap 64"),
    (dict(tile=128, overlap=12), "multiple of 8"),
])
def test_bad_tiling_arguments(depth4, kwargs, match):
  c, params = depth4
  with pytest.raises(ValueError, match=match):
    predict.restore_array(c, params, _test_image(200, 200), **kwargs)


def test_dihedral_transforms_are_the_8_distinct_and_invert():
  x = np.arange(2 * 3 * 1).reshape(2, 3, 1)
  views = [predict.dihedral(x, t) for t in range(8)]
  assert len({v.tobytes() + bytes(v.shape) for v in views}) == 8
  for t, v in enumerate(views):
    expected = np.rot90(x[:, ::-1] if t >= 4 else x, t % 4)
    np.testing.assert_array_equal(v, expected)
    np.testing.assert_array_equal(predict.dihedral_inverse(v, t), x)


def _mean_of_single_passes(c, params, img, **kw):
  return np.mean([predict.dihedral_inverse(predict.restore_array(
      c, params, np.ascontiguousarray(predict.dihedral(img, t)), **kw), t)
                  for t in range(8)], axis=0)


def test_self_ensemble_is_the_mean_of_8_single_passes_one_compile(depth4):
  """Odd, non-square size: the 8 views have two shapes and their own
  padding; one compiled program restores all of them."""
  c, params = depth4
  img = _test_image(37, 45)
  ensemble = predict._compiled_ensemble(models.make_restorer(c),  # pylint: disable=protected-access
                                        models.pad_multiple(c))
  before = ensemble._cache_size()  # pylint: disable=protected-access
  out = predict.restore_array(c, params, img, tile=0, self_ensemble=True)
  assert ensemble._cache_size() == before + 1  # pylint: disable=protected-access
  assert out.shape == img.shape
  np.testing.assert_allclose(out, _mean_of_single_passes(c, params, img,
                                                         tile=0), atol=1e-5)
  single = predict.restore_array(c, params, img, tile=0)
  assert np.abs(out - single).max() > 1e-3  # the views really differ


def test_tiled_self_ensemble_reuses_the_tile_program(depth4):
  c, params = depth4
  img = _test_image(150, 200, seed=1)
  restore = predict._compiled_restore(models.make_restorer(c))  # pylint: disable=protected-access
  before = restore._cache_size()  # pylint: disable=protected-access
  out = predict.restore_array(c, params, img, tile=64, overlap=16,
                              self_ensemble=True)
  size = restore._cache_size()  # pylint: disable=protected-access
  assert size <= before + 1
  np.testing.assert_allclose(
      out, _mean_of_single_passes(c, params, img, tile=64, overlap=16),
      atol=1e-6)
  assert restore._cache_size() == size  # pylint: disable=protected-access
