"""What the installed methods are, without importing submitted code into this process.

Built-in methods (the ``methods`` package) are read here. Methods from plugin files are read by a worker
process of their own (:func:`benchmark.processes.run_isolated`) that imports the plugins and sends their
records back: the plugin's code never runs in the process that scores or validates, and a plugin that fails
to import, or exits while importing, is an error here (never a silent success).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchmark.processes import IsolatedError, run_isolated
from benchmark.registry import METHODS, RegistryError


def builtin_methods() -> dict[str, dict[str, Any]]:
    """``name -> record`` (as results record it) of every method of the built-in ``methods`` package."""
    from benchmark.cell import method_record, trusted_builtin

    out = {}
    for name in METHODS.names():
        cls = METHODS.builtin(name)
        if cls is not None and trusted_builtin(name, cls):
            out[name] = method_record(name, cls)
    return out


def method_catalog(plugins: Sequence[str] = (), timeout_s: float = 300.0) -> dict[str, dict[str, Any]]:
    """Records of the built-in methods, plus those the plugin files register (read in a child process).
    A plugin cannot replace a built-in method's record."""
    return plugin_catalog(plugins, timeout_s)[0]


def plugin_catalog(
    plugins: Sequence[str] = (), timeout_s: float = 300.0
) -> tuple[dict[str, dict[str, Any]], dict[str, int]]:
    """(method records as :func:`method_catalog` gives them, ``toy name -> tier`` of the toy models that the
    plugin files register), read in one child process."""
    catalog = builtin_methods()
    if not plugins:
        return catalog, {}
    paths = [str(Path(p).expanduser().resolve()) for p in plugins]
    try:
        found = run_isolated(_read_plugins, paths, timeout_s)
    except IsolatedError as exc:
        raise RegistryError(f"the plugin file(s) {', '.join(paths)} could not be loaded: {exc}") from None
    for name, record in found["methods"].items():
        catalog.setdefault(name, record)
    return catalog, {str(k): int(v) for k, v in found["toys"].items()}


def _read_plugins(paths: list[str]) -> dict[str, dict[str, Any]]:
    """In the isolated worker: load the plugins; the records of the methods and the tiers of the toy models
    they register."""
    from benchmark.cell import method_record
    from benchmark.registry import TOY_MODELS, load_plugin

    for p in paths:
        load_plugin(p)
    records = {}
    for name in METHODS.names():
        obj = METHODS.builtin(name)
        if obj is not None and getattr(obj, "__module__", "").startswith("pdbench_plugin_"):
            records[name] = method_record(name, obj)
    toys = {}
    for name in TOY_MODELS.names():
        obj = TOY_MODELS.builtin(name)
        if obj is not None and getattr(obj, "__module__", "").startswith("pdbench_plugin_"):
            toys[name] = obj().spec.tier
    return {"methods": records, "toys": toys}
