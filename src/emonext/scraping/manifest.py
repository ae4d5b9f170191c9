"""The scrape manifest (``<output_dir>/manifest.csv``) and the per-run summary.

One row per (label, URL): where the URL was found (results page, keyword, engine), what became of
it (``status``: ``ok``, ``duplicate`` or a failure kind, with a human ``reason``) and, for stored
images, the content hash, size and dimensions. Rows are appended and flushed one at a time, so an
interrupted run leaves every finished row on disk; a torn last line (a crash mid-write) is dropped
when the manifest is opened again. At the end of a run the file is rewritten atomically with one
row per (label, URL), the latest attempt winning.

A re-run skips every URL already in the manifest except those whose last attempt failed for a
transient reason (time-outs, connection errors, HTTP 429 and 5xx), which are tried again.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
from collections import Counter
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from emonext.fileio import atomic_write

logger = logging.getLogger(__name__)

MANIFEST_NAME = "manifest.csv"

STATUS_OK = "ok"
STATUS_DUPLICATE = "duplicate"
#: Failure kinds a later run tries again; every other status is final.
TRANSIENT_STATUSES = frozenset({"timeout", "connection_error", "http_429"})


def is_transient(status: str) -> bool:
    """Whether a URL with this status is worth trying again (network trouble or a server error)."""
    return status in TRANSIENT_STATUSES or (status.startswith("http_5") and len(status) == 8)


@dataclass(frozen=True)
class ManifestRow:
    """One URL's outcome. Numbers are None where they do not apply (failed downloads).

    Args:
        url: The image URL as found on the results page.
        page: The results page it was found on.
        keyword: The search phrase.
        engine: The engine adapter's name.
        label: The class the keyword belongs to.
        sha256: Hex digest of the content (stored or duplicate images).
        bytes: Bytes received.
        width: Image width in pixels.
        height: Image height in pixels.
        fetched_at: UTC time of the download, ISO 8601.
        status: ``ok``, ``duplicate`` or a failure kind such as ``http_404`` or ``timeout``.
        reason: Human-readable detail of the status.
    """

    url: str
    page: str
    keyword: str
    engine: str
    label: str
    sha256: str | None
    bytes: int | None
    width: int | None
    height: int | None
    fetched_at: str
    status: str
    reason: str

    @property
    def key(self) -> tuple[str, str]:
        """Identity of a row: one row per URL and label."""
        return (self.label, self.url)

    def to_record(self) -> list[str]:
        """CSV fields, in :data:`COLUMNS` order, each on one line."""
        return [_one_line("" if value is None else str(value)) for value in asdict(self).values()]

    @classmethod
    def from_record(cls, record: dict[str, str]) -> ManifestRow:
        """Parse a CSV record (a ``csv.DictReader`` row).

        Raises:
            ValueError: A number column is not a number.
        """

        def number(name: str) -> int | None:
            text = record[name].strip()
            return int(text) if text else None

        return cls(
            url=record["url"],
            page=record["page"],
            keyword=record["keyword"],
            engine=record["engine"],
            label=record["label"],
            sha256=record["sha256"] or None,
            bytes=number("bytes"),
            width=number("width"),
            height=number("height"),
            fetched_at=record["fetched_at"],
            status=record["status"],
            reason=record["reason"],
        )


COLUMNS: tuple[str, ...] = tuple(item.name for item in fields(ManifestRow))


def _one_line(text: str) -> str:
    # Every row is one physical line, so cutting the file after its last newline removes exactly
    # a torn row.
    return " ".join(text.splitlines())


class ManifestError(RuntimeError):
    """The manifest exists but is not a scrape manifest (wrong header)."""


def read_manifest(path: Path) -> list[ManifestRow]:
    """All complete rows of a manifest, in file order; an absent file has none.

    A torn last line and rows that do not parse are skipped (with a warning).

    Raises:
        ManifestError: The header is not :data:`COLUMNS`.
    """
    if not path.exists():
        return []
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        # Cut before decoding: a torn line may end inside a multi-byte character.
        data = data[: data.rfind(b"\n") + 1]
        logger.warning("%s: dropped a torn last line (interrupted run)", path)
    text = data.decode("utf-8", errors="replace")
    if not text.strip():
        return []
    reader = csv.DictReader(io.StringIO(text))
    if tuple(reader.fieldnames or ()) != COLUMNS:
        raise ManifestError(f"{path}: not a scrape manifest; expected columns {', '.join(COLUMNS)}")
    rows = []
    for line_number, record in enumerate(reader, start=2):
        if None in record or any(value is None for value in record.values()):
            logger.warning("%s:%d: skipped a row with the wrong number of fields", path, line_number)
            continue
        try:
            rows.append(ManifestRow.from_record(record))
        except ValueError as error:
            logger.warning("%s:%d: skipped an unreadable row: %s", path, line_number, error)
    return rows


def latest_rows(rows: list[ManifestRow]) -> dict[tuple[str, str], ManifestRow]:
    """The last row of each (label, URL), in first-seen order."""
    latest: dict[tuple[str, str], ManifestRow] = {}
    for row in rows:
        latest[row.key] = row
    return latest


def _write_rows(path: Path, rows: list[ManifestRow]) -> None:
    def write(temporary: Path) -> None:
        with temporary.open("w", encoding="utf-8", newline="") as handle:
            writer = csv.writer(handle, lineterminator="\n")
            writer.writerow(COLUMNS)
            writer.writerows(row.to_record() for row in rows)

    atomic_write(path, write)


class ManifestWriter:
    """Appends rows to a manifest, thread-safely, flushing each one.

    Opening repairs a torn last line, so the next row does not merge into it; closing compacts the
    file to one row per (label, URL), atomically.

    Args:
        path: The manifest file; created with its header when absent.
    """

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self.previous = latest_rows(read_manifest(self.path))
        self._repair()
        self._handle: TextIO | None = self.path.open("a", encoding="utf-8", newline="")
        self._writer = csv.writer(self._handle, lineterminator="\n")
        if self.path.stat().st_size == 0:
            self._writer.writerow(COLUMNS)
            self._handle.flush()

    def _repair(self) -> None:
        if not self.path.exists():
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            _write_rows(self.path, list(self.previous.values()))

    def done(self, label: str, url: str) -> ManifestRow | None:
        """The previous run's final row of this URL, or None when it must be (re)tried."""
        row = self.previous.get((label, url))
        return row if row is not None and not is_transient(row.status) else None

    def append(self, row: ManifestRow) -> None:
        """Write one row and flush it to the operating system."""
        with self._lock:
            if self._handle is None:
                raise ValueError(f"{self.path}: manifest writer is closed")
            self._writer.writerow(row.to_record())
            self._handle.flush()

    def close(self) -> None:
        """Close the file and compact it to the latest row per (label, URL)."""
        with self._lock:
            if self._handle is None:
                return
            self._handle.close()
            self._handle = None
            _write_rows(self.path, list(latest_rows(read_manifest(self.path)).values()))

    def __enter__(self) -> ManifestWriter:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()


