"""The sim2real benchmark: the protocol (`benchmark`), the gradient-alignment
probe (`alignment`), and its tables and figures (`report`, `plot`)."""
