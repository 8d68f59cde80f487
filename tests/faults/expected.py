"""The error row each fault adapter of ``fault_plugin.py`` must produce (importable without registering them)."""

from __future__ import annotations

# method -> (error type, a fragment of the message, stage); None: the cell must succeed
EXPECTED: dict[str, tuple[str, str, str] | None] = {
    "fault_raise": ("RuntimeError", "injected failure inside decompose", "decomposing"),
    "fault_hang": ("TimeLimitExceeded", "time limit", "running the cell (worker process)"),
    "fault_nan": ("DecompositionError", "NaN", "validating the decomposition"),
    "fault_shape": ("DecompositionError", "has shape (2, 5, 3), expected (2, 5)", "validating the decomposition"),
    "fault_param": ("DecompositionError", "not_a_parameter", "validating the decomposition"),
    "fault_device": ("DecompositionError", "is on device meta", "validating the decomposition"),
    "fault_type": ("TypeError", "returned dict, not a Decomposition", "decomposing"),
    "fault_memory_huge": ("RuntimeError", "out of memory", "decomposing"),
    "fault_segfault": ("WorkerDied", "SIGSEGV", "running the cell (worker process)"),
    "fault_exit": ("SystemExit", "3", "decomposing"),
    "fault_state": None,
    "fault_record": None,
    "fault_state_probe": None,
}