@dataclass
class ClassCounts:
    """Outcomes of one class's URLs in one run.

    Args:
        ok: Images downloaded and stored.
        duplicate: Images whose content was already stored under this label.
        skipped: URLs already final in the manifest from an earlier run (not fetched again).
        failed: Failed URLs per status (``http_404``, ``timeout``, ``undecodable``, ...).
    """

    ok: int = 0
    duplicate: int = 0
    skipped: int = 0
    failed: Counter[str] = field(default_factory=Counter)

    @property
    def fetched(self) -> int:
        """URLs downloaded (or attempted) in this run."""
        return self.ok + self.duplicate + sum(self.failed.values())


@dataclass
class ScrapeSummary:
    """What one ``scrape`` run did, per class, and how fast it downloaded.

    Args:
        classes: Per class (label) outcome counts.
        elapsed_seconds: Wall-clock time of the whole run (browsing and downloading).
        download_seconds: Time from the first download started to the last one finished.
    """

    classes: dict[str, ClassCounts] = field(default_factory=dict)
    elapsed_seconds: float = 0.0
    download_seconds: float = 0.0

    def record(self, label: str, status: str) -> None:
        """Count one URL's outcome (``skipped`` for URLs final in an earlier run)."""
        counts = self.classes.setdefault(label, ClassCounts())
        if status == STATUS_OK:
            counts.ok += 1
        elif status == STATUS_DUPLICATE:
            counts.duplicate += 1
        elif status == "skipped":
            counts.skipped += 1
        else:
            counts.failed[status] += 1

    @property
    def downloads(self) -> int:
        """URLs fetched in this run, whatever their outcome."""
        return sum(counts.fetched for counts in self.classes.values())

    @property
    def downloads_per_second(self) -> float:
        """Fetched URLs per second of download time (0 when nothing was fetched)."""
        return self.downloads / self.download_seconds if self.download_seconds > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready view: per class counts, totals and speed."""
        return {
            "classes": {
                label: {
                    "ok": counts.ok,
                    "duplicate": counts.duplicate,
                    "skipped": counts.skipped,
                    "failed": dict(sorted(counts.failed.items())),
                }
                for label, counts in self.classes.items()
            },
            "ok": sum(counts.ok for counts in self.classes.values()),
            "duplicate": sum(counts.duplicate for counts in self.classes.values()),
            "skipped": sum(counts.skipped for counts in self.classes.values()),
            "failed": sum(sum(counts.failed.values()) for counts in self.classes.values()),
            "downloads": self.downloads,
            "elapsed_seconds": round(self.elapsed_seconds, 3),
            "download_seconds": round(self.download_seconds, 3),
            "downloads_per_second": round(self.downloads_per_second, 3),
        }
