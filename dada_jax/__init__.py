"""dada-jax: Denoising as Adaptation (ICLR 2025) in JAX/Flax."""

from dada_jax import xla_cpu as _xla_cpu

__version__ = "0.1.0"

# Before any backend starts: XLA's Eigen convolutions on CPU (see xla_cpu).
_xla_cpu.prefer_eigen_convolutions()
