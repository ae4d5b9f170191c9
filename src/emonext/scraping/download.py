"""Image downloads: a thread pool of ``requests`` sessions, validation and content-addressed storage.

Every URL ends as a :class:`~emonext.scraping.manifest.ManifestRow`, never as an exception: network
trouble, HTTP errors and invalid content become a short machine-readable ``status`` with a human
``reason``:

=========================  ===========================================================
status                     meaning
=========================  ===========================================================
``ok``                     valid image, stored as ``<label>/<sha256>.<ext>``
``duplicate``              same content already stored under this label
``invalid_url``            not an http(s) URL
``timeout``                connect/read timed out, or the transfer took too long (retried)
``connection_error``       connection refused/reset/broken mid-body, proxy failure (retried)
``ssl_error``              TLS handshake or certificate failure
``redirect_error``         too many redirects
``request_error``          any other ``requests`` failure
``http_<code>``            answer other than 200 (429 and 5xx are retried)
``content_type_mismatch``  served as a non-image type (e.g. ``text/html``)
``too_large``              more than ``max_bytes`` (not read further)
``too_small``              fewer than ``min_bytes``
``not_image``              not JPEG, PNG, GIF, WebP or BMP by its magic bytes
``too_many_pixels``        more than ``max_pixels`` (checked from the header, before decoding)
``undecodable``            the image does not fully decode (truncated, corrupt)
=========================  ===========================================================

Stored files are named by content hash and the detected format's extension, never by anything in
the URL, and written through a temporary file plus rename: an interrupted run leaves no partial
image.
"""

from __future__ import annotations

import hashlib
import io
import logging
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import requests
from PIL import Image
from urllib3.exceptions import ReadTimeoutError

from emonext.config import DownloadConfig
from emonext.fileio import atomic_write
from emonext.scraping.manifest import STATUS_DUPLICATE, STATUS_OK, ManifestRow, is_transient

logger = logging.getLogger(__name__)

#: Pillow format name -> file extension of the formats kept.
IMAGE_EXTENSIONS: dict[str, str] = {"JPEG": "jpg", "PNG": "png", "GIF": "gif", "WEBP": "webp", "BMP": "bmp"}

#: Declared content types that say nothing about the content, so they are not a mismatch.
GENERIC_CONTENT_TYPES = frozenset(
    {"application/octet-stream", "binary/octet-stream", "application/binary", "application/x-binary"}
)

#: The whole transfer (headers and body) may take this many times ``download.timeout``: the
#: timeout itself applies per socket read, which a server trickling bytes never trips.
TRANSFER_TIME_FACTOR = 3.0

#: Upper bound on a server's ``Retry-After`` honoured between attempts, in seconds.
MAX_RETRY_AFTER = 60.0

#: Bytes read per chunk of a streamed body.
CHUNK_SIZE = 64 * 1024

#: Labels become folder names: lower-case letters, digits, ``_`` and ``-`` only.
LABEL_PATTERN = re.compile(r"^[a-z0-9][a-z0-9_-]*$")

_STORED_NAME = re.compile(r"^([0-9a-f]{64})\.(?:jpg|png|gif|webp|bmp)$")
# Temporary files of emonext.fileio.atomic_write: ".<final name>.<random>.tmp".
_TEMPORARY_NAME = re.compile(r"^\.[0-9a-f]{64}\.(?:jpg|png|gif|webp|bmp)\..+\.tmp$")


def sniff_format(head: bytes) -> str | None:
    """The image format (Pillow's name) announced by the first bytes, or None if not a kept format."""
    if head.startswith(b"\xff\xd8\xff"):
        return "JPEG"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "PNG"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "GIF"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "WEBP"
    if head.startswith(b"BM"):
        return "BMP"
    return None


