"""Bad and careless inputs, as a new user types them, across every command.

Each case asserts the exit status (2: a usage error caught before any work;
1: some files failed, the rest were done), the one line that explains it, and
that nothing the user already had was changed or half-written.
"""

import dataclasses
import hashlib
import os
import pathlib
from typing import Callable

import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import RUNLOCAL as RUNLOCAL_SPEC
from conftest import SMALL_ARGS
from dada_jax import cli
import hostile_pth

torch = pytest.importorskip(
    "torch", reason="torch (the [test] extra) runs the torch cross-checks")
RUNLOCAL = ["--config", RUNLOCAL_SPEC]


@pytest.fixture(scope="module")
def pth_bytes(tmp_path_factory, ref_state):
  path = tmp_path_factory.mktemp("ckpt") / "small.pth"
  torch.save({k: torch.from_numpy(v) for k, v in ref_state.items()}, path)
  return path.read_bytes()


def _png(path, shape=(24, 30, 3), seed=0):
  rng = np.random.default_rng(seed)
  Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8)).save(path)


@pytest.fixture
def world(tmp_path, pth_bytes):
  """A user's folder: two images, the small reference .pth, a text file."""
  (tmp_path / "in").mkdir()
  _png(tmp_path / "in/a.png")
  _png(tmp_path / "in/b.png", seed=1)
  (tmp_path / "small.pth").write_bytes(pth_bytes)
  (tmp_path / "notes.txt").write_text("not a folder\n")
  return tmp_path


def _snapshot(root: pathlib.Path) -> dict:
  out = {}
  for p in sorted(root.rglob("*")):
    if p.is_symlink():
      out[str(p)] = ("link", os.readlink(p))
    elif p.is_file():
      out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    else:
      out[str(p)] = "dir"
  return out


# --- setups: each changes the user's folder before the command runs --------


def _existing_output(d):
  (d / "out").mkdir()
  (d / "out/a.png").write_bytes(b"precious")


def _broken_link_input(d):
  os.symlink(d / "gone.png", d / "in/c.png")


def _folder_named_png(d):
  (d / "in/d.png").mkdir()


def _colliding_stems(d):
  _png(d / "in/a.jpg")


def _empty_input(d):
  (d / "empty").mkdir()


def _nonempty_out(d):
  (d / "out").mkdir()
  (d / "out/keep.txt").write_text("mine")


def _random_npz(d):
  (d / "w.npz").write_bytes(np.random.default_rng(0).bytes(512))


def _random_pth(d):
  (d / "w.pth").write_bytes(np.random.default_rng(1).bytes(512))


def _truncated_pth(d):
  (d / "w.pth").write_bytes((d / "small.pth").read_bytes()[:5000])


def _pickle_payload(d):
  # A classic code-execution pickle inside a torch-style zip archive.
  import pickle  # pylint: disable=g-import-not-at-top
  import zipfile  # pylint: disable=g-import-not-at-top

  class Payload:
    def __reduce__(self):
      return (os.system, (f"touch {d / 'PWNED'}",))

  with zipfile.ZipFile(d / "w.pth", "w") as z:
    z.writestr("archive/data.pkl", pickle.dumps(Payload(), protocol=2))


def _hostile(writer):
  def setup(d):
    writer(str(d / "w.pth"))
  return setup


def _existing_pth(d):
  (d / "back.pth").write_bytes(b"an older export")


def _folder_named_pth(d):
  (d / "back.pth").mkdir()


def _animated_gif(d):
  frames = [Image.fromarray(np.full((24, 30, 3), v, np.uint8)) for v in
            (10, 120, 240)]
  (d / "anim").mkdir()
  frames[0].save(d / "anim/g.gif", save_all=True, append_images=frames[1:])


def _png16(d):
  (d / "deep").mkdir()
  # Pillow writes 16-bit RGB only through raw 'RGB;16B' data; build it by hand.
  import struct  # pylint: disable=g-import-not-at-top
  import zlib  # pylint: disable=g-import-not-at-top
  h, w = 8, 12
  rows = np.random.default_rng(2).integers(0, 65536, (h, w, 3), np.uint16)
  raw = b"".join(b"\x00" + r.astype(">u2").tobytes() for r in rows)

  def chunk(tag, data):
    return (struct.pack(">I", len(data)) + tag + data +
            struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF))

  png = (b"\x89PNG\r\n\x1a\n" +
         chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)) +
         chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))
  (d / "deep/x16.png").write_bytes(png)


