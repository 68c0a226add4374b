"""Fuzzing the readers of untrusted files: .pth, .npz and images.

Each reader either returns what a trusted reference returns (torch.load,
np.load) or raises its own one-line error starting with the file's path;
never another exception, never a crash. Hypothesis runs derandomized with
bounded examples, so the file is fast and every run sees the same inputs.
"""

import io
import struct
import subprocess
import sys
import textwrap
import warnings
import zipfile
import zlib

from hypothesis import currently_in_test_context
from hypothesis import event
from hypothesis import given
from hypothesis import HealthCheck
from hypothesis import settings
from hypothesis import strategies as st
import numpy as np
import pytest
import scipy.io
from PIL import Image

from conftest import REPO
from dada_jax.torch_io import convert
from dada_jax import image_io
from dada_jax.torch_io import pth
from dada_jax import sidd
from dada_jax import weights
import hostile_pth
from hostile_pth import Global
from hostile_pth import Reduce

try:
  import torch  # pylint: disable=g-import-not-at-top
except ImportError:
  torch = None

needs_torch = pytest.mark.skipif(torch is None, reason="needs torch")
FUZZ = dict(deadline=None, derandomize=True, database=None,
            suppress_health_check=list(HealthCheck))


@pytest.fixture(scope="module")
def work(tmp_path_factory):
  return tmp_path_factory.mktemp("fuzz")


# Byte mutations: (kind, position, value); positions wrap around the data and
# favour the first 64 bytes, where the headers are.
MUTATIONS = st.lists(
    st.tuples(st.sampled_from(["set", "flip", "insert", "delete", "truncate"]),
              st.one_of(st.integers(0, 63), st.integers(0, 1 << 20)),
              st.integers(0, 255)),
    min_size=1, max_size=4)


def mutate(data: bytes, mutations) -> bytes:
  b = bytearray(data)
  for kind, pos, val in mutations:
    if not b:
      break
    i = pos % len(b)
    if kind == "set":
      b[i] = val
    elif kind == "flip":
      b[i] ^= 1 << (val % 8)
    elif kind == "insert":
      b[i:i] = bytes([val]) * (1 + val % 4)
    elif kind == "delete":
      del b[i:i + 1 + val % 8]
    else:
      del b[i:]
  return bytes(b)


def same_array(ours: np.ndarray, ref: np.ndarray, key: str) -> None:
  assert isinstance(ours, np.ndarray), key
  assert (ours.dtype, ours.shape) == (ref.dtype, ref.shape), key
  assert (np.ascontiguousarray(ours).tobytes()
          == np.ascontiguousarray(ref).tobytes()), key


def one_line_error(e: Exception, path) -> None:
  msg = str(e)
  assert msg.startswith(f"{path}:"), msg
  assert "\n" not in msg and "\r" not in msg, msg
  tally(" ".join(msg[len(str(path)) + 2:].split()[:4]))


def tally(outcome: str) -> None:
  """Counts outcomes for --hypothesis-show-statistics (inside @given only)."""
  if currently_in_test_context():
    event(outcome)


# .pth ----------------------------------------------------------------------


def torch_arrays(path):
  """{key: array} as torch.load(weights_only=True) gives; None if it fails."""
  try:
    with warnings.catch_warnings():
      warnings.simplefilter("ignore")
      obj = torch.load(path, weights_only=True, map_location="cpu")
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
      obj = obj["state_dict"]
    return {k: v.detach().numpy() for k, v in obj.items()}
  except Exception:  # pylint: disable=broad-exception-caught
    return None


def check_pth(path) -> dict | None:
  """Reads `path`: torch's arrays when torch reads it too, or a PthError."""
  try:
    ours = pth.read_state_dict(path)
  except pth.PthError as e:
    one_line_error(e, path)
    return None
  ref = torch_arrays(path)
  tally("read; torch reads it too" if ref is not None else "read; torch fails")
  if ref is not None:
    assert list(ours) == list(ref)
    for k, v in ref.items():
      same_array(ours[k], v, k)
  return ours


