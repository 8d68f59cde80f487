"""One writer per results folder: an advisory lock that names its holder.

``pdbench run``, ``submit`` and ``rescore`` hold ``<results>/.pdbench.lock`` (``fcntl.flock``, released by the
kernel when the holder exits, even on SIGKILL) while they write. A second writer is refused at once with the
holder's pid, host, command and start time; nothing it would have written is touched.
"""

from __future__ import annotations

import json
import os
import socket
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

LOCK_NAME = ".pdbench.lock"


class ResultsLocked(RuntimeError):
    """Another process is writing into the results folder."""


class ResultsLock:
    """Context manager: hold the results folder's lock or raise :class:`ResultsLocked`."""

    def __init__(self, root: Path, what: str = "pdbench"):
        self.root = Path(root)
        self.path = self.root / LOCK_NAME
        self.what = what
        self._fd: int | None = None

    def __enter__(self) -> ResultsLock:
        import fcntl

        self.root.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise ResultsLocked(
                f"{self.root} is being written by another pdbench process ({describe_holder(self.path)}); "
                "wait for it to finish, or use another --results folder"
            ) from None
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]])[:300] if sys.argv else self.what,
            "since": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.write(fd, json.dumps(holder).encode())
        self._fd = fd
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.close(self._fd)  # closing releases the lock
            self._fd = None


def describe_holder(path: Path) -> str:
    try:
        h = json.loads(path.read_text() or "{}")
        return f"pid {h['pid']} on {h['host']}, `{h['command']}`, since {h['since']}"
    except (OSError, ValueError, KeyError, TypeError):
        return "holder unknown"
