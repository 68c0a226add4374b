"""The persistent XLA compilation cache every `dada-jax` command uses.

A train step takes 40-200 s to compile on a CPU and ~100 s on a GPU; the
cache makes a restart, a resume or a second seed of the same program load it
in seconds. `dada-jax bench` leaves it off (it reports compile time), and
`--no-compile-cache` turns it off for any command.
"""

from __future__ import annotations

import os

import jax


def default_dir() -> str:
  """$XDG_CACHE_HOME/dada_jax/xla, or ~/.cache/dada_jax/xla."""
  root = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")
  return os.path.join(root, "dada_jax", "xla")


def enable(directory: str | None = None) -> str | None:
  """Turns the cache on in `directory` (default_dir() if None) unless JAX
  already has one configured (JAX_COMPILATION_CACHE_DIR or jax.config);
  returns the directory in use."""
  if jax.config.jax_compilation_cache_dir is None:
    jax.config.update("jax_compilation_cache_dir", directory or default_dir())
  return jax.config.jax_compilation_cache_dir