@pytest.fixture(scope="module")
def valid_pth(work):
  """A small state dict: several dtypes, views of one storage, scalars."""
  if torch is None:
    pytest.skip("needs torch")
  base = torch.arange(24, dtype=torch.float32).reshape(4, 6) / 7
  state = {
      "RestorationNet.conv.weight": base,
      "RestorationNet.conv.weight_t": base.t(),  # shares base's storage
      "RestorationNet.conv.slice": base[1:, 2:],  # offset into it
      "RestorationNet.step": torch.tensor(7, dtype=torch.int64),
      "RestorationNet.scale": torch.tensor(0.5, dtype=torch.float64),
      "RestorationNet.half": torch.linspace(-1, 1, 5).half(),
      "RestorationNet.mask": torch.tensor([True, False, True]),
      "RestorationNet.i16": torch.arange(-3, 3, dtype=torch.int16),
      "RestorationNet.u8": torch.arange(6, dtype=torch.uint8).reshape(
          2, 3)[:, ::2],
  }
  path = work / "valid.pth"
  torch.save(state, path)
  return path


@needs_torch
def test_valid_pth_matches_torch(valid_pth):
  ours = check_pth(valid_pth)
  assert ours is not None and len(ours) == 9
  assert ours["RestorationNet.step"].shape == ()


@needs_torch
@settings(max_examples=200, **FUZZ)
@given(mutations=MUTATIONS)
def test_pth_pickle_mutations(valid_pth, work, mutations):
  path = work / "pickle_mutated.pth"
  hostile_pth.rewrite(valid_pth, path,
                      mutate_pickle=lambda b: mutate(b, mutations))
  check_pth(path)


MEMBER_OPS = st.lists(
    st.tuples(st.sampled_from(["drop", "rename", "truncate", "extend",
                               "byteorder", "swap"]),
              st.integers(0, 100), st.integers(0, 255)),
    min_size=1, max_size=3)
COMPRESSIONS = st.sampled_from([zipfile.ZIP_STORED, zipfile.ZIP_STORED,
                                zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2,
                                zipfile.ZIP_LZMA])


def mutate_members(members: dict[str, bytes], ops) -> dict[str, bytes]:
  members = dict(members)
  for op, i, val in ops:
    names = list(members)
    if not names:
      break
    name = names[i % len(names)]
    if op == "drop":
      del members[name]
    elif op == "rename":
      members[name.rsplit("/", 1)[0] + f"/{val}"] = members.pop(name)
    elif op == "truncate":
      members[name] = members[name][:val % (len(members[name]) + 1)]
    elif op == "extend":
      members[name] += bytes([val]) * (1 + val % 9)
    elif op == "byteorder":
      members[hostile_pth.PREFIX + "byteorder"] = [
          b"big", b"little", b"middle", b"", b"\xff"][val % 5]
    else:  # Two members trade contents.
      other = names[val % len(names)]
      members[name], members[other] = members[other], members[name]
  return members


@needs_torch
@settings(max_examples=120, **FUZZ)
@given(ops=MEMBER_OPS, compression=COMPRESSIONS)
def test_pth_member_mutations(valid_pth, work, ops, compression):
  path = work / "members_mutated.pth"
  hostile_pth.rewrite(valid_pth, path,
                      mutate_members=lambda m: mutate_members(m, ops),
                      compression=compression)
  check_pth(path)


@needs_torch
@settings(max_examples=120, **FUZZ)
@given(mutations=MUTATIONS)
def test_pth_file_byte_mutations(valid_pth, work, mutations):
  path = work / "bytes_mutated.pth"
  path.write_bytes(mutate(valid_pth.read_bytes(), mutations))
  check_pth(path)


# Crafted records: what torch.save never writes, re-pickled from scratch.
# Mostly consistent (so that many files are read and compared with torch),
# with every field sometimes out of range or of the wrong type.
ITEMSIZES = {"FloatStorage": 4, "DoubleStorage": 8, "HalfStorage": 2,
             "LongStorage": 8, "IntStorage": 4, "ShortStorage": 2,
             "CharStorage": 1, "ByteStorage": 1, "BoolStorage": 1}
UNREADABLE_TYPES = ["BFloat16Storage", "ComplexFloatStorage", "NotAStorage"]
# Small values, plus ones that overflow int32/int64/the element limit. No
# middling sizes: an in-bounds stride-0 view of 10**8 elements is valid and
# would only test how fast memory is filled.
INTS = st.one_of(
    st.integers(-3, 48),
    st.sampled_from([2**31 - 1, 2**31, 2**32 + 1, 2**62, 2**63, 2**64 + 3,
                     -2**63]))
ODD = st.sampled_from([None, True, 1.5, "3", [1], (2,)])


def rarely(draw, usual, odd, one_in):
  """`usual` drawn, but one time in `one_in` (never if 0) `odd` instead."""
  return draw(odd if one_in and draw(st.integers(1, one_in)) == 1 else usual)


