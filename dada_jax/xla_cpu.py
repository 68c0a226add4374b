"""XLA:CPU kernel choice, made before JAX starts a backend.

On CPUs, jaxlib 0.10's default lowers convolutions to YNNPACK fusions whose
weight gradient (a convolution with a 128x128 window over a handful of
features) runs ~3x slower than XLA's own Eigen convolution; on the 2-core
development machine the paper's DDA step (batch 3, 128²) took 30.2-30.5 s
with them and 20.0-21.2 s without, in interleaved runs (launch/BENCHMARKS.md). `dada_jax` therefore
turns YNNPACK fusions off by appending
`--xla_cpu_experimental_ynn_fusion_type=` to XLA_FLAGS when it is imported.
The flag only changes which CPU kernels run (results agree to fp32
round-off); GPU and TPU compilation ignore it.

It is left alone when XLA_FLAGS already names the flag, when
DADA_JAX_XLA_CPU_DEFAULTS=1 (keep XLA's defaults), or under a jaxlib this
project was not tested with, because XLA aborts on a flag it does not know.
"""

from __future__ import annotations

import importlib.metadata
import os
from typing import MutableMapping

YNN_FLAG = "--xla_cpu_experimental_ynn_fusion_type"
KEEP_DEFAULTS = "DADA_JAX_XLA_CPU_DEFAULTS"
# jaxlib releases known to have the flag (an unknown XLA flag is fatal).
TESTED_JAXLIB = ("0.10.",)


def _jaxlib_version() -> str:
  try:
    return importlib.metadata.version("jaxlib")
  except importlib.metadata.PackageNotFoundError:
    return ""


def prefer_eigen_convolutions(environ: MutableMapping[str, str] = os.environ,
                              jaxlib_version: str | None = None) -> bool:
  """Appends `YNN_FLAG=` to environ["XLA_FLAGS"]; returns whether it did.

  Has an effect only if called before JAX creates its CPU backend (XLA reads
  XLA_FLAGS once per process).
  """
  flags = environ.get("XLA_FLAGS", "")
  version = _jaxlib_version() if jaxlib_version is None else jaxlib_version
  if (YNN_FLAG in flags or environ.get(KEEP_DEFAULTS) == "1"
      or not version.startswith(TESTED_JAXLIB)):
    return False
  environ["XLA_FLAGS"] = f"{flags} {YNN_FLAG}=".strip()
  return True