def _truncated_jpeg(d):
  Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(d / "in/t.jpg")
  data = (d / "in/t.jpg").read_bytes()
  (d / "in/t.jpg").write_bytes(data[:len(data) // 3])


def _empty_png(d):
  (d / "in/z.png").write_bytes(b"")


def _two_var_mat(d):
  blocks = np.zeros((1, 1, 16, 16, 3), np.uint8)
  scipy.io.savemat(d / "two.mat", {"A": blocks, "B": blocks})


def _missing_flist_entry(d):
  (d / "l.flist").write_text("in/a.png\nin/missing.png\n")


@dataclasses.dataclass
class Case:
  id: str
  argv: Callable[[pathlib.Path], list[str]]
  code: int
  message: str
  setup: Callable[[pathlib.Path], None] | None = None
  absent: tuple[str, ...] = ()  # paths (relative) that must not exist after
  one_line: bool = True  # False: a summary line, then one line per file


def _restore(d, *extra, inp="in", out="out", ckpt="small.pth"):
  return (["restore", "--checkpoint", str(d / ckpt), "--input", str(d / inp),
           "--output", str(d / out)] + SMALL_ARGS + list(extra))


def _convert(d, ckpt="small.pth", out="conv"):
  return (["convert", "--torch-checkpoint", str(d / ckpt), "--output",
           str(d / out)] + SMALL_ARGS)


def _export(d, out="back.pth", *extra):
  return (["export", "--checkpoint", str(d / "small.pth"), "--output",
           str(d / out)] + SMALL_ARGS + list(extra))


def _evaluate(d, *extra):
  return (["evaluate", "--checkpoint", str(d / "small.pth")] + SMALL_ARGS +
          list(extra))


def _train(d, *extra):
  return ["train", "--workdir", str(d / "wd")] + RUNLOCAL + list(extra)


CASES = [
    # restore: flags
    Case("tile_negative", lambda d: _restore(d, "--tile", "-5"), 2,
         "--tile -5: tile side -5 must be 0 (never tile) or a positive "
         "multiple of 4", absent=("out",)),
    Case("tile_not_multiple", lambda d: _restore(d, "--tile", "3"), 2,
         "--tile 3: tile side 3 must be 0 (never tile) or a positive "
         "multiple of 4", absent=("out",)),
    Case("tile_below_overlap", lambda d: _restore(d, "--tile", "8"), 2,
         "--tile 8: tile side 8 must be larger than twice the tile overlap "
         "16 (config.predict.tile_overlap)", absent=("out",)),
    Case("config_tile_overlap",
         lambda d: _restore(d, "--config.predict.tile_overlap=6"), 2,
         "config.predict.tile=64, tile_overlap=6: tile overlap 6 must be a "
         "non-negative multiple of 4", absent=("out",)),
    # restore: outputs never replace inputs or existing files silently
    Case("output_is_input", lambda d: _restore(d, out="in"), 2,
         "would overwrite the input"),
    Case("output_is_input_overwrite",
         lambda d: _restore(d, "--overwrite", out="in"), 2,
         "would overwrite the input"),
    Case("output_is_input_file",
         lambda d: _restore(d, inp="in/a.png", out="in"), 2,
         "would overwrite the input"),
    Case("output_file_exists", lambda d: _restore(d), 2,
         "1 file(s) would be overwritten", setup=_existing_output),
    Case("output_under_file", lambda d: _restore(d, out="notes.txt/sub"), 2,
         "cannot create it", absent=("notes.txt/sub",)),
    Case("output_is_file", lambda d: _restore(d, out="notes.txt"), 2,
         "--output", absent=()),
    # restore: inputs
    Case("input_missing", lambda d: _restore(d, inp="nope"), 2,
         "no such file or folder", absent=("out",)),
    Case("input_empty_folder", lambda d: _restore(d, inp="empty"), 2,
         "folder holds no images", setup=_empty_input, absent=("out",)),
    Case("input_broken_link_file",
         lambda d: _restore(d, inp="in/c.png"), 2, "symbolic link to nothing",
         setup=_broken_link_input, absent=("out",)),
    Case("input_colliding_stems", lambda d: _restore(d), 2, "sharing a stem",
         setup=_colliding_stems, absent=("out",)),
    Case("broken_link_in_folder", lambda d: _restore(d), 1,
         "skipped, a symbolic link to nothing", setup=_broken_link_input),
    Case("folder_named_png", lambda d: _restore(d), 0,
         "skipped, a folder named like an image", setup=_folder_named_png),
    Case("truncated_jpeg", lambda d: _restore(d), 1, "t.jpg: cannot read "
         "image", setup=_truncated_jpeg),
    Case("empty_png", lambda d: _restore(d), 1, "z.png: empty file (0 bytes)",
         setup=_empty_png),
    Case("animated_gif", lambda d: _restore(d, inp="anim/g.gif"), 0,
         "first of 3 frames", setup=_animated_gif),
    Case("png_16bit_rgb", lambda d: _restore(d, inp="deep"), 0,
         "16-bit -> 8-bit", setup=_png16),
    # restore: checkpoints
    Case("ckpt_missing", lambda d: _restore(d, ckpt="nope.pth"), 2,
         "nope.pth: no such file or directory", absent=("out",)),
    Case("ckpt_empty_folder", lambda d: _restore(d, ckpt="in"), 2,
         "no params/ inside", absent=("out",)),
    Case("ckpt_random_npz", lambda d: _restore(d, ckpt="w.npz"), 2,
         "w.npz: not a readable .npz", setup=_random_npz, absent=("out",)),
    Case("ckpt_random_pth", lambda d: _restore(d, ckpt="w.pth"), 2,
         "w.pth: not a readable torch checkpoint", setup=_random_pth,
         absent=("out",)),
    Case("ckpt_truncated_pth", lambda d: _restore(d, ckpt="w.pth"), 2,
         "w.pth:", setup=_truncated_pth, absent=("out",)),
    Case("ckpt_pickle_payload", lambda d: _restore(d, ckpt="w.pth"), 2,
         "only tensor state dicts can be read", setup=_pickle_payload,
         absent=("out", "PWNED")),
    Case("ckpt_numel_past_storage", lambda d: _restore(d, ckpt="w.pth"), 2,
         "w.pth: tensor", setup=_hostile(hostile_pth.write_numel_overflow),
         absent=("out",)),
    Case("ckpt_offset_past_storage", lambda d: _restore(d, ckpt="w.pth"), 2,
         "w.pth: tensor", setup=_hostile(hostile_pth.write_offset_past_end),
         absent=("out",)),
    # convert
    Case("convert_nonempty_output", lambda d: _convert(d, out="out"), 2,
         "--output {d}/out: folder is not empty",
         setup=_nonempty_out, absent=()),
    Case("convert_output_is_file", lambda d: _convert(d, out="notes.txt"), 2,
         "exists and is not a folder"),
    Case("convert_numel_past_storage", lambda d: _convert(d, ckpt="w.pth"), 2,
         "w.pth: tensor", setup=_hostile(hostile_pth.write_numel_overflow),
         absent=("conv",)),
    Case("convert_offset_past_storage",
         lambda d: _convert(d, ckpt="w.pth"), 2, "w.pth: tensor",
         setup=_hostile(hostile_pth.write_offset_past_end), absent=("conv",)),
    Case("convert_wrong_model",
         lambda d: _convert(d)[:-len(SMALL_ARGS)] + SMALL_ARGS[:2], 2,
         "does not fit the config", absent=("conv",)),
    # export
    Case("export_exists", _export, 2,
         "--output {d}/back.pth: exists; pass --overwrite", setup=_existing_pth),
    Case("export_bad_extension", lambda d: _export(d, "back.pt"), 2,
         "must end in .pth or .npz", absent=("back.pt",)),
    Case("export_folder_named_pth", _export, 2, "is a folder",
         setup=_folder_named_pth),
    Case("export_under_file", lambda d: _export(d, "notes.txt/back.pth"), 2,
         "notes.txt is a file"),
    # evaluate
    Case("evaluate_nonempty_output",
         lambda d: _evaluate(d, "--input", str(d / "in"), "--target",
                             str(d / "in"), "--output", str(d / "out")), 2,
         "folder is not empty; choose a new one or pass --overwrite",
         setup=_nonempty_out),
    Case("evaluate_input_without_target",
         lambda d: _evaluate(d, "--input", str(d / "in")), 2,
         "--input and --target must be given together"),
    Case("evaluate_negative_max_images",
         lambda d: _evaluate(d, "--input", str(d / "in"), "--target",
                             str(d / "in"), "--max-images", "-1"), 2,
         "--max-images -1: must be >= 0"),
    Case("evaluate_mat_two_variables",
         lambda d: _evaluate(d, "--sidd-noisy", str(d / "two.mat"),
                             "--output", str(d / "eo")), 2,
         "two.mat: ", setup=_two_var_mat, absent=("eo",)),
    # bench: flags checked before the (long) benchmark runs
    Case("bench_json_is_folder",
         lambda d: ["bench", "--json", str(d / "in"), "--restore-sizes", ""]
         + SMALL_ARGS, 2, "--json {d}/in: is a folder"),
    Case("bench_json_exists",
         lambda d: ["bench", "--json", str(d / "notes.txt")] + SMALL_ARGS, 2,
         "exists; pass --overwrite"),
    Case("bench_batch_zero",
         lambda d: ["bench", "--batch", "0", "--json", str(d / "b.json")]
         + SMALL_ARGS, 2, "must be positive", absent=("b.json",)),
    # train
    Case("train_batch_zero",
         lambda d: _train(d, "--config.data.batch_size=0"), 2,
         "config.data.batch_size=0: must be >= 1", absent=("wd",)),
    Case("train_patch_zero",
         lambda d: _train(d, "--config.data.patch_size=0"), 2,
         "config.data.patch_size=0: must be >= 1", absent=("wd",)),
    Case("train_unknown_field", lambda d: _train(d, "--config.data.bach=4"), 2,
         "--config.data.bach: unknown field", absent=("wd",)),
    Case("train_workdir_under_file",
         lambda d: ["train", "--workdir", str(d / "notes.txt/wd")] + RUNLOCAL,
         2, "--workdir {d}/notes.txt/wd: not writable"),
    Case("train_flist_missing_entry",
         lambda d: _train(d, "--config.data.syn.kind=flist",
                          f"--config.data.syn.path={d / 'l.flist'}",
                          "--config.data.patch_size=16"), 2,
         "1 data problem(s)", setup=_missing_flist_entry, absent=("wd",),
         one_line=False),
    # sim2real / demo: nothing created by a run that cannot start
    Case("sim2real_output_is_file",
         lambda d: ["sim2real", "--output", str(d / "notes.txt")], 2,
         "exists and is not a folder"),
    Case("sim2real_bad_seeds",
         lambda d: ["sim2real", "--seeds", "x", "--output", str(d / "s2r")], 2,
         "--seeds 'x'", absent=("s2r",)),
    Case("demo_zero_steps",
         lambda d: ["demo", "--steps", "0", "--output", str(d / "demo")], 2,
         "--steps and --warmup-steps must be >= 1", absent=("demo",)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case, world, capsys):
  if case.setup:
    case.setup(world)
  before = _snapshot(world)
  code = cli.main(case.argv(world))
  out, err = capsys.readouterr()
  message = case.message.format(d=world)
  if case.code == 2:
    lines = err.strip().splitlines()
    assert len(lines) == 1 or not case.one_line, err
    assert message in lines[0], err
    assert not out.strip(), out
  else:
    assert message in out + err, out + err
  assert code == case.code, out + err
  after = _snapshot(world)
  # Nothing the user had was changed or removed; only new outputs appear.
  assert {k: v for k, v in after.items() if k in before} == before
  for rel in case.absent:
    assert not os.path.lexists(world / rel), rel
  if code == 2:
    assert after == before, sorted(set(after) - set(before))
  # No half-written temporary files anywhere.
  assert not [k for k in after if k.endswith(".partial")]


def test_overwrite_replaces_outputs_but_never_inputs(world, capsys):
  _existing_output(world)
  assert cli.main(_restore(world, "--overwrite")) == 0
  capsys.readouterr()
  assert (world / "out/a.png").read_bytes() != b"precious"
  assert Image.open(world / "out/a.png").size == (30, 24)

  _existing_pth(world)
  assert cli.main(_export(world, "back.pth", "--overwrite")) == 0
  back = torch.load(world / "back.pth", weights_only=True)
  assert "RestorationNet.conv.weight" in back or len(back) > 10


def test_written_files_follow_the_umask(world, capsys):
  old = os.umask(0o027)
  try:
    assert cli.main(_restore(world)) == 0
    assert cli.main(_export(world)) == 0
  finally:
    os.umask(old)
  capsys.readouterr()
  for f in ("out/a.png", "out/b.png", "back.pth"):
    assert (world / f).stat().st_mode & 0o777 == 0o640, f


def test_flist_problem_listed_once(world, capsys):
  _missing_flist_entry(world)
  code = cli.main(_train(world, "--config.data.syn.kind=flist",
                         f"--config.data.syn.path={world / 'l.flist'}",
                         "--config.data.patch_size=16"))
  err = capsys.readouterr().err
  assert code == 2
  assert err.count("missing.png") == 1, err

