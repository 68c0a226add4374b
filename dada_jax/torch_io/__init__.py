"""The PyTorch reference's files: `.pth` reading without torch (`pth`), and
the mapping between its state-dict keys and our params (`convert`)."""