@dataclass(frozen=True)
class FetchOutcome:
    """The result of fetching and validating one URL.

    Args:
        status: ``ok`` or a failure kind (see the module docstring).
        reason: Human-readable detail.
        data: The image bytes when ``status`` is ``ok``.
        image_format: Pillow format name when known.
        width: Image width when the header was read.
        height: Image height when the header was read.
        received_bytes: Bytes received (possibly partial when reading stopped early).
        retry_after: Seconds the server asked to wait before retrying (``Retry-After``).
    """

    status: str
    reason: str
    data: bytes | None = None
    image_format: str | None = None
    width: int | None = None
    height: int | None = None
    received_bytes: int | None = None
    retry_after: float | None = None

    @property
    def extension(self) -> str | None:
        """File extension of the detected format."""
        return IMAGE_EXTENSIONS.get(self.image_format or "")


def validate_image(data: bytes, config: DownloadConfig) -> FetchOutcome:
    """Check a complete download: size limits, magic bytes, pixel count, full decode.

    The pixel count is read from the header before anything is decoded, so a decompression bomb
    is rejected without allocating its pixels.

    Args:
        data: The response body.
        config: ``min_bytes``, ``max_bytes`` and ``max_pixels``.

    Returns:
        An ``ok`` outcome carrying the bytes, format and size, or the failure.
    """
    size = len(data)
    if size > config.max_bytes:
        return FetchOutcome("too_large", f"{size} bytes > max_bytes {config.max_bytes}", received_bytes=size)
    if size < config.min_bytes:
        return FetchOutcome("too_small", f"{size} bytes < min_bytes {config.min_bytes}", received_bytes=size)
    image_format = sniff_format(data[:16])
    if image_format is None:
        return FetchOutcome(
            "not_image", f"not JPEG/PNG/GIF/WebP/BMP: starts with {data[:8]!r}", received_bytes=size
        )
    width = height = None
    try:
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            width, height = image.size
            if width * height > config.max_pixels:
                return FetchOutcome(
                    "too_many_pixels",
                    f"{width}x{height} = {width * height} pixels > max_pixels {config.max_pixels}",
                    image_format=image_format,
                    width=width,
                    height=height,
                    received_bytes=size,
                )
            image.verify()
        # verify() leaves the image unusable and skips pixel data; a full load catches truncation.
        with Image.open(io.BytesIO(data), formats=[image_format]) as image:
            image.load()
    except Image.DecompressionBombError as error:
        return FetchOutcome("too_many_pixels", str(error), image_format=image_format, received_bytes=size)
    except Exception as error:  # Pillow's decoders raise assorted types on corrupt input.
        return FetchOutcome(
            "undecodable",
            f"{image_format} does not decode: {type(error).__name__}: {error}",
            image_format=image_format,
            width=width,
            height=height,
            received_bytes=size,
        )
    return FetchOutcome(
        STATUS_OK, "", data=data, image_format=image_format, width=width, height=height, received_bytes=size
    )


class HostRateLimiter:
    """Keeps at least ``min_interval`` seconds between two requests to the same host, across threads.

    Each caller reserves the next free slot of its host under a lock and sleeps outside it, so
    threads waiting for one host never block threads fetching from another.

    Args:
        min_interval: Minimum seconds between two requests to one host; 0 disables the limit.
    """

    def __init__(self, min_interval: float) -> None:
        self.min_interval = min_interval
        self._next_slot: dict[str, float] = {}
        self._lock = threading.Lock()

    def wait(self, url: str) -> None:
        """Block until a request to ``url``'s host is allowed."""
        if self.min_interval <= 0:
            return
        host = (urlsplit(url).hostname or "").lower()
        with self._lock:
            now = time.monotonic()
            slot = max(now, self._next_slot.get(host, now))
            self._next_slot[host] = slot + self.min_interval
        if slot > now:
            time.sleep(slot - now)


def make_session(config: DownloadConfig) -> requests.Session:
    """A ``requests`` session with the User-Agent and, when configured, the proxy for http and https."""
    session = requests.Session()
    session.headers["User-Agent"] = config.user_agent
    session.headers["Accept"] = "image/webp,image/png,image/jpeg,image/gif,image/bmp;q=0.9,*/*;q=0.5"
    if config.proxy:
        session.proxies = {"http": config.proxy, "https": config.proxy}
    return session


