"""Writing files safely: atomic replacement, the user's umask, and the temporary files of dead writers.
(No torch here: the command line imports it while building its parser.)"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The temporary file is named ``.<name>.<pid>.<random>.tmp`` (so a later start-up can tell a dead writer's
    file from a live one's) and the result gets the permissions of a new file under the user's umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o666 & ~current_umask())
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def current_umask() -> int:
    """The process's umask (read by setting and restoring it; there is no other portable way)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def temp_file_owner(path: Path) -> int | None:
    """The pid in a temporary file's name written by :func:`atomic_write_bytes`, or None."""
    parts = path.name.rsplit(".", 3)  # .<name>.<pid>.<random>.tmp
    try:
        return int(parts[-3]) if len(parts) == 4 and parts[-1] == "tmp" else None
    except ValueError:
        return None