@st.composite
def storages(draw, odd):
  """({key: bytes}, {key: (type name, numel)}) for storages "0" and "1"."""
  data, specs = {}, {}
  for key in ("0", "1"):
    type_name = draw(st.sampled_from(sorted(ITEMSIZES)))
    numel = draw(st.integers(0, 40))
    nbytes = numel * ITEMSIZES[type_name]
    nbytes = rarely(draw, st.just(nbytes), st.integers(0, nbytes + 9), odd)
    data[key] = draw(st.binary(min_size=nbytes, max_size=nbytes))
    specs[key] = (type_name, numel)
  return data, specs


@st.composite
def tensor_records(draw, specs, odd):
  key = rarely(draw, st.sampled_from(["0", "1"]),
               st.sampled_from(["missing", 0, None]), odd)
  type_name, numel = specs.get(key, ("FloatStorage", 4))
  type_name = rarely(draw, st.just(type_name),
                     st.sampled_from(UNREADABLE_TYPES + sorted(ITEMSIZES)),
                     odd)
  numel = rarely(draw, st.just(numel), st.one_of(INTS, ODD), odd)
  size = tuple(draw(st.lists(st.integers(0, 5), max_size=4)))
  contiguous = tuple(int(np.prod(size[i + 1:])) for i in range(len(size)))
  stride = rarely(draw, st.just(contiguous), st.lists(
      st.integers(0, 8), min_size=len(size), max_size=len(size)).map(tuple),
                  one_in=2)
  hi = numel if isinstance(numel, int) else 4
  offset = rarely(draw, st.integers(0, max(0, min(hi, 48))),
                  st.one_of(INTS, ODD), odd)
  dims = st.one_of(st.lists(INTS, max_size=4).map(tuple),
                   st.lists(st.one_of(INTS, ODD), max_size=3).map(tuple),
                   st.lists(INTS, max_size=3), ODD)
  size = rarely(draw, st.just(size), dims, odd)
  stride = rarely(draw, st.just(stride), dims, odd)
  record = hostile_pth.tensor_record(key, numel, offset, size, stride,
                                     type_name)
  if draw(st.integers(0, 4)) == 0:
    record = Reduce(Global("torch._utils", "_rebuild_parameter"),
                    (record, False, Reduce(Global("collections",
                                                  "OrderedDict"), ())))
  return record


@st.composite
def crafted_files(draw):
  """(state, storages, byteorder) for hostile_pth.write_pth."""
  # One file in three has odd fields, each field one time in four.
  odd = draw(st.sampled_from([0, 0, 4]))
  data, specs = draw(storages(odd))
  keys = ["RestorationNet.conv.weight", "RestorationNet.conv.bias",
          "RestorationNet.last.weight"]
  state = {}
  for name in keys[:draw(st.integers(1, 3))]:
    state[name] = rarely(draw, tensor_records(specs, odd), st.one_of(
        st.sampled_from([3, "x", None]),
        tensor_records(specs, odd).map(lambda r: {"nested": r})), odd)
  if draw(st.integers(0, 9)) == 0:
    state[7] = draw(tensor_records(specs, odd))
  if draw(st.integers(0, 9)) == 0:
    state = {"state_dict": state, "epoch": 3}
  byteorder = draw(st.sampled_from(["little", "little", "big", None]))
  return state, data, byteorder


@needs_torch
@settings(max_examples=250, **FUZZ)
@given(case=crafted_files())
def test_pth_crafted_records(work, case):
  path = work / "crafted.pth"
  hostile_pth.write_pth(path, *case)
  check_pth(path)


@pytest.mark.parametrize("write,message", [
    (hostile_pth.write_numel_overflow,
     "tensor 'RestorationNet.conv.weight' claims 9437184 elements at offset 0 "
     "(size (1024, 1024, 3, 3), stride (9216, 9, 3, 1)) reaching element "
     "9437183, but its storage '0' holds 432"),
    (hostile_pth.write_offset_past_end,
     "tensor 'RestorationNet.conv.bias' claims 16 elements at offset 12 "
     "(size (16,), stride (1,)) reaching element 27, but its storage '1' "
     "holds 16"),
])
def test_hostile_files_name_the_elements(tmp_path, write, message):
  path = tmp_path / "hostile.pth"
  write(path)
  with pytest.raises(pth.PthError) as e:
    pth.read_state_dict(path)
  assert str(e.value) == f"{path}: {message}"


