"""Name -> object registries for toy models, methods and metrics.

One mechanism serves all three (after lm-evaluation-harness's `Registry`, see
`docs/reference/benchmarks.md` section 2):

- decorator registration: ``@METHODS.register("pca")``;
- lazy ``module:object`` references, imported on first use: ``METHODS.register("x", lazy="pkg.mod:Cls")``,
  and any ``module:object`` string given where a name is expected;
- built-in discovery: every module of the package named in ``builtin_package`` is imported on the first
  look-up, so a new file in ``methods/`` or ``toy_models/`` registers itself;
- third-party plugins through the entry-point groups ``pdbench.methods``, ``pdbench.toy_models`` and
  ``pdbench.metrics``, and through ``load_plugin(path)`` (the CLI's ``--plugin file.py``).

A module that fails to import breaks only the names it would have registered: the error is kept and
reported when such a name is asked for, or by ``pdbench list``.
"""

from __future__ import annotations

import difflib
import functools
import hashlib
import importlib
import importlib.metadata
import importlib.util
import pkgutil
import sys
import threading
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Generic, TypeVar

from benchmark.names import INSTANCE_PATTERN, REF_PATTERN, check_name

T = TypeVar("T")


class RegistryError(LookupError):
    """An unknown or broken name, or a plugin that cannot be loaded."""


class Registry(Generic[T]):
    """A typed registry of named objects (classes or factories)."""

    def __init__(
        self,
        kind: str,
        builtin_package: str | None = None,
        entry_point_group: str | None = None,
        check: Callable[[str, Any], None] | None = None,
    ):
        self.kind = kind
        self.check = check  # raises TypeError for an object of the wrong kind; may stamp the name on it (set by
        # the module that defines the registry's base class)
        self.builtin_package = builtin_package
        self.entry_point_group = entry_point_group
        self._objects: dict[str, T] = {}
        self._lazy: dict[str, str] = {}
        self._origins: dict[str, str] = {}
        self.import_errors: dict[str, str] = {}
        self.instances = False  # resolve "name@k" to the factory of "name" with seed=k (toy models)
        self._discovered = False
        self._lock = threading.RLock()

    # -- registration -------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, lazy: str | None = None, replace: bool = False):
        """Register ``obj`` (or a lazy ``module:object`` reference) under ``name``.

        Without ``obj`` and ``lazy`` this returns a decorator.
        """
        if lazy is not None:
            if not isinstance(lazy, str) or not REF_PATTERN.fullmatch(lazy):
                raise RegistryError(f"lazy {self.kind} reference {lazy!r} must look like 'package.module:object'")
            with self._lock:
                self._check_free(name, replace)
                self._lazy[name] = lazy
                self._origins[name] = lazy
            return None

        def add(o: T) -> T:
            with self._lock:
                self._check_free(name, replace)
                self._check_kind(name, o)
                self._objects[name] = o
                self._lazy.pop(name, None)
                self._origins[name] = _origin(o)
            return o

        return add(obj) if obj is not None else add

    def _check_kind(self, name: str, obj: Any) -> None:
        if self.check is not None:
            try:
                self.check(name, obj)
            except TypeError as exc:
                raise RegistryError(f"cannot register {self.kind} {name!r}: {exc}") from None

    def _check_free(self, name: str, replace: bool) -> None:
        try:
            check_name(name, self.kind)
        except ValueError as exc:
            raise RegistryError(str(exc)) from None
        if not replace and (name in self._objects or name in self._lazy):
            raise RegistryError(
                f"{self.kind} {name!r} is already registered (by {self._origins.get(name)}); "
                "pick another name or pass replace=True"
            )

    # -- look-up ------------------------------------------------------------------------------------
    def get(self, name: str) -> T:
        """The object registered as ``name``; ``module:object`` strings are imported directly."""
        self.discover()
        with self._lock:
            if name in self._objects:
                return self._objects[name]
            ref = self._lazy.get(name)
        if ref is None and ":" in name:
            ref = name
        if ref is not None:
            obj = resolve(ref, self.kind)
            self._check_kind(name, obj)
            with self._lock:
                self._objects[name] = obj
                self._lazy.pop(name, None)
            return obj
        if self.instances and (m := INSTANCE_PATTERN.fullmatch(name)):
            return functools.partial(self.get(m[1]), seed=int(m[2]))
        raise RegistryError(self._unknown_message(name))

    def builtin(self, name: str) -> T | None:
        """The object registered as ``name`` by the built-in package or by code this process already ran;
        None otherwise. Never imports an entry point, a plugin file or a ``module:object`` reference."""
        self.discover()
        with self._lock:
            return self._objects.get(name)

    def lazy_ref(self, name: str) -> str | None:
        """The ``module:object`` reference ``name`` was registered with, where it has not been imported yet."""
        with self._lock:
            return self._lazy.get(name)

    def __contains__(self, name: str) -> bool:
        self.discover()
        if name in self._objects or name in self._lazy:
            return True
        m = INSTANCE_PATTERN.fullmatch(name) if self.instances and isinstance(name, str) else None
        return m is not None and m[1] in self  # "name@k": an instance of a registered toy model

    def names(self) -> list[str]:
        self.discover()
        return sorted(set(self._objects) | set(self._lazy))

    def items(self) -> Iterator[tuple[str, T]]:
        for name in self.names():
            yield name, self.get(name)

    def origin(self, name: str) -> str:
        self.discover()
        return self._origins.get(name, "?")

    def _unknown_message(self, name: str) -> str:
        known = ", ".join(self.names()) or "(none)"
        msg = f"unknown {self.kind} {name!r}. Known {self.kind}s: {known}."
        close = suggestions(name, self.names())
        if close:
            msg += f" Did you mean {', '.join(close)}?"
        if self.import_errors:
            broken = "; ".join(f"{m}: {e.strip().splitlines()[-1]}" for m, e in self.import_errors.items())
            msg += f" Some modules failed to import and registered nothing: {broken}"
        return msg

    # -- discovery ----------------------------------------------------------------------------------
    def discover(self) -> None:
        """Import the built-in package's modules and read the entry points, once."""
        if self._discovered:
            return
        with self._lock:
            if self._discovered:
                return
            self._discovered = True
            if self.builtin_package:
                pkg = importlib.import_module(self.builtin_package)
                for info in pkgutil.iter_modules(pkg.__path__, prefix=f"{self.builtin_package}."):
                    if info.name.rsplit(".", 1)[-1].startswith("_"):
                        continue
                    try:
                        importlib.import_module(info.name)
                    except Exception:  # a broken built-in must not hide the others
                        self.import_errors[info.name] = traceback.format_exc()
            if self.entry_point_group:
                for ep in importlib.metadata.entry_points(group=self.entry_point_group):
                    if ep.name not in self._objects and ep.name not in self._lazy:
                        self._lazy[ep.name] = ep.value
                        self._origins[ep.name] = f"entry point {ep.value}"


