"""Result files: one JSON per cell (toy model x method x seed), with a versioned schema and a typed record.

:class:`ResultRecord` is the one shape a result has in memory: ``from_dict`` / ``from_json`` migrate,
validate and type it; ``to_dict`` / ``to_json`` give the stored JSON back. A field a result did not record
is None, so a reader can tell "absent" from "false".

Files live at ``<results>/<toy>/<method>/seed<k>.json`` and are written atomically (temporary file in the
same folder, fsync, rename), so an interrupted or killed run never leaves a partial file under a result's
name. ``read_result`` validates every field it relies on and refuses what it cannot trust (unreadable JSON,
NaN literals, wrong types, a cell that does not match the file's place, an unknown schema version);
files from an older schema version are migrated in memory through :data:`MIGRATIONS`.
"""

from __future__ import annotations

import json
import math
import os
import platform
import re
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cache
from pathlib import Path
from typing import Any

from benchmark import __version__
from benchmark.files import atomic_write_bytes, temp_file_owner
from benchmark.names import NAME_PATTERN, REF_PATTERN, family, instance

SCHEMA_VERSION = 2
REQUIRED = ("schema_version", "cell", "status", "metrics", "toy", "method")
MAX_RESULT_BYTES = 20 * 2**20  # a cell's result is a few kB; anything this large is not one of ours
ERROR_FIELDS = ("stage", "type", "message", "traceback")


class ResultError(ValueError):
    """A result file that cannot be trusted."""


def path_part(name: str) -> str:
    """A name as one path component, one to one: allowed characters stay, every other one (the ':' of a
    ``module:object`` reference, a leading '.') becomes ``%XX``."""
    out = []
    for i, ch in enumerate(name):
        keep = ch.isascii() and (ch.isalnum() or ch in "_@-" or (ch == "." and i > 0))
        out.append(ch if keep else "".join(f"%{b:02X}" for b in ch.encode()))
    return "".join(out)


@dataclass(frozen=True, order=True)
class Cell:
    toy: str
    method: str
    seed: int

    def __post_init__(self) -> None:
        for field_name in ("toy", "method"):
            value = getattr(self, field_name)
            if not isinstance(value, str) or not (
                (NAME_PATTERN.fullmatch(value) and not value.startswith(".")) or REF_PATTERN.fullmatch(value)
            ):
                raise ValueError(
                    f"cell {field_name} {value!r} is neither a valid name (1 to 100 letters, digits and "
                    "'_ . @ -', not starting with a dot) nor a module:object reference"
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f"cell seed must be an integer, got {self.seed!r}")
        if not 0 <= self.seed < 2**31:
            raise ValueError(f"cell seed must be in 0 .. 2**31 - 1, got {self.seed}")

    def path(self, root: Path) -> Path:
        return Path(root) / path_part(self.toy) / path_part(self.method) / f"seed{self.seed}.json"

    def decomposition_path(self, root: Path) -> Path:
        """Where the cell's stored decomposition lies, beside its result."""
        return self.path(root).with_suffix(".safetensors")

    def to_dict(self) -> dict[str, Any]:
        return {"toy": self.toy, "method": self.method, "seed": self.seed}

    def __str__(self) -> str:
        return f"{self.toy} x {self.method} x seed {self.seed}"


@cache  # one subprocess per process, not one per cell
def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).parent, capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def environment() -> dict[str, str]:
    return dict(_environment())  # a copy: callers may edit their result's record


@cache
def _environment() -> dict[str, str]:
    import numpy
    import scipy
    import torch

    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "platform": platform.platform(),
        # the vector instructions torch's CPU kernels use (AVX2, AVX512, ...): training that is chaotic in float
        # rounding (SPD and its successors) gives other decompositions under other ones; same machine, same bits
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "benchmark": __version__,
    }


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# -- writing -------------------------------------------------------------------------------------------
def write_result(root: Path, result: ResultRecord | dict[str, Any]) -> Path:
    """Validate ``result`` and write it atomically to its cell's path; returns the path."""
    if isinstance(result, ResultRecord):
        result = result.to_dict()
    validate_result(result, "result to write")
    cell = Cell(**result["cell"])
    path = cell.path(root)
    data = json.dumps(result, indent=2, sort_keys=True, allow_nan=False).encode() + b"\n"
    atomic_write_bytes(path, data)
    return path


