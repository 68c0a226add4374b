"""launch/check_imports.py: dada_jax is layered and acyclic, and the checker
would say so if it were not."""

import importlib.util
import io
import sys
import textwrap

import pytest

from conftest import REPO

_spec = importlib.util.spec_from_file_location(
    "check_imports", REPO / "launch" / "check_imports.py")
check_imports = importlib.util.module_from_spec(_spec)
sys.modules["check_imports"] = check_imports  # its dataclass looks it up
_spec.loader.exec_module(check_imports)

LAYERS = (("__init__", "base"), ("mid.*",), ("top",))


def _package(root, files):
  """Writes {relative path: source} as the package `pkg` under root."""
  pkg = root / "pkg"
  for rel, source in {"__init__.py": "", **files}.items():
    path = pkg / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(source))
  return pkg


def _check(pkg, layers=LAYERS):
  out = io.StringIO()
  return check_imports.check(pkg, layers, out=out), out.getvalue()


def test_dada_jax_passes():
  out = io.StringIO()
  code = check_imports.check(REPO / "dada_jax", verbose=True, out=out)
  assert code == 0, out.getvalue()
  assert "no cycles, no upward imports" in out.getvalue()
  assert ("layer 0:\n  __init__ -> xla_cpu (0)\n  errors\n  xla_cpu\n"
          in out.getvalue())


def test_layered_package_passes(tmp_path):
  pkg = _package(tmp_path, {
      "base.py": "import os\n",
      "mid/__init__.py": "from pkg.mid.a import f\n",
      "mid/a.py": "from pkg import base\nfrom pkg.mid import b\n",
      "mid/b.py": "import pkg.base\n",
      "top.py": """\
          from pkg import mid

          def run():
            from pkg.mid import a
          """,
  })
  code, out = _check(pkg)
  assert code == 0, out
  graph = check_imports.import_graph(pkg)
  assert [(i.target, i.local) for i in graph["top"]] == [
      ("mid", False), ("mid.a", True)]
  assert [i.target for i in graph["mid.a"]] == ["base", "mid.b"]
  assert [i.target for i in graph["mid.b"]] == ["base"]


@pytest.mark.parametrize("mid,cycle", [
    # Through a function-level import.
    ({"mid/__init__.py": "",
      "mid/a.py": "from pkg.mid.b import g\n",
      "mid/b.py": "def g():\n  from pkg.mid import a\n"},
     "pkg.mid.a -> pkg.mid.b -> pkg.mid.a"),
    # A submodule importing its own package's __init__.
    ({"mid/__init__.py": "from pkg.mid.a import f\nX = 1\n",
      "mid/a.py": "from pkg.mid import X\n\ndef f():\n  return X\n"},
     "pkg.mid -> pkg.mid.a -> pkg.mid"),
], ids=["function_level_import", "submodule_imports_its_package"])
def test_cycles_are_caught(tmp_path, mid, cycle):
  pkg = _package(tmp_path, {"base.py": "", "top.py": "", **mid})
  code, out = _check(pkg)
  assert code == 1
  assert f"cycle: {cycle}" in out


def test_upward_and_unplaced_modules_are_caught(tmp_path):
  pkg = _package(tmp_path, {
      "base.py": "def f():\n  from . import top\n",
      "mid/__init__.py": "",
      "mid/a.py": "import pkg.top as t\n",
      "top.py": "",
      "stray.py": "",
  })
  code, out = _check(pkg)
  assert code == 1
  assert ("pkg.base (layer 0) imports pkg.top (layer 2) upward, line 2 "
          "(in a function)") in out
  assert ("pkg.mid.a (layer 1) imports pkg.top (layer 2) upward, line 1 "
          "(at module level)") in out
  assert "pkg.stray: not in LAYERS" in out
  assert "cycle" not in out
