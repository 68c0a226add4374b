"""`dada-jax bench`: our train step and restoration timed (`timing`), and the
PyTorch reference's step timed the same way (`reference`)."""