def test_crafted_files_never_crash_a_fresh_interpreter(tmp_path):
  """A segfault would take pytest down, so a subprocess reads the corpus."""
  hostile_pth.write_numel_overflow(tmp_path / "numel.pth")
  hostile_pth.write_offset_past_end(tmp_path / "offset.pth")
  count = [0]

  @settings(max_examples=150, **FUZZ)
  @given(case=crafted_files())
  def collect(case):
    count[0] += 1
    hostile_pth.write_pth(tmp_path / f"c{count[0]}.pth", *case)

  collect()
  script = textwrap.dedent("""
      import pathlib, sys
      from dada_jax.torch_io import pth
      read = refused = 0
      for p in sorted(pathlib.Path(sys.argv[1]).glob("*.pth")):
        try:
          pth.read_state_dict(p)
          read += 1
        except pth.PthError as e:
          assert str(e).startswith(f"{p}:") and "\\n" not in str(e), str(e)
          refused += 1
      print(read, refused)
  """)
  proc = subprocess.run([sys.executable, "-c", script, str(tmp_path)],
                        capture_output=True, text=True, cwd=REPO, timeout=120,
                        check=False)
  assert proc.returncode == 0, proc.stderr[-2000:]
  read, refused = map(int, proc.stdout.split())
  assert read + refused == count[0] + 2 and refused >= 2


@needs_torch
def test_big_endian_storages_are_swapped(tmp_path):
  values = np.array([1.5, -2.0, 3.25, 1e-3], np.float32)
  path = tmp_path / "big.pth"
  hostile_pth.write_pth(
      path, {"w": hostile_pth.tensor_record("0", 4, 0, (2, 2), (1, 2))},
      {"0": values.astype(">f4").tobytes()}, byteorder="big")
  got = check_pth(path)["w"]
  np.testing.assert_array_equal(got, values.reshape(2, 2).T)
  assert got.dtype == np.float32 and got.dtype.isnative


@pytest.mark.parametrize("state,storages,reason", [
    ({"w": hostile_pth.tensor_record("7", 4, 0, (4,), (1,))},
     {"0": bytes(16)}, "archive member 'archive/data/7' is missing"),
    ({3: hostile_pth.tensor_record("0", 4, 0, (4,), (1,))},
     {"0": bytes(16)}, "a key is an int, not a string"),
    ({"w": {"inner": hostile_pth.tensor_record("0", 4, 0, (4,), (1,))}},
     {"0": bytes(16)}, "key 'w' holds a nested dict, not a tensor"),
    ({"w": hostile_pth.tensor_record("0", 4, 0, (4,), (1,))},
     {"0": bytes(15)}, "15 bytes, not a whole number of 4-byte FloatStorage"),
    ({"w": hostile_pth.tensor_record("0", 4, 0, (2, -2), (1, 1))},
     {"0": bytes(16)}, "negative size or stride"),
    ({"w": hostile_pth.tensor_record("0", 4, 4, (), ())},
     {"0": bytes(16)}, "claims 1 elements at offset 4"),
    # One element seen as 2**31 through stride 0: over the memory budget.
    ({"w": hostile_pth.tensor_record("0", 1, 0, (2**31,), (0,))},
     {"0": bytes(4)}, "over the reader's budget"),
])
def test_bad_records_are_named(tmp_path, state, storages, reason):
  path = tmp_path / "bad.pth"
  hostile_pth.write_pth(path, state, storages)
  with pytest.raises(pth.PthError, match=reason) as e:
    pth.read_state_dict(path)
  one_line_error(e.value, path)


def test_unknown_byteorder_is_refused(tmp_path):
  path = tmp_path / "odd.pth"
  hostile_pth.write_pth(
      path, {"w": hostile_pth.tensor_record("0", 1, 0, (), ())},
      {"0": bytes(4)}, byteorder="middle")
  with pytest.raises(pth.PthError, match="unknown byteorder record"):
    pth.read_state_dict(path)


# .npz ----------------------------------------------------------------------


@pytest.fixture(scope="module")
def valid_npz(work):
  """(stored, compressed) .npz bytes: several dtypes, orders, shapes."""
  arrays = {
      "conv.weight": np.linspace(-1, 1, 24, dtype=np.float32).reshape(2, 3, 4),
      "conv.fortran": np.asfortranarray(np.arange(6.0).reshape(2, 3)),
      "step": np.int64(7),
      "empty": np.zeros((0, 3), np.int16),
      "big_endian": np.arange(4, dtype=">i4"),
      "mask": np.array([True, False]),
      "half": np.array([0.5, -2], np.float16),
  }
  out = []
  for save in (np.savez, np.savez_compressed):
    buf = io.BytesIO()
    save(buf, **arrays)
    out.append(buf.getvalue())
  return out