def _acceptable_content_type(content_type: str) -> bool:
    media_type = content_type.split(";", 1)[0].strip().lower()
    return not media_type or media_type.startswith("image/") or media_type in GENERIC_CONTENT_TYPES


def _retry_after_seconds(response: requests.Response) -> float | None:
    value = response.headers.get("Retry-After", "").strip()
    return float(value) if value.isdigit() else None


def _read_body(response: requests.Response, config: DownloadConfig, deadline: float) -> FetchOutcome | bytes:
    """The body, or a failure as soon as it is known (too large, not an image, too slow)."""
    body = bytearray()
    format_checked = False
    for chunk in response.iter_content(chunk_size=CHUNK_SIZE):
        body += chunk
        if len(body) > config.max_bytes:
            return FetchOutcome(
                "too_large", f"more than max_bytes {config.max_bytes} bytes", received_bytes=len(body)
            )
        if not format_checked and len(body) >= 16:
            format_checked = True
            if sniff_format(bytes(body[:16])) is None:
                return FetchOutcome(
                    "not_image",
                    f"not JPEG/PNG/GIF/WebP/BMP: starts with {bytes(body[:8])!r}",
                    received_bytes=len(body),
                )
        if time.monotonic() > deadline:
            return FetchOutcome(
                "timeout",
                f"transfer took longer than {TRANSFER_TIME_FACTOR:g} x timeout {config.timeout}s",
                received_bytes=len(body),
            )
    return bytes(body)


def _fetch_once(session: requests.Session, url: str, config: DownloadConfig) -> FetchOutcome:
    deadline = time.monotonic() + TRANSFER_TIME_FACTOR * config.timeout
    try:
        # Explicit per-request proxies: requests lets proxy environment variables override the
        # session's own proxies otherwise.
        proxies = dict(session.proxies) or None
        with session.get(
            url, timeout=(config.timeout, config.timeout), stream=True, proxies=proxies
        ) as response:
            if response.status_code != 200:
                return FetchOutcome(
                    f"http_{response.status_code}",
                    f"HTTP {response.status_code} {response.reason or ''}".strip(),
                    retry_after=_retry_after_seconds(response),
                )
            content_type = response.headers.get("Content-Type", "")
            if not _acceptable_content_type(content_type):
                return FetchOutcome("content_type_mismatch", f"served as {content_type}, not an image")
            length = response.headers.get("Content-Length", "").strip()
            if length.isdigit() and int(length) > config.max_bytes:
                return FetchOutcome("too_large", f"Content-Length {length} > max_bytes {config.max_bytes}")
            body = _read_body(response, config, deadline)
    except requests.exceptions.Timeout as error:
        return FetchOutcome("timeout", f"timed out after {config.timeout}s: {type(error).__name__}")
    except requests.exceptions.SSLError as error:
        return FetchOutcome("ssl_error", f"TLS failure: {error}")
    except requests.exceptions.ConnectionError as error:
        # requests reports a read timeout in the middle of the body as a ConnectionError.
        if isinstance(error.args[0] if error.args else None, ReadTimeoutError):
            return FetchOutcome("timeout", f"body read timed out after {config.timeout}s")
        return FetchOutcome("connection_error", f"{type(error).__name__}: {error}")
    except requests.exceptions.ChunkedEncodingError as error:
        # The connection broke mid-body (fewer bytes than announced): worth another try.
        return FetchOutcome("connection_error", f"incomplete body: {error}")
    except requests.exceptions.TooManyRedirects as error:
        return FetchOutcome("redirect_error", str(error))
    except (
        requests.exceptions.InvalidURL,
        requests.exceptions.MissingSchema,
        requests.exceptions.InvalidSchema,
        requests.exceptions.URLRequired,
    ) as error:
        return FetchOutcome("invalid_url", f"{type(error).__name__}: {error}")
    except requests.exceptions.RequestException as error:
        return FetchOutcome("request_error", f"{type(error).__name__}: {error}")
    if isinstance(body, FetchOutcome):
        return body
    return validate_image(body, config)


