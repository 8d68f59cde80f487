"""Fault-injection adapters: methods and toy models that fail on purpose, loaded as a ``--plugin``."""
