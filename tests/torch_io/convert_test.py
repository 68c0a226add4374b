"""Checkpoint import/export: .pth without torch, strict key checks, round trips."""

import json
import os

import jax
import numpy as np
import pytest

from dada_jax.torch_io import convert
from dada_jax.torch_io import pth
from dada_jax import weights

torch = pytest.importorskip(
    "torch", reason="torch (the [test] extra) runs the torch cross-checks")


def _tree_equal(a, b):
  assert jax.tree.structure(a) == jax.tree.structure(b)
  for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
    np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_segments_rename_both_ways():
  assert convert.module_segments("input_blocks.1.0.in_layers.2") == (
      "input_blocks_1_0", "in_layers_2")
  assert convert.module_segments("up_path.0.conv_block.block.0") == (
      "up_path_0", "conv_block", "block_0")
  for dotted in ("input_blocks.11.0.skip_connection", "out.2", "last",
                 "middle_block.1.proj_out", "cond_embed.0"):
    assert convert.torch_dotted(
        convert.module_segments(dotted)) == dotted


def test_pth_reader_matches_torch_load(tmp_path, ref_state):
  path = tmp_path / "net.pth"
  torch.save({k: torch.from_numpy(v) for k, v in ref_state.items()}, path)
  ours = pth.read_state_dict(path)
  theirs = torch.load(path, weights_only=True)
  assert list(ours) == list(theirs)
  for k, v in theirs.items():
    np.testing.assert_array_equal(ours[k], v.numpy())
  # Non-contiguous views and offsets into shared storages survive too.
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6)
  torch.save({"t": base.t(), "s": base[1:, 2:]}, tmp_path / "views.pth")
  views = pth.read_state_dict(tmp_path / "views.pth")
  np.testing.assert_array_equal(views["t"], base.t().numpy())
  np.testing.assert_array_equal(views["s"], base[1:, 2:].numpy())


def test_import_export_round_trip_is_identity(ref_state, small, small_params):
  """torch state dict -> params -> torch state dict gives back every key and
  value, so the reference's load_state_dict(strict=True) accepts the export;
  and params -> torch -> params is the identity."""
  exported = convert.state_dict_from_params(small_params, small)
  assert sorted(exported) == sorted(ref_state)
  for k, v in ref_state.items():
    np.testing.assert_allclose(exported[k], v, rtol=1e-6, atol=0, err_msg=k)
    assert exported[k].shape == v.shape
  again = convert.params_from_state_dict(exported, small)
  _tree_equal(again, small_params)


def test_exported_pth_loads_in_torch_strictly(tmp_path, ref_state, small,
                                              small_params):
  path = tmp_path / "out.pth"
  pth.write_state_dict(convert.state_dict_from_params(small_params,
                                                            small), path)
  module = torch.nn.Module()
  for k, v in ref_state.items():  # a module with exactly the reference keys
    owner = module
    *parents, leaf = k.split(".")
    for p in parents:
      if not hasattr(owner, p):
        owner.add_module(p, torch.nn.Module())
      owner = getattr(owner, p)
    owner.register_buffer(leaf, torch.zeros(v.shape))
  result = module.load_state_dict(torch.load(path, weights_only=True),
                                  strict=True)
  assert not result.missing_keys and not result.unexpected_keys


def test_restorer_only_subsets(ref_state, small, small_params):
  prefixed = {k: v for k, v in ref_state.items()
              if k.startswith("RestorationNet.")}
  bare = {k[len("RestorationNet."):]: v for k, v in prefixed.items()}
  for state in (prefixed, bare):
    got = convert.params_from_state_dict(state, small)
    assert list(got) == ["restorer"]
    _tree_equal(got["restorer"], small_params["restorer"])
  # Loading only the restorer from a whole-network dict ignores the critic.
  got = convert.params_from_state_dict(ref_state, small,
                                             roles=("restorer",))
  assert list(got) == ["restorer"]


def test_strict_errors_name_every_bad_key(ref_state, small):
  state = dict(ref_state)
  del state["RestorationNet.last.bias"]
  state["RestorationNet.extra.weight"] = np.zeros((3,), np.float32)
  state["denoise_fn.out.2.weight"] = np.zeros((3, 32, 5, 5), np.float32)
  with pytest.raises(convert.CheckpointMismatch) as e:
    convert.params_from_state_dict(state, small, source="x.pth")
  msg = str(e.value)
  assert msg.startswith("x.pth does not fit the config (3 problems)")
  assert "missing RestorationNet.last.bias" in msg
  assert "unexpected RestorationNet.extra.weight" in msg
  assert ("shape of denoise_fn.out.2.weight: checkpoint (3, 32, 5, 5), "
          "model expects (3, 32, 3, 3)") in msg


def test_schedule_buffers_must_match_config(ref_state, small):
  other = small.copy_and_resolve_references()
  other.diffusion.schedule = "cosine"
  with pytest.raises(convert.CheckpointMismatch, match="schedule buffer"):
    convert.params_from_state_dict(ref_state, other)


def test_orbax_directory_and_npz_round_trip(tmp_path, ref_state, small,
                                            small_params):
  out = tmp_path / "converted"
  weights.save_params(str(out), small_params, small, source="fixture")
  meta = json.loads((out / "config.json").read_text())
  assert meta["roles"] == ["critic", "restorer"]
  both = weights.load_params(str(out), small, ("restorer", "critic"))
  _tree_equal(both, small_params)
  np.savez(tmp_path / "net.npz", **ref_state)
  from_npz = weights.load_params(str(tmp_path / "net.npz"), small)
  _tree_equal(from_npz["restorer"], small_params["restorer"])
  with pytest.raises(FileExistsError):
    weights.save_params(str(out), small_params, small)


def test_orbax_directory_from_another_config_is_named(tmp_path, small,
                                                      small_params):
  weights.save_params(str(tmp_path / "c"), small_params, small)
  wider = small.copy_and_resolve_references()
  wider.restorer.wf = 32
  with pytest.raises(convert.CheckpointMismatch,
                     match=r"shape of restorer/down_path_0/block_0/kernel"):
    weights.load_params(str(tmp_path / "c"), wider)


@pytest.mark.parametrize("content,reason", [
    (b"", "truncated or corrupt|not a readable"),
    (b"not a zip at all", "not a readable torch checkpoint"),
])
def test_unreadable_pth_is_reported_by_name(tmp_path, content, reason):
  path = tmp_path / "bad.pth"
  path.write_bytes(content)
  with pytest.raises(pth.PthError, match=reason) as e:
    pth.read_state_dict(path)
  assert str(path) in str(e.value)


def test_truncated_pth_is_reported_by_name(tmp_path, ref_state):
  path = tmp_path / "full.pth"
  torch.save({k: torch.from_numpy(v) for k, v in ref_state.items()}, path)
  data = path.read_bytes()
  cut = tmp_path / "cut.pth"
  cut.write_bytes(data[:len(data) // 2])
  with pytest.raises(pth.PthError) as e:
    pth.read_state_dict(cut)
  assert str(cut) in str(e.value)


def test_pickle_with_code_is_refused(tmp_path):
  path = tmp_path / "evil.pth"
  torch.save({"w": torch.zeros(2), "f": os.getcwd}, path)
  with pytest.raises(pth.PthError, match="only tensor state dicts"):
    pth.read_state_dict(path)
