"""dada-jax: Denoising as Adaptation (ICLR 2025) in JAX/Flax."""

__version__ = "0.1.0"