def stale_temp_files(root: Path) -> list[Path]:
    """Temporary files left by a writer that died before its rename (never read as results): those whose
    writer process (the pid in the name) no longer runs, or is this process."""
    root = Path(root)
    if not root.exists():
        return []
    return sorted(p for p in root.rglob(".*.tmp") if _writer_gone(p))


def _writer_gone(path: Path) -> bool:
    pid = temp_file_owner(path)
    if pid is None:
        return False  # not one of ours: never touched
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def remove_stale_temp_files(root: Path) -> int:
    """Delete the temporary files of dead writers; returns how many were removed."""
    removed = 0
    for p in stale_temp_files(root):
        p.unlink(missing_ok=True)
        removed += 1
    return removed


# -- schema migrations ---------------------------------------------------------------------------------
def _migrate_v0(old: dict[str, Any]) -> dict[str, Any]:
    """Version 0, the prototype layout: the cell flattened into ``toy``/``method``/``seed`` strings at the
    top level, ``ok: bool`` instead of ``status``, ``scores`` instead of ``metrics``, ``error`` a string."""
    for key in ("toy", "method", "seed", "ok", "scores"):
        if key not in old:
            raise ResultError(f"schema version 0 result lacks the field {key!r}")
    if not isinstance(old["ok"], bool):
        raise ResultError(f"schema version 0 field 'ok' must be true or false, got {old['ok']!r}")
    error = None
    if not old["ok"]:
        msg = old.get("error")
        error = {"stage": "unknown (schema 0)", "type": "Error", "message": str(msg), "traceback": ""}
    return {
        "schema_version": 1,
        "benchmark_version": old.get("benchmark_version", "unknown"),
        "git_commit": old.get("git_commit", "unknown"),
        "created_at": old.get("created_at", "unknown"),
        "cell": {"toy": old["toy"], "method": old["method"], "seed": old["seed"]},
        "status": "ok" if old["ok"] else "error",
        "metrics": old["scores"] if old["ok"] else {},
        "metric_versions": {},
        "headline": old.get("headline", "hungarian"),
        "toy": {"name": old["toy"]},
        "method": {"name": old["method"], "hparams": old.get("hparams", {})},
        "budget": {},
        "cost": {},
        "device": old.get("device", "cpu"),
        "env": {},
        "error": error,
        "migrated_from": 0,
    }


def _migrate_v1(old: dict[str, Any]) -> dict[str, Any]:
    """Version 1 stored no decomposition: the result keeps its metrics, but ``pdbench validate`` refuses it
    (nothing to re-score) until the cell runs again."""
    return {**old, "decomposition": old.get("decomposition")}


# version v -> a function that turns a version-v result into a version-(v + 1) result
MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {0: _migrate_v0, 1: _migrate_v1}


def migrate(result: dict[str, Any], where: str = "result") -> dict[str, Any]:
    """Bring ``result`` to :data:`SCHEMA_VERSION`, or raise :class:`ResultError` saying what to do."""
    version = result.get("schema_version", 0)
    if isinstance(version, bool) or not isinstance(version, int):
        raise ResultError(f"{where}: schema_version must be an integer, got {version!r}")
    if version > SCHEMA_VERSION:
        raise ResultError(
            f"{where}: written with result schema version {version}, but this pdbench "
            f"({__version__}) reads versions up to {SCHEMA_VERSION}; upgrade pdbench to read it"
        )
    while version < SCHEMA_VERSION:
        step = MIGRATIONS.get(version)
        if step is None:
            raise ResultError(
                f"{where}: result schema version {version} cannot be migrated to "
                f"{SCHEMA_VERSION}; delete the file and re-run the cell with `pdbench run`"
            )
        result = step(result)
        version += 1
        result["schema_version"] = version
    return result


