"""pdbench: a ground-truth benchmark for parameter-decomposition methods."""

__version__ = "0.1.0"
