"""Streaming multipart uploads with a size limit and content sniffing.

FastAPI's ``UploadFile`` parameters are only filled after the whole request body has been read
and spooled, so an oversized upload would be read completely before it could be refused. Here the
body is parsed while it arrives: the declared ``Content-Length`` is checked before anything is
read, and the bytes actually received are counted, so a lying or chunked client is stopped at the
limit too. The file part goes straight to disk; nothing is kept in memory.
"""

from __future__ import annotations

import contextlib
import re
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO, Literal

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

MediaKind = Literal["image", "video"]

#: Multipart framing (boundaries, part headers, a small extra field) allowed on top of the file
#: itself before the request as a whole counts as too large.
MULTIPART_SLACK = 64 * 1024

#: Formats accepted per upload kind, as shown to the user.
ACCEPTED = {
    "image": "JPEG, PNG, GIF, WebP, BMP or TIFF",
    "video": "MP4, MOV, M4V, WebM, MKV or AVI",
}


class UploadError(Exception):
    """An upload the app refuses; ``message`` is shown to the user as it is.

    Args:
        status: HTTP status (400 bad or wrong kind of file, 413 too large).
        message: A sentence naming the file and what to do.
    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


@dataclass(frozen=True)
class Upload:
    """One received file.

    Attributes:
        filename: The name the user's file had (without folders), for messages.
        content_type: The type the client declared (may be wrong; :func:`sniff` decides).
        path: Where it was written.
        size: Its size in bytes.
    """

    filename: str
    content_type: str
    path: Path
    size: int


def display_name(raw: str | None) -> str:
    """A file name safe to show: no folders (old browsers send full paths), no control characters."""
    name = re.split(r"[\\/]", raw or "")[-1]
    name = "".join(char for char in name if char.isprintable()).strip()
    if len(name) > 80:
        name = name[:77] + "..."
    return name or "the uploaded file"


def format_mb(size: float) -> str:
    """Bytes as megabytes for people: ``0.01 MB``, ``2.5 MB``, ``200 MB``."""
    megabytes = size / (1024 * 1024)
    return f"{megabytes:.3g} MB" if megabytes < 10 else f"{megabytes:.0f} MB"


def sniff(head: bytes) -> str | None:
    """The container format of a file from its first bytes (its magic), or None.

    Returns:
        ``jpeg``, ``png``, ``gif``, ``webp``, ``bmp``, ``tiff`` (images) or ``mp4``, ``webm``,
        ``avi`` (videos; ``mp4`` covers QuickTime/MOV/M4V/3GP, ``webm`` covers Matroska).
    """
    if head.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if head.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if head[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "webp"
    if head[:4] == b"RIFF" and head[8:12] == b"AVI ":
        return "avi"
    if head[:2] == b"BM" and len(head) >= 26:
        return "bmp"
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    # ISO base media (MP4, MOV, M4V, 3GP): a box size, then the box type; QuickTime files may
    # start with other top-level boxes than ``ftyp``.
    if head[4:8] in (b"ftyp", b"moov", b"mdat", b"wide", b"free", b"skip"):
        return "mp4"
    if head.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    return None


KIND_OF_FORMAT: dict[str, MediaKind] = {
    "jpeg": "image",
    "png": "image",
    "gif": "image",
    "webp": "image",
    "bmp": "image",
    "tiff": "image",
    "mp4": "video",
    "webm": "video",
    "avi": "video",
}


def check_kind(upload: Upload, kind: MediaKind) -> str:
    """Make sure ``upload`` is a non-empty image (or video) by its content, whatever its name says.

    Returns:
        The sniffed format (see :func:`sniff`).

    Raises:
        UploadError: 400 for an empty file or anything that is not the expected kind.
    """
    if upload.size == 0:
        raise UploadError(400, f"{upload.filename} is empty (0 bytes): choose another file.")
    with upload.path.open("rb") as handle:
        head = handle.read(32)
    found = sniff(head)
    if found is not None and KIND_OF_FORMAT[found] == kind:
        return found
    if found is not None:
        what = f"a {KIND_OF_FORMAT[found]}"
        hint = " Use the Image tab for photos." if kind == "video" else " Use the Video tab for videos."
    else:
        what = "text" if _looks_like_text(head) else "not a format this app reads"
        hint = ""
    raise UploadError(
        400,
        f"{upload.filename} is not {'an' if kind == 'image' else 'a'} {kind} file ({what}). "
        f"Please choose a {ACCEPTED[kind]} file.{hint}",
    )


def _looks_like_text(head: bytes) -> bool:
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _FilePartWriter:
    """Callbacks for :class:`MultipartParser` that write the first file part named ``field``."""

    def __init__(self, field: str, target: Path, limit: int) -> None:
        self.field = field
        self.target = target
        self.limit = limit
        self.filename: str | None = None
        self.content_type = ""
        self.size = 0
        self.done = False
        self.pending: list[bytes] = []
        self._header_name = b""
        self._header_value = b""
        self._headers: dict[bytes, bytes] = {}
        self._active = False

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_header_field": self._header_field,
            "on_header_value": self._header_value_cb,
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._active = False

    def _header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _header_value_cb(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _header_end(self) -> None:
        self._headers[self._header_name.lower()] = self._header_value
        self._header_name, self._header_value = b"", b""

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get(b"content-disposition", b""))
        name = options.get(b"name", b"").decode("utf-8", "replace")
        if self.done or name != self.field or not options.get(b"filename"):
            # Other fields, extra files and an empty file input (browsers send filename="") are
            # ignored; their bytes still count towards the limit.
            return
        self._active = True
        self.filename = display_name(options[b"filename"].decode("utf-8", "replace"))
        self.content_type = self._headers.get(b"content-type", b"").decode("latin-1").strip()

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if not self._active:
            return
        self.size += end - start
        if self.size > self.limit:
            raise UploadError(
                413,
                f"{self.filename} is too large: the limit is {format_mb(self.limit)}. "
                "Please choose a smaller file.",
            )
        self.pending.append(bytes(data[start:end]))

    def _part_end(self) -> None:
        if self._active:
            self._active = False
            self.done = True


async def receive_upload(request: Request, folder: Path, limit: int, field: str = "file") -> Upload:
    """Stream the file field of a multipart request to ``folder``, refusing it past ``limit`` bytes.

    Args:
        request: The incoming request (``multipart/form-data``).
        folder: Where the file is written, under a random name (never the client's).
        limit: Largest accepted file, in bytes.
        field: Form field holding the file.

    Returns:
        The received file.

    Raises:
        UploadError: 413 when the declared or received size exceeds ``limit`` (raised before the
            rest of the body is read); 400 when the request is not a multipart upload with a file.
    """
    content_type, options = parse_options_header(request.headers.get("content-type", ""))
    if content_type != b"multipart/form-data" or b"boundary" not in options:
        raise UploadError(400, f"Send the file as a multipart/form-data upload in the form field '{field}'.")
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit + MULTIPART_SLACK:
        raise UploadError(
            413,
            f"The upload ({format_mb(int(declared))}) is too large: the limit is {format_mb(limit)}. "
            "Please choose a smaller file.",
        )
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / uuid.uuid4().hex
    writer = _FilePartWriter(field, target, limit)
    parser = MultipartParser(options[b"boundary"], writer.callbacks())  # type: ignore[arg-type]
    received = 0
    handle: BinaryIO = target.open("wb")
    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit + MULTIPART_SLACK:
                name = writer.filename or "The upload"
                raise UploadError(
                    413,
                    f"{name} is too large: the limit is {format_mb(limit)}. Please choose a smaller file.",
                )
            parser.write(chunk)
            if writer.pending:
                blocks, writer.pending = writer.pending, []
                # Disk writes off the event loop: other requests (progress polls) keep flowing.
                await run_in_threadpool(handle.writelines, blocks)
        parser.finalize()
    except FormParserError:
        handle.close()
        target.unlink(missing_ok=True)
        raise UploadError(400, "The upload was not valid multipart/form-data; please try again.") from None
    except ClientDisconnect:
        handle.close()
        target.unlink(missing_ok=True)
        raise UploadError(400, "The upload was interrupted before it finished; please try again.") from None
    except BaseException:
        handle.close()
        target.unlink(missing_ok=True)
        raise
    handle.close()
    if writer.filename is None:
        target.unlink(missing_ok=True)
        raise UploadError(400, f"No file was uploaded (form field '{field}'): choose a file and try again.")
    return Upload(writer.filename, writer.content_type, target, writer.size)


def remove_quietly(path: Path) -> None:
    """Delete a file if it is there; a failure to clean up never hides the real answer."""
    with contextlib.suppress(OSError):
        path.unlink(missing_ok=True)
