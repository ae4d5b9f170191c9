"""Atomic file writes: a reader (or a crash) never sees half a file."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any


def atomic_write(path: Path, write: Callable[[Path], Any]) -> Path:
    """Call ``write(temporary_path)``, then rename the temporary file over ``path``.

    The temporary file lives in the same folder, so the rename stays on one file system and is
    atomic. Missing parent folders are created; on any failure the temporary file is removed and
    the previous ``path`` (if any) is left untouched.

    Returns:
        ``path``.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(descriptor)
    try:
        write(Path(temporary))
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return path


def write_atomically(path: Path, data: bytes | str) -> Path:
    """Write bytes or UTF-8 text to ``path`` atomically."""
    payload = data.encode("utf-8") if isinstance(data, str) else data
    return atomic_write(path, lambda temporary: temporary.write_bytes(payload))


def write_json(path: Path, value: Any) -> Path:
    """Write ``value`` as indented JSON atomically."""
    return write_atomically(path, json.dumps(value, indent=2) + "\n")
