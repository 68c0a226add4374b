"""Checks dada_jax's import graph: no cycles, no import of a higher layer.

  python launch/check_imports.py [--verbose] [--root PATH/TO/dada_jax]

Every module under the package is read with `ast` (nothing is imported or
run), and every import of the package's own modules is an edge, whether it
sits at module level or inside a function. `from a.b import c` is an edge to
the module a.b.c when there is one, else to a.b (a name it defines or
re-exports). A submodule is not taken to import its parent package: Python
runs the parent's `__init__` first, whatever the submodule imports.

It fails (exit 1), naming each offending import, on

  * a cycle: modules that import one another, directly or through others;
  * an upward import: a module importing one of a higher layer of LAYERS;
  * a module that LAYERS does not place.

Imports within one layer are allowed while they form no cycle.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import fnmatch
import pathlib
import sys

# Lowest first. Names are relative to the package; "x.*" is the package x
# (its __init__) and everything in it; "__init__" is the top package itself.
LAYERS = (
    # 0: no dada_jax imports (but __init__ sets xla_cpu's flags).
    ("__init__", "errors", "xla_cpu"),
    # 1: config and the networks it can name, file writing, the compile
    # cache, the diffusion schedule, the metrics, joining a multi-process job.
    ("config_lib", "backbones", "outputs", "compile_cache", "diffusion",
     "metrics", "multihost"),
    # 2: image and SIDD .mat files.
    ("image_io", "sidd"),
    # 3: the networks, the input pipelines and the PyTorch files.
    ("models.*", "data.*", "torch_io.*"),
    # 4: what a train step or restoration is built from.
    ("objective", "sharding", "predict", "checkpoint", "faults",
     "metric_writer"),
    # 5: the train step; loading weights in any format.
    ("train_step", "weights"),
    # 6: the evaluate and restore commands.
    ("evaluate", "restore"),
    # 7: the training loop.
    ("train",),
    # 8: benchmarks built on training and evaluation.
    ("sim2real.*", "bench.*"),
    # 9: the command line.
    ("cli",),
)


@dataclasses.dataclass(frozen=True)
class Import:
  target: str   # the imported module, relative to the package
  line: int
  local: bool   # inside a function or class, not at module level


def module_names(root: pathlib.Path) -> dict[str, pathlib.Path]:
  """{module name relative to the package: its file}.

  The top package's `__init__.py` is "__init__"; a subpackage's is the
  subpackage's name ("data"); other files are dotted ("data.sources").
  """
  names = {}
  for path in sorted(root.rglob("*.py")):
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__" and len(parts) > 1:
      parts.pop()
    names[".".join(parts)] = path
  return names


def _resolve(dotted: str, names) -> str | None:
  """The longest prefix of `dotted` (relative) that is a module, if any."""
  parts = dotted.split(".") if dotted else []
  while parts:
    if ".".join(parts) in names:
      return ".".join(parts)
    parts.pop()
  return "__init__" if "__init__" in names else None


def _package_of(name: str, names) -> list[str]:
  """The package a module is in (itself, for a package's __init__)."""
  if name == "__init__":
    return []
  is_package = names[name].name == "__init__.py"
  return name.split(".") if is_package else name.split(".")[:-1]


def imports_of(name: str, names, package: str) -> list[Import]:
  """The package-internal imports of module `name`, in source order."""
  tree = ast.parse(names[name].read_text(encoding="utf-8"),
                   filename=str(names[name]))
  local_nodes = set()
  for node in ast.walk(tree):
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef,
                         ast.ClassDef, ast.Lambda)):
      local_nodes.update(id(n) for n in ast.walk(node) if n is not node)

  def relative(absolute: str) -> str | None:
    if absolute == package:
      return ""
    if absolute.startswith(package + "."):
      return absolute[len(package) + 1:]
    return None

  found = []
  for node in ast.walk(tree):
    targets = []
    if isinstance(node, ast.Import):
      for alias in node.names:
        rel = relative(alias.name)
        if rel is not None:
          targets.append(_resolve(rel, names))
    elif isinstance(node, ast.ImportFrom):
      if node.level:
        base = _package_of(name, names)
        base = base[:len(base) - (node.level - 1)]
        rel = ".".join(base + ([node.module] if node.module else []))
      else:
        rel = relative(node.module or "")
      if rel is None:
        continue
      for alias in node.names:
        child = f"{rel}.{alias.name}" if rel else alias.name
        targets.append(child if child in names else _resolve(rel, names))
    for target in targets:
      if target is not None and target != name:
        found.append(Import(target, node.lineno, id(node) in local_nodes))
  return sorted(found, key=lambda i: (i.line, i.target))


def import_graph(root: pathlib.Path) -> dict[str, list[Import]]:
  """{module: its imports of other modules of the package at `root`}."""
  names = module_names(root)
  return {name: imports_of(name, names, root.name) for name in names}


def layer_of(name: str, layers) -> int | None:
  """The index of the first layer with a pattern matching `name`."""
  for index, patterns in enumerate(layers):
    for pattern in patterns:
      if pattern.endswith(".*") and name == pattern[:-2]:
        return index
      if fnmatch.fnmatchcase(name, pattern):
        return index
  return None