def check_npz(path) -> None:
  try:
    ours = weights.read_state_dict(str(path))
  except convert.CheckpointMismatch as e:
    one_line_error(e, path)
    assert "allow_pickle" not in str(e)
    return
  with np.load(path, allow_pickle=False) as data:
    ref = {k: data[k] for k in data.files}
  tally("read")
  assert list(ours) == list(ref)
  for k, v in ref.items():
    same_array(ours[k], v, k)


@settings(max_examples=60, **FUZZ)
@given(data=st.binary(max_size=300), zip_magic=st.booleans())
def test_npz_random_bytes(work, data, zip_magic):
  path = work / "random.npz"
  path.write_bytes((b"PK\x03\x04" if zip_magic else b"") + data)
  check_npz(path)


@settings(max_examples=200, **FUZZ)
@given(which=st.integers(0, 1), mutations=MUTATIONS,
       in_member=st.booleans())
def test_npz_mutations(work, valid_npz, which, mutations, in_member):
  path = work / "mutated.npz"
  data = valid_npz[which]
  if in_member:  # Mutate one array's .npy bytes, keep the zip consistent.
    with zipfile.ZipFile(io.BytesIO(data)) as z:
      members = {n: z.read(n) for n in z.namelist()}
    name = list(members)[mutations[0][1] % len(members)]
    members[name] = mutate(members[name], mutations)
    hostile_pth.write_members(path, members, zipfile.ZIP_DEFLATED)
  else:
    path.write_bytes(mutate(data, mutations))
  check_npz(path)


def test_npz_refusals_are_one_line(tmp_path):
  cases = {
      "random.npz": np.random.default_rng(0).bytes(512),
      "text.npz": b"not numpy at all\n",
  }
  for name, data in cases.items():
    (tmp_path / name).write_bytes(data)
  np.savez(tmp_path / "objects.npz", o=np.array([1, "x"], dtype=object),
           allow_pickle=True)
  np.savez(tmp_path / "strings.npz", s=np.array(["abc"]))
  for name, reason in [("random.npz", "not a zip archive"),
                       ("text.npz", "not a zip archive"),
                       ("objects.npz", "o.npy: object is not a numeric"),
                       ("strings.npz", "s.npy: <U3 is not a numeric")]:
    path = tmp_path / name
    with pytest.raises(convert.CheckpointMismatch) as e:
      weights.read_state_dict(str(path))
    assert str(e.value) == (
        f"{path}: not a readable .npz state dict ({reason}"
        + (")" if "zip" in reason else " dtype)"))


# Images --------------------------------------------------------------------


def png16(pixels: np.ndarray) -> bytes:
  """A PNG with 16 bits per sample of uint16 [H, W, C] (C = 1, 3 or 4)."""
  h, w, c = pixels.shape
  color_type = {1: 0, 3: 2, 4: 6}[c]
  rows = b"".join(b"\x00" + pixels[y].astype(">u2").tobytes()
                  for y in range(h))

  def chunk(kind, data):
    return (struct.pack(">I", len(data)) + kind + data
            + struct.pack(">I", zlib.crc32(kind + data)))

  return (b"\x89PNG\r\n\x1a\n"
          + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, color_type, 0,
                                       0, 0))
          + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))


def frames(n=3, size=(8, 6)):
  return [Image.new("RGB", size, (40 * i, 255 - 40 * i, 7)) for i in range(n)]


@pytest.fixture(scope="module")
def image_bytes():
  rng = np.random.default_rng(0)
  rgb = Image.fromarray(rng.integers(0, 256, (6, 8, 3), dtype=np.uint8))
  out = {}

  def save(name, img, fmt, **kw):
    buf = io.BytesIO()
    img.save(buf, fmt, **kw)
    out[name] = buf.getvalue()

  save("png", rgb, "PNG")
  save("png_palette", rgb.quantize(8), "PNG", transparency=0)
  save("png_gray", rgb.convert("L"), "PNG")
  save("apng", frames()[0], "PNG", save_all=True, append_images=frames()[1:])
  exif = Image.Exif()
  exif[0x0112] = 6
  save("jpeg", rgb, "JPEG", exif=exif)
  save("gif", frames()[0], "GIF", save_all=True, append_images=frames()[1:])
  save("tiff", frames()[0], "TIFF", save_all=True,
       append_images=frames()[1:], compression="tiff_lzw")
  save("bmp", rgb, "BMP")
  save("webp", rgb, "WEBP", lossless=True)
  save("webp_animated", frames()[0], "WEBP", save_all=True,
       append_images=frames()[1:])
  out["png16"] = png16(rng.integers(0, 65536, (3, 5, 3)).astype(np.uint16))
  return out


