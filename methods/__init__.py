"""Method adapters; every module here registers its methods in ``METHODS``."""