def suggestions(name: str, known: list[str]) -> list[str]:
    """Known names close to ``name``: the same up to case and ``_``/``-``, containing it, or near by spelling."""

    def fold(n: str) -> str:
        return n.lower().replace("-", "_")

    out = [n for n in known if fold(n) == fold(name)]
    out += [n for n in known if n not in out and name and (fold(name) in fold(n) or fold(n) in fold(name))]
    out += [n for n in difflib.get_close_matches(fold(name), [fold(k) for k in known], n=3, cutoff=0.75)]
    folded = {fold(k): k for k in known}
    return list(dict.fromkeys(folded.get(n, n) for n in out))


def _origin(obj: Any) -> str:
    mod = getattr(obj, "__module__", "?")
    qual = getattr(obj, "__qualname__", type(obj).__name__)
    return f"{mod}:{qual}"


def resolve(ref: str, kind: str = "object") -> Any:
    """The object a ``module:object`` reference names (``object`` may be dotted); the one place this is done."""
    module_name, _, attr = ref.partition(":")
    if not module_name or not attr:
        raise RegistryError(f"lazy {kind} reference {ref!r} must look like 'package.module:object'")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:
        raise RegistryError(f"cannot import module {module_name!r} for {kind} {ref!r}: {exc}") from exc
    obj: Any = module
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError as exc:
            raise RegistryError(f"module {module_name!r} has no attribute {attr!r} ({kind} {ref!r})") from exc
    return obj


_loaded_plugins: dict[str, Any] = {}


def load_plugin(path: str | Path) -> Any:
    """Import a Python file so that its ``@register`` decorators run; returns the module.

    Loading the same file twice is a no-op.
    """
    p = Path(path).expanduser().resolve()
    key = str(p)
    if key in _loaded_plugins:
        return _loaded_plugins[key]
    if not p.is_file():
        raise RegistryError(f"plugin file {path!s} does not exist")
    if p.suffix != ".py":
        raise RegistryError(f"plugin file {path!s} is not a .py file")
    digest = hashlib.sha256(p.read_bytes()).hexdigest()[:12]
    stem = "".join(ch if ch.isalnum() else "_" for ch in p.stem)
    mod_name = f"pdbench_plugin_{stem}_{digest}"  # says which file, and which version of it
    spec = importlib.util.spec_from_file_location(mod_name, p)
    if spec is None or spec.loader is None:
        raise RegistryError(f"cannot load plugin file {path!s}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[mod_name] = module
    try:
        spec.loader.exec_module(module)
    except (Exception, SystemExit) as exc:  # exit() while importing is a failure, never a silent success
        sys.modules.pop(mod_name, None)
        raise RegistryError(f"plugin file {path!s} failed to import: {type(exc).__name__}: {exc}") from None
    _loaded_plugins[key] = module
    return module


# Each registry's kind check is installed by the module that defines its base (benchmark.toy, benchmark.method,
# benchmark.scoring), so this module imports none of them.
TOY_MODELS: Registry[Callable[..., Any]] = Registry("toy model", "toy_models", "pdbench.toy_models")
TOY_MODELS.instances = True  # "name@k": instance k of toy model "name" (its factory called with seed=k)
METHODS: Registry[type] = Registry("method", "methods", "pdbench.methods")
METRICS: Registry[Any] = Registry("metric", "benchmark.metrics", "pdbench.metrics")