def fetch_image(
    session: requests.Session, url: str, config: DownloadConfig, limiter: HostRateLimiter
) -> FetchOutcome:
    """Download and validate one image URL, retrying transient failures with exponential back-off.

    Time-outs, connection errors, HTTP 429 and 5xx are tried ``config.retries`` more times, waiting
    ``backoff * 2**attempt`` seconds (or the server's ``Retry-After``, up to
    :data:`MAX_RETRY_AFTER`). Every attempt first waits for the host's per-host delay.

    Args:
        session: The calling thread's session (see :func:`make_session`).
        url: Absolute http(s) URL.
        config: Timeouts, retries, limits.
        limiter: Shared per-host rate limiter.

    Returns:
        The outcome of the last attempt; never raises for network or content problems.
    """
    if urlsplit(url).scheme.lower() not in ("http", "https"):
        return FetchOutcome("invalid_url", f"not an http(s) URL: {url[:80]}")
    attempt = 0
    while True:
        limiter.wait(url)
        outcome = _fetch_once(session, url, config)
        if not is_transient(outcome.status) or attempt >= config.retries:
            return outcome
        delay = config.backoff * 2**attempt
        if outcome.retry_after is not None:
            delay = max(delay, min(outcome.retry_after, MAX_RETRY_AFTER))
        logger.debug(
            "%s: %s (%s); retry %d in %.2fs", url, outcome.status, outcome.reason, attempt + 1, delay
        )
        time.sleep(delay)
        attempt += 1


def _write_file(path: Path, data: bytes) -> None:
    with path.open("wb") as handle:
        handle.write(data)


class ImageStore:
    """Content-addressed image folders: ``<output_dir>/<label>/<sha256>.<ext>``.

    Which hashes a label already holds is read from its folder (once, on first use), so content
    from an earlier run is recognised; temporary files left by a killed run are removed then.

    Args:
        output_dir: Root of the label folders.
    """

    def __init__(self, output_dir: Path) -> None:
        self.output_dir = Path(output_dir)
        self._hashes: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def folder(self, label: str) -> Path:
        """The folder of one label.

        Raises:
            ValueError: The label is not a safe folder name (see :data:`LABEL_PATTERN`).
        """
        if not LABEL_PATTERN.match(label):
            raise ValueError(f"label {label!r} is not a safe folder name (a-z, 0-9, _ and - only)")
        return self.output_dir / label

    def _known(self, label: str) -> set[str]:
        if label not in self._hashes:
            folder = self.folder(label)
            hashes: set[str] = set()
            if folder.is_dir():
                for path in folder.iterdir():
                    if _TEMPORARY_NAME.match(path.name):
                        path.unlink(missing_ok=True)
                        logger.info("removed %s left by an interrupted run", path)
                    elif matched := _STORED_NAME.match(path.name):
                        hashes.add(matched.group(1))
            self._hashes[label] = hashes
        return self._hashes[label]

    def has(self, label: str, sha256: str) -> bool:
        """Whether content with this hash is stored under ``label``."""
        with self._lock:
            return sha256 in self._known(label)

    def add(self, label: str, data: bytes, extension: str) -> tuple[str, bool]:
        """Store ``data`` under ``label`` unless the same content is already there.

        Args:
            label: Class folder.
            data: Validated image bytes.
            extension: Extension of the detected format (``jpg``, ``png``, ...).

        Returns:
            The content's SHA-256 hex digest and whether it was newly stored (False: duplicate).

        Raises:
            ValueError: The label or extension is not allowed.
            OSError: The file could not be written (nothing partial is left behind).
        """
        if extension not in IMAGE_EXTENSIONS.values():
            raise ValueError(f"extension {extension!r} is not one of {sorted(IMAGE_EXTENSIONS.values())}")
        sha256 = hashlib.sha256(data).hexdigest()
        with self._lock:
            known = self._known(label)
            if sha256 in known:
                return sha256, False
            # Claimed before writing, so a concurrent download of the same content is a duplicate.
            known.add(sha256)
        try:
            atomic_write(
                self.folder(label) / f"{sha256}.{extension}", lambda temporary: _write_file(temporary, data)
            )
        except BaseException:
            with self._lock:
                known.discard(sha256)
            raise
        return sha256, True


