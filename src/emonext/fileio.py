"""Atomic file and folder writes: a reader (or a crash) never sees half a file or a mixed folder."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)


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


@contextmanager
def staged_directory(target: Path, marker: str) -> Iterator[Path]:
    """Build a new version of ``target`` in a sibling staging folder, then swap it in.

    The swap happens only when the ``with`` body succeeds: a crash leaves the previous output
    untouched. Readers see the old or the new folder, never a mix (the two renames leave
    ``target`` missing for an instant, never partly written).

    Args:
        target: The output folder.
        marker: A file every previous output contains; a non-empty ``target`` without it is
            not ours and is never replaced.

    Yields:
        The staging folder to fill.

    Raises:
        ValueError: ``target`` holds something else than a previous output.
    """
    _check_replaceable(target, marker)
    target.parent.mkdir(parents=True, exist_ok=True)
    _remove_abandoned_staging(target)
    staging = target.parent / f".{target.name}.staging-{os.getpid()}-{uuid.uuid4().hex[:8]}"
    staging.mkdir()
    try:
        yield staging
        _check_replaceable(target, marker)
        replace_directory(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise


def replace_directory(new: Path, target: Path) -> None:
    """Move ``new`` to ``target``, replacing (and deleting) a previous ``target``."""
    if target.exists():
        previous = target.parent / f".{target.name}.previous-{uuid.uuid4().hex[:8]}"
        os.replace(target, previous)
        os.replace(new, target)
        shutil.rmtree(previous, ignore_errors=True)
    else:
        os.replace(new, target)


def _check_replaceable(target: Path, marker: str) -> None:
    if target.is_file():
        raise ValueError(f"{target}: output folder is a file")
    if target.is_dir() and any(target.iterdir()) and not (target / marker).is_file():
        raise ValueError(
            f"{target}: not empty and has no {marker}, so it is not a previous output; "
            "refusing to replace it (choose another output_dir or empty it)"
        )


def _remove_abandoned_staging(target: Path) -> None:
    for leftover in target.parent.glob(f".{target.name}.staging-*"):
        pid_text = leftover.name.rsplit(".staging-", 1)[1].split("-", 1)[0]
        if pid_text.isdigit() and not _process_alive(int(pid_text)):
            logger.info("removing %s left by an interrupted run", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def content_hash(path: Path) -> str:
    """DVC's content hash of a file or folder, so our records can be checked against ``dvc.lock``.

    A file's hash is the MD5 of its bytes; a folder's is the MD5 of DVC's sorted JSON listing of
    ``{"md5", "relpath"}`` entries, suffixed ``.dir`` (dvc-data's ``Tree``). Hidden files and
    folders (``.git``, staging leftovers) are skipped, as DVC's default ignores do for ``.dvc``
    and ``.git``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
    """
    path = Path(path)
    if path.is_file():
        return _file_md5(path)
    if not path.is_dir():
        raise FileNotFoundError(f"{path}: does not exist, so it has no content hash")
    entries = [
        {"md5": _file_md5(file), "relpath": file.relative_to(path).as_posix()}
        for file in path.rglob("*")
        if file.is_file() and not any(part.startswith(".") for part in file.relative_to(path).parts)
    ]
    entries.sort(key=lambda entry: entry["relpath"])
    listing = json.dumps(entries, sort_keys=True).encode("utf-8")
    return hashlib.md5(listing).hexdigest() + ".dir"


def _file_md5(path: Path) -> str:
    digest = hashlib.md5()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