# -- validation ----------------------------------------------------------------------------------------
def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_number(x: Any) -> bool:
    return (_is_int(x) or isinstance(x, float)) and math.isfinite(x)


def validate_result(result: Any, where: str = "result") -> None:
    """Raise :class:`ResultError` unless ``result`` is a well-formed current-schema result."""
    if not isinstance(result, dict):
        raise ResultError(f"{where}: a result must be a JSON object, got {type(result).__name__}")
    missing = [k for k in REQUIRED if k not in result]
    if missing:
        raise ResultError(f"{where}: missing field(s) {missing}")
    if result["schema_version"] != SCHEMA_VERSION or not _is_int(result["schema_version"]):
        raise ResultError(f"{where}: schema_version must be {SCHEMA_VERSION}, got {result['schema_version']!r}")
    cell = result["cell"]
    if not isinstance(cell, dict) or set(cell) != {"toy", "method", "seed"}:
        raise ResultError(f"{where}: 'cell' must be an object with exactly toy, method and seed, got {cell!r}")
    try:
        c = Cell(**cell)
    except (TypeError, ValueError) as exc:
        raise ResultError(f"{where}: bad cell: {exc}") from None
    for part, name in (("toy", c.toy), ("method", c.method)):
        rec = result[part]
        if not isinstance(rec, dict) or rec.get("name") != name:
            raise ResultError(f"{where}: '{part}' must be an object whose name is {name!r}, got {rec!r}")
    status = result["status"]
    if status not in ("ok", "error"):
        raise ResultError(f"{where}: status must be 'ok' or 'error', not {status!r}")
    metrics = result["metrics"]
    if not isinstance(metrics, dict):
        raise ResultError(f"{where}: 'metrics' must be an object, got {type(metrics).__name__}")
    for k, v in metrics.items():
        if not isinstance(k, str) or not (v is None or _is_number(v)):
            raise ResultError(f"{where}: metric {k!r} must be a finite number or null, got {v!r}")
    if status == "ok":
        if not metrics:
            raise ResultError(f"{where}: a result with status 'ok' has no metrics")
        if result.get("error") is not None:
            raise ResultError(f"{where}: a result with status 'ok' carries an error")
    else:
        err = result.get("error")
        if not isinstance(err, dict) or not all(isinstance(err.get(k), str) for k in ERROR_FIELDS):
            raise ResultError(f"{where}: an error row needs 'error' with string fields {list(ERROR_FIELDS)}")
    for key in ("cost", "budget"):
        sub = result.get(key, {})
        if not isinstance(sub, dict):
            raise ResultError(f"{where}: {key!r} must be an object, got {type(sub).__name__}")
    for k, v in result.get("cost", {}).items():
        if not (v is None or isinstance(v, str | bool) or _is_number(v)):
            raise ResultError(f"{where}: cost {k!r} must be a finite number, a string, a boolean or null, got {v!r}")
    dec = result.get("decomposition")
    if dec is not None and not (
        isinstance(dec, dict)
        and isinstance(dec.get("sha256"), str)
        and re.fullmatch(r"[0-9a-f]{64}", dec["sha256"])
        and _is_int(dec.get("bytes"))
    ):
        raise ResultError(f"{where}: 'decomposition' must record the stored file's sha256 and bytes, got {dec!r}")
    if dec is not None and (
        dec.get("precision", "float32") not in ("float32", "float16")
        or not (dec.get("metric_shift") is None or (_is_number(dec["metric_shift"]) and dec["metric_shift"] >= 0))
    ):
        raise ResultError(f"{where}: 'decomposition' has a bad precision or metric_shift: {dec!r}")
    if "headline" in result and not isinstance(result["headline"], str):
        raise ResultError(f"{where}: 'headline' must be a string, got {result['headline']!r}")


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"non-standard JSON constant {name}")