def find_cycles(graph: dict[str, list[Import]]) -> list[list[str]]:
  """Shortest cycles through each module that is on one, first module
  repeated at the end; each cycle once, sorted."""
  edges = {m: sorted({i.target for i in imps if i.target in graph})
           for m, imps in graph.items()}
  index, low, stack, on_stack, groups = {}, {}, [], set(), []

  def connect(start):
    # Tarjan's algorithm, iterative so deep chains cannot hit the recursion
    # limit.
    work = [(start, iter(edges[start]))]
    index[start] = low[start] = len(index)
    stack.append(start)
    on_stack.add(start)
    while work:
      node, children = work[-1]
      child = next(children, None)
      if child is None:
        work.pop()
        if work:
          parent = work[-1][0]
          low[parent] = min(low[parent], low[node])
        if low[node] == index[node]:
          group = set()
          while True:
            member = stack.pop()
            on_stack.discard(member)
            group.add(member)
            if member == node:
              break
          if len(group) > 1:
            groups.append(group)
      elif child not in index:
        index[child] = low[child] = len(index)
        stack.append(child)
        on_stack.add(child)
        work.append((child, iter(edges[child])))
      elif child in on_stack:
        low[node] = min(low[node], index[child])

  for module in sorted(edges):
    if module not in index:
      connect(module)
  cycles = {}
  for group in groups:
    for start in sorted(group):
      cycle = _cycle_through(start, group, edges)
      # The same cycle seen from another of its modules: keep the first.
      first = cycle.index(min(cycle[:-1]))
      key = tuple(cycle[first:-1] + cycle[:first])
      cycles.setdefault(key, cycle)
  return sorted(cycles.values())


def _cycle_through(start: str, group: set[str], edges) -> list[str]:
  """A shortest cycle from `start` back to itself within `group`."""
  previous, frontier = {start: None}, [start]
  while frontier:
    following = []
    for node in frontier:
      for child in edges[node]:
        if child == start:
          path = [node]
          while previous[path[-1]] is not None:
            path.append(previous[path[-1]])
          return [start] + path[::-1][1:] + [start]
        if child in group and child not in previous:
          previous[child] = node
          following.append(child)
    frontier = following
  raise AssertionError(f"no cycle through {start}")


def problems(graph: dict[str, list[Import]], layers, package: str) -> list[str]:
  """One line per cycle, upward import, and module missing from `layers`."""
  full = lambda name: package if name == "__init__" else f"{package}.{name}"
  out = []
  for module in sorted(graph):
    if layer_of(module, layers) is None:
      out.append(f"{full(module)}: not in LAYERS; place it in a layer")
  for module, imps in sorted(graph.items()):
    mine = layer_of(module, layers)
    for imp in imps:
      theirs = layer_of(imp.target, layers)
      if mine is not None and theirs is not None and theirs > mine:
        where = "in a function" if imp.local else "at module level"
        out.append(f"{full(module)} (layer {mine}) imports {full(imp.target)}"
                   f" (layer {theirs}) upward, line {imp.line} ({where})")
  for cycle in find_cycles(graph):
    out.append("cycle: " + " -> ".join(full(m) for m in cycle))
  return out


def describe(graph: dict[str, list[Import]], layers, package: str) -> str:
  """The layers, each module with the layer of everything it imports."""
  lines = []
  by_layer = {}
  for module in graph:
    by_layer.setdefault(layer_of(module, layers), []).append(module)
  for layer in sorted(by_layer, key=lambda x: (x is None, x)):
    lines.append(f"layer {layer}:" if layer is not None else "unplaced:")
    for module in sorted(by_layer[layer]):
      targets = {}
      for imp in graph[module]:
        targets.setdefault(imp.target, imp.local)
        targets[imp.target] = targets[imp.target] and imp.local
      shown = ", ".join(
          f"{t} ({layer_of(t, layers)}{', in a function' if local else ''})"
          for t, local in sorted(targets.items()))
      lines.append(f"  {module}" + (f" -> {shown}" if shown else ""))
  return "\n".join(lines)


def check(root: pathlib.Path, layers=LAYERS, *, verbose: bool = False,
          out=sys.stdout) -> int:
  """Prints the result for the package at `root`; returns the exit code."""
  graph = import_graph(root)
  found = problems(graph, layers, root.name)
  if verbose:
    print(describe(graph, layers, root.name), file=out)
  edges = sum(len({i.target for i in imps}) for imps in graph.values())
  if found:
    print(f"check_imports: {len(found)} problem(s) in {root.name}:", file=out)
    for line in found:
      print(f"  {line}", file=out)
    return 1
  print(f"check_imports: {len(graph)} modules, {edges} imports between "
        f"them: no cycles, no upward imports", file=out)
  return 0


def main(argv=None) -> int:
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--root", type=pathlib.Path,
                      default=pathlib.Path(__file__).resolve().parent.parent
                      / "dada_jax", help="the package folder (default: "
                      "this repository's dada_jax)")
  parser.add_argument("--verbose", action="store_true",
                      help="also print every module's imports, by layer")
  args = parser.parse_args(argv)
  return check(args.root, verbose=args.verbose)


if __name__ == "__main__":
  sys.exit(main())
