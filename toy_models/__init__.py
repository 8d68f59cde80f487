"""Toy networks with known mechanisms; every module here registers its models in ``TOY_MODELS``."""