@dataclass(frozen=True)
class DownloadJob:
    """One image URL to fetch, with where it was found.

    Args:
        url: Absolute image URL.
        page: The results page it was found on.
        keyword: The search phrase.
        engine: Engine adapter name.
        label: Class folder the image belongs to.
    """

    url: str
    page: str
    keyword: str
    engine: str
    label: str


class Downloader:
    """Fetches :class:`DownloadJob` s in a thread pool, stores valid images and reports a row per job.

    Each worker thread has its own ``requests`` session (sessions are not thread-safe); all threads
    share the per-host rate limiter and the :class:`ImageStore`.

    Args:
        config: Download and validation settings (``workers`` threads).
        store: Where valid images go.
        on_row: Called (from a worker thread) with each job's manifest row as soon as it is done.
    """

    def __init__(
        self, config: DownloadConfig, store: ImageStore, on_row: Callable[[ManifestRow], None] | None = None
    ) -> None:
        self.config = config
        self.store = store
        self.on_row = on_row
        self.limiter = HostRateLimiter(config.per_host_delay)
        self._pool = ThreadPoolExecutor(max_workers=config.workers, thread_name_prefix="emonext-download")
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._lock = threading.Lock()
        self._first_start: float | None = None
        self._last_end: float | None = None

    def session(self) -> requests.Session:
        """The calling thread's session, created on first use."""
        session = getattr(self._local, "session", None)
        if session is None:
            session = make_session(self.config)
            self._local.session = session
            with self._lock:
                self._sessions.append(session)
        return session

    @property
    def active_seconds(self) -> float:
        """Seconds from the first job started to the last one finished (0 before any finished)."""
        if self._first_start is None or self._last_end is None:
            return 0.0
        return self._last_end - self._first_start

    def submit(self, job: DownloadJob) -> Future[ManifestRow]:
        """Queue one job; the future's result is its manifest row."""
        return self._pool.submit(self.run, job)

    def run(self, job: DownloadJob) -> ManifestRow:
        """Fetch, validate and store one job in the calling thread, and report its row.

        Raises:
            OSError: A valid image could not be written to disk.
        """
        with self._lock:
            if self._first_start is None:
                self._first_start = time.monotonic()
        outcome = fetch_image(self.session(), job.url, self.config, self.limiter)
        sha256 = None
        status, reason = outcome.status, outcome.reason
        if outcome.status == STATUS_OK and outcome.data is not None and outcome.extension is not None:
            sha256, stored = self.store.add(job.label, outcome.data, outcome.extension)
            stored_name = f"{job.label}/{sha256}.{outcome.extension}"
            if stored:
                reason = f"stored {stored_name}"
            else:
                status, reason = STATUS_DUPLICATE, f"same content as {stored_name}"
        row = ManifestRow(
            url=job.url,
            page=job.page,
            keyword=job.keyword,
            engine=job.engine,
            label=job.label,
            sha256=sha256,
            bytes=outcome.received_bytes,
            width=outcome.width,
            height=outcome.height,
            fetched_at=datetime.now(UTC).isoformat(timespec="seconds"),
            status=status,
            reason=reason,
        )
        if self.on_row is not None:
            self.on_row(row)
        with self._lock:
            self._last_end = time.monotonic()
        return row

    def close(self, cancel_pending: bool = False) -> None:
        """Wait for the running jobs (and, unless ``cancel_pending``, the queued ones); close sessions."""
        self._pool.shutdown(wait=True, cancel_futures=cancel_pending)
        with self._lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    def __enter__(self) -> Downloader:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, *exc_info: object) -> None:
        # On an interruption, finish what is running (its rows reach the manifest) and drop the rest.
        self.close(cancel_pending=exc_type is not None)
