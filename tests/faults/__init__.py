"""Fault-injection adapters: methods and toy models that fail on purpose, loaded as a ``--plugin``.

``isolated_registries()`` lets a test load them into this process and removes every name registered
meanwhile afterwards, so other tests that enumerate the registries never see the fault adapters.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from benchmark import registry

PLUGIN = Path(__file__).parent / "fault_plugin.py"


@contextmanager
def isolated_registries() -> Iterator[None]:
    """Restore the method, toy-model and metric registries (and the loaded-plugin list) on exit."""
    regs = (registry.METHODS, registry.TOY_MODELS, registry.METRICS)
    for reg in regs:
        reg.discover()
    saved = [(dict(r._objects), dict(r._lazy), dict(r._origins)) for r in regs]
    plugins = dict(registry._loaded_plugins)
    try:
        yield
    finally:
        for reg, (objects, lazy, origins) in zip(regs, saved, strict=True):
            reg._objects, reg._lazy, reg._origins = objects, lazy, origins
        for key, module in list(registry._loaded_plugins.items()):
            if key not in plugins:
                del registry._loaded_plugins[key]
                sys.modules.pop(module.__name__, None)