def parse_json(text: str | bytes, where: str = "result") -> dict[str, Any]:
    """A result file's JSON object (NaN and Infinity literals refused), not yet validated."""
    try:
        result = json.loads(text, parse_constant=_refuse_constant)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise ResultError(f"{where}: not a readable JSON result ({type(exc).__name__}: {exc})") from None
    if not isinstance(result, dict):
        raise ResultError(f"{where}: a result must be a JSON object, got {type(result).__name__}")
    return result


def parse_result(text: str | bytes, where: str = "result") -> ResultRecord:
    """Parse, migrate and validate a result's JSON text into a :class:`ResultRecord`."""
    return ResultRecord.from_json(text, where)


def read_result(path: Path, root: Path | None = None) -> ResultRecord:
    """Read, migrate and validate one result file; with ``root``, also check it lies at its cell's path."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_RESULT_BYTES:
            raise ResultError(f"{path}: {size} bytes is far larger than a result; refusing to read it")
        data = path.read_bytes()
    except OSError as exc:
        raise ResultError(f"{path}: cannot be read ({exc})") from None
    record = ResultRecord.from_json(data, str(path), path)
    if root is not None:
        expected = record.cell.path(root)
        if os.path.normpath(expected) != os.path.normpath(path):
            raise ResultError(
                f"{path}: describes cell {record.cell}, whose result belongs at {expected}; move it there or delete it"
            )
    return record


def load_results(root: Path) -> tuple[list[ResultRecord], list[str]]:
    """All trustworthy results under ``root``, and one message per file that was refused."""
    results, problems = [], []
    root = Path(root)
    if not root.exists():
        return results, problems
    for path in sorted(root.rglob("seed*.json")):
        try:
            results.append(read_result(path, root))
        except ResultError as exc:
            problems.append(str(exc))
    return results, problems


def stored_status(root: Path, cell: Cell) -> str | None:
    """'ok' or 'error' for a valid stored result of ``cell``, 'invalid' for a refused file, None if absent."""
    path = cell.path(root)
    if not path.exists():
        return None
    try:
        return read_result(path, root).status
    except ResultError:
        return "invalid"


def is_done(root: Path, cell: Cell) -> bool:
    """True when a valid, successful result for ``cell`` is stored."""
    return stored_status(root, cell) == "ok"


def set_aside(path: Path) -> Path:
    """Rename a refused result file to ``<name>.refused-<n>`` so that re-running its cell loses nothing."""
    n = 0
    while True:
        dest = path.with_name(f"{path.name}.refused-{n}")
        if not dest.exists():
            os.replace(path, dest)
            return dest
        n += 1


# -- the typed record -----------------------------------------------------------------------------------
@dataclass
class ErrorInfo:
    stage: str
    type: str
    message: str
    traceback: str = ""

    @property
    def summary(self) -> str:
        """``Type: first line of the message``."""
        lines = self.message.splitlines()
        return f"{self.type}: {lines[0] if lines else ''}".strip()

    @property
    def summary_full(self) -> str:
        """``Type: message`` (the whole message)."""
        return f"{self.type}: {self.message}".strip()


@dataclass
class DecompositionRecord:
    """The stored decomposition beside a result: its SHA-256 and size."""

    sha256: str
    bytes: int
    format: str = "safetensors"
    precision: str = "float32"  # of the component values; "float16" for compacted large decompositions
    metric_shift: float | None = None  # largest change of any metric caused by the compaction


@dataclass
class MethodRecord:
    name: str
    version: str | None = None
    class_ref: str | None = None  # "module:Class" (JSON key "class")
    paper: str = ""
    reference_row: bool | None = None
    sees_ground_truth: bool | None = None
    hparams: dict[str, Any] = field(default_factory=dict)
    overrides: dict[str, Any] | None = None  # hyperparameters set on the command line, if any
    plugin: dict[str, str] | None = None  # {"file", "sha256"} of the plugin file that defined it
    extra: dict[str, Any] = field(default_factory=dict)

    _KEYS = (
        "name",
        "version",
        "class",
        "paper",
        "reference_row",
        "sees_ground_truth",
        "hparams",
        "overrides",
        "plugin",
    )

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MethodRecord:
        return cls(
            name=d["name"],
            version=None if d.get("version") is None else str(d["version"]),
            class_ref=d.get("class"),
            paper=str(d.get("paper", "")),
            reference_row=d.get("reference_row"),
            sees_ground_truth=d.get("sees_ground_truth"),
            hparams=dict(d.get("hparams") or {}),
            overrides=d.get("overrides"),
            plugin=d.get("plugin"),
            extra={k: v for k, v in d.items() if k not in cls._KEYS},
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key, value in (
            ("version", self.version),
            ("class", self.class_ref),
            ("reference_row", self.reference_row),
            ("sees_ground_truth", self.sees_ground_truth),
            ("overrides", self.overrides),
            ("plugin", self.plugin),
        ):
            if value is not None:
                out[key] = value
        if self.paper or self.version is not None:
            out["paper"] = self.paper
        if self.hparams or self.version is not None:
            out["hparams"] = self.hparams
        return {**out, **self.extra}


@dataclass
class ToyRecord:
    name: str
    tier: int | None = None
    version: str | None = None
    gt_status: str | None = None
    weights_sha256: str | None = None
    train_seed: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # spec fields and build facts, kept as recorded

    _KEYS = ("name", "tier", "version", "gt_status", "weights_sha256", "train_seed")

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ToyRecord:
        return cls(
            name=d["name"],
            tier=None if d.get("tier") is None else int(d["tier"]),
            version=None if d.get("version") is None else str(d["version"]),
            gt_status=d.get("gt_status"),
            weights_sha256=d.get("weights_sha256"),
            train_seed=d.get("train_seed"),
            extra={k: v for k, v in d.items() if k not in cls._KEYS},
        )

    @property
    def track(self) -> str:
        """The toy's track (``ToyModel.track``); results written before tracks existed are reproduction."""
        return str(self.extra.get("track") or "reproduction")

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        for key in self._KEYS[1:]:
            value = getattr(self, key)
            if value is not None:
                out[key] = value
        return {**out, **self.extra}