@settings(max_examples=400, **FUZZ)
@given(data=st.data(), mutations=MUTATIONS, warnings_raise=st.booleans())
def test_image_mutations(work, image_bytes, data, mutations, warnings_raise):
  name = data.draw(st.sampled_from(sorted(image_bytes)))
  path = work / f"mutated.{name.split('_')[0]}"
  path.write_bytes(mutate(image_bytes[name], mutations))
  try:
    # Pillow warns about corrupt EXIF, decompression bombs...; where a
    # program turns warnings into errors they must still end as one error.
    with warnings.catch_warnings():
      warnings.simplefilter("error" if warnings_raise else "ignore")
      got = image_io.load_image(path)
  except image_io.ImageReadError as e:
    one_line_error(e, path)
    return
  tally("read")
  assert got.pixels.dtype == np.uint8 and got.pixels.ndim == 3
  assert got.pixels.shape[2] == 3 and got.pixels.size > 0


def test_all_image_bases_load(work, image_bytes):
  for name, data in image_bytes.items():
    path = work / f"base.{name.split('_')[0]}"
    path.write_bytes(data)
    assert image_io.load_image(path).pixels.shape[2] == 3, name


@pytest.mark.parametrize("fmt", ["GIF", "PNG", "TIFF", "WEBP"])
def test_animated_images_use_the_first_frame(tmp_path, fmt):
  path = tmp_path / f"anim.{fmt.lower()}"
  images = frames(n=4)
  images[0].save(path, fmt, save_all=True, append_images=images[1:],
                 **({"lossless": True} if fmt == "WEBP" else {}))
  got = image_io.load_image(path)
  assert got.note.split("; ")[0] == "first of 4 frames used"
  np.testing.assert_allclose(got.pixels, np.asarray(images[0]), atol=2)


def test_16bit_rgb_png_is_noted_and_scaled(tmp_path):
  """Pillow keeps the high byte (v >> 8) of 16-bit RGB(A) samples: verified
  exactly here; that is round(v / 257) give or take 1."""
  v = np.array([[[0, 255, 256], [383, 511, 32767]],
                [[32768, 33023, 65279], [65280, 65534, 65535]]], np.uint16)
  (tmp_path / "rgb16.png").write_bytes(png16(v))
  got = image_io.load_image(tmp_path / "rgb16.png")
  assert got.note == "16-bit -> 8-bit"
  np.testing.assert_array_equal(got.pixels, (v >> 8).astype(np.uint8))
  assert np.abs(got.pixels - np.round(v / 257.0)).max() <= 1
  alpha = np.dstack([v, np.full(v.shape[:2], 65535, np.uint16)])
  (tmp_path / "rgba16.png").write_bytes(png16(alpha))
  got = image_io.load_image(tmp_path / "rgba16.png")
  assert got.note == "16-bit -> 8-bit; alpha dropped"
  np.testing.assert_array_equal(got.pixels, (v >> 8).astype(np.uint8))
  # 8-bit files get no such note.
  Image.fromarray((v >> 8).astype(np.uint8)).save(tmp_path / "rgb8.png")
  assert image_io.load_image(tmp_path / "rgb8.png").note is None


# SIDD ----------------------------------------------------------------------


def test_sidd_several_variables_says_what_to_do(tmp_path):
  blocks = np.zeros((1, 2, 4, 4, 3), np.uint8)
  path = tmp_path / "two.mat"
  scipy.io.savemat(path, {"noisy": blocks, "extra": blocks})
  with pytest.raises(sidd.SiddError) as e:
    sidd.read_blocks(path)
  msg = str(e.value)
  assert msg.startswith(f"{path}: holds 2 variables [")
  assert "'noisy'" in msg and "'extra'" in msg
  assert "save the blocks alone in their own .mat file" in msg
  assert all(k in msg for k in sidd.KNOWN_KEYS)
  assert "pass key=" not in msg.split("(Python API")[0]  # not a CLI flag
  scipy.io.savemat(path, {})
  with pytest.raises(sidd.SiddError, match="holds no variables"):
    sidd.read_blocks(path)