@dataclass
class ResultRecord:
    """One cell's result (schema version :data:`benchmark.results.SCHEMA_VERSION`)."""

    cell: Cell
    status: str  # "ok" or "error"
    toy: ToyRecord
    method: MethodRecord
    metrics: dict[str, float | None] = field(default_factory=dict)
    metric_versions: dict[str, str] = field(default_factory=dict)
    headline: str = "hungarian"
    budget: dict[str, Any] = field(default_factory=dict)
    cost: dict[str, Any] = field(default_factory=dict)
    device: str = "cpu"
    env: dict[str, Any] = field(default_factory=dict)
    error: ErrorInfo | None = None
    decomposition: DecompositionRecord | None = None
    schema_version: int = SCHEMA_VERSION
    benchmark_version: str = "unknown"
    git_commit: str = "unknown"
    created_at: str = "unknown"
    migrated_from: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # top-level fields this version does not know, kept
    path: Path | None = field(default=None, compare=False)  # where it was read from; not stored

    _KEYS = (
        "cell",
        "status",
        "toy",
        "method",
        "metrics",
        "metric_versions",
        "headline",
        "budget",
        "cost",
        "device",
        "env",
        "error",
        "decomposition",
        "schema_version",
        "benchmark_version",
        "git_commit",
        "created_at",
        "migrated_from",
    )

    @property
    def family(self) -> str:
        """The toy model the cell ran on, without its instance (``"x-rot@2"`` -> ``"x-rot"``)."""
        return family(self.cell.toy)

    @property
    def replicate(self) -> tuple[int, int]:
        """(toy instance, method seed): what a leaderboard cell of one (toy model, method) averages over."""
        return instance(self.cell.toy), self.cell.seed

    # -- reading and writing ------------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = "result", path: Path | None = None) -> ResultRecord:
        """Migrate, validate and type a stored result (raises ``ResultError`` with what is wrong)."""
        d = migrate(dict(data), where)
        validate_result(d, where)
        err, dec = d.get("error"), d.get("decomposition")
        return cls(
            cell=Cell(**d["cell"]),
            status=d["status"],
            toy=ToyRecord.from_dict(d["toy"]),
            method=MethodRecord.from_dict(d["method"]),
            metrics=dict(d["metrics"]),
            metric_versions={str(k): str(v) for k, v in (d.get("metric_versions") or {}).items()},
            headline=str(d.get("headline", "hungarian")),
            budget=dict(d.get("budget") or {}),
            cost=dict(d.get("cost") or {}),
            device=str(d.get("device", "cpu")),
            env=dict(d.get("env") or {}),
            error=None if err is None else ErrorInfo(**{k: err[k] for k in ("stage", "type", "message", "traceback")}),
            decomposition=None
            if dec is None
            else DecompositionRecord(
                dec["sha256"],
                dec["bytes"],
                dec.get("format", "safetensors"),
                dec.get("precision", "float32"),
                dec.get("metric_shift"),
            ),
            schema_version=int(d["schema_version"]),
            benchmark_version=str(d.get("benchmark_version", "unknown")),
            git_commit=str(d.get("git_commit", "unknown")),
            created_at=str(d.get("created_at", "unknown")),
            migrated_from=d.get("migrated_from"),
            extra={k: v for k, v in d.items() if k not in cls._KEYS},
            path=path,
        )

    @classmethod
    def from_json(cls, text: str | bytes, where: str = "result", path: Path | None = None) -> ResultRecord:
        return cls.from_dict(parse_json(text, where), where, path)

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "schema_version": self.schema_version,
            "benchmark_version": self.benchmark_version,
            "git_commit": self.git_commit,
            "created_at": self.created_at,
            "cell": self.cell.to_dict(),
            "status": self.status,
            "metrics": dict(self.metrics),
            "metric_versions": dict(self.metric_versions),
            "headline": self.headline,
            "toy": self.toy.to_dict(),
            "method": self.method.to_dict(),
            "budget": dict(self.budget),
            "cost": dict(self.cost),
            "device": self.device,
            "env": dict(self.env),
            "error": None if self.error is None else dict(self.error.__dict__),
            "decomposition": None if self.decomposition is None else _drop_none(self.decomposition.__dict__),
        }
        if self.migrated_from is not None:
            out["migrated_from"] = self.migrated_from
        return {**self.extra, **out}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True, allow_nan=False) + "\n"

    def __getitem__(self, key: str) -> Any:
        """The stored JSON's top-level field ``key`` (read-only; the attributes are the typed view)."""
        return self.to_dict()[key]

    def get(self, key: str, default: Any = None) -> Any:
        return self.to_dict().get(key, default)

    # -- what readers ask ---------------------------------------------------------------------------------
    @property
    def ok(self) -> bool:
        return self.status == "ok"

    @property
    def headline_value(self) -> float | None:
        v = self.metrics.get(self.headline)
        return None if v is None else float(v)

    @property
    def stopped_early(self) -> bool:
        return self.cost.get("stopped_early") is True

    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else str(self.cell)


def as_records(results: Iterable[ResultRecord | dict[str, Any]]) -> list[ResultRecord]:
    """Typed records of ``results``, which may also be stored-JSON dictionaries (validated on the way)."""
    return [r if isinstance(r, ResultRecord) else ResultRecord.from_dict(r) for r in results]


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}
