"""Streaming video decode and encode through the ffmpeg binary that imageio-ffmpeg ships.

Why the ffmpeg binary and pipes rather than OpenCV's ``VideoCapture``/``VideoWriter``:

* ffmpeg applies the rotation a phone stores in the container (display matrix) while decoding
  (``autorotate``), so portrait videos come out upright; OpenCV's handling depends on its build.
* Every frame's real presentation time is known: decoding runs with ``-fps_mode passthrough``
  (no frame is dropped or duplicated) behind the ``showinfo`` filter, whose per-frame log line
  (``n: ... pts_time: ... s:WxH``) is read from stderr. Variable-frame-rate phone videos thus get
  their true timestamps.
* Only a bounded number of frames is ever in memory: ffmpeg writes raw ``bgr24`` frames into a
  pipe that blocks when nobody reads, so memory stays flat with the video's length.
* The output is H.264 (libx264, ``yuv420p``, even dimensions, playable everywhere) and the
  original audio stream is copied packet for packet (``-c:a copy``) in the same command.

There is no ``ffprobe`` in imageio-ffmpeg, so :func:`probe_video` reads what ``ffmpeg -i``
prints about the input.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import re
import subprocess
import tempfile
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np

logger = logging.getLogger(__name__)

#: x264 speed/size trade-off: ``veryfast`` encodes several times faster than ``medium`` at a
#: slightly larger file, which matters on two cores shared with detection and the network.
X264_PRESET = "veryfast"
#: x264 constant quality (lower is better; 23 is x264's default, visually clean for overlays).
X264_CRF = 23
#: Audio codecs an MP4/MOV file can carry as they are; others are re-encoded to AAC there.
MP4_AUDIO_CODECS = frozenset({"aac", "mp3", "ac3", "eac3", "alac", "opus", "flac"})
#: Containers chosen from the output suffix (ffmpeg needs ``-f`` for the temporary file name).
CONTAINERS = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska"}
#: Lines of ffmpeg's error output quoted in error messages.
QUOTED_LINES = 6

_SHOWINFO = re.compile(
    r"Parsed_showinfo.*\bn:\s*(\d+)\s+pts:\s*(-?\d+)\s+pts_time:(-?[\d.e+-]+).*?\bs:(\d+)x(\d+)"
)
_SAR = re.compile(r"\bsar:(\d+)/(\d+)")
_TIME_BASE = re.compile(r"Parsed_showinfo.*config in time_base:\s*(\d+)/(\d+)")
_DURATION = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_START = re.compile(r"start:\s*(-?\d+(?:\.\d+)?)")
_VIDEO = re.compile(r"Stream #0:(\d+)\S*: Video: (\w+)(.*)")
_AUDIO = re.compile(r"Stream #0:(\d+)\S*: Audio: (\w+)")
_SIZE = re.compile(r",\s*(\d{1,5})x(\d{1,5})\b")
_FPS = re.compile(r"([\d.]+)\s*(k?)\s*fps\b")
_TBR = re.compile(r"([\d.]+)\s*(k?)\s*tbr\b")
_ROTATION = re.compile(r"rotation of (-?[\d.]+) degrees", re.IGNORECASE)
_LEVEL = re.compile(r"\[(error|fatal|panic)\]")


class VideoError(ValueError):
    """A video cannot be read or written; the message names the file and quotes ffmpeg."""


def ffmpeg_exe() -> str:
    """The ffmpeg binary (imageio-ffmpeg's static build, or ``IMAGEIO_FFMPEG_EXE``).

    Raises:
        VideoError: imageio-ffmpeg is missing or has no binary for this platform.
    """
    try:
        import imageio_ffmpeg
    except ImportError as error:  # a declared dependency; a broken install is a user problem
        raise VideoError(f"imageio-ffmpeg is not installed ({error}): pip install imageio-ffmpeg") from None
    try:
        return imageio_ffmpeg.get_ffmpeg_exe()
    except RuntimeError as error:
        raise VideoError(f"no ffmpeg binary available: {error}") from None


@dataclass(frozen=True)
class VideoInfo:
    """What ``ffmpeg -i`` says about a video file.

    Attributes:
        path: The file.
        width: Stored width of the first video stream (before rotation).
        height: Stored height.
        rotation: Display rotation in degrees from the container's display matrix (0 when none).
        codec: Video codec name (``h264``, ``hevc``...).
        duration: Container duration in seconds; None when unknown (some streams).
        start: Container start time in seconds.
        fps: Average frame rate (frames / duration); None when unknown.
        tbr: ffmpeg's guess of the stream's base frame rate; None when unknown.
        audio_codec: Codec of the first audio stream; None without audio.
    """

    path: Path
    width: int
    height: int
    rotation: float
    codec: str
    duration: float | None
    start: float
    fps: float | None
    tbr: float | None
    audio_codec: str | None

    @property
    def has_audio(self) -> bool:
        return self.audio_codec is not None

    @property
    def display_size(self) -> tuple[int, int]:
        """(width, height) as shown: swapped for a rotation of +-90 degrees."""
        if round(abs(self.rotation)) % 180 == 90:
            return self.height, self.width
        return self.width, self.height

    @property
    def frame_rate(self) -> float:
        """The constant rate the annotated output is encoded at.

        The base rate (``tbr``) when it agrees with the average rate, which is the case for
        constant-rate files, so every input frame gets exactly one output frame; the average rate
        when ``tbr`` is much higher (variable-rate phone videos whose timestamps are on a fine
        grid), so frames are not multiplied. 25 when neither is known.
        """
        if self.tbr and (not self.fps or self.tbr <= 1.5 * self.fps):
            return self.tbr
        return self.fps or self.tbr or 25.0

    @property
    def expected_frames(self) -> int | None:
        """Frame count estimated from duration and rate (for progress bars); None if unknown."""
        if self.duration is None:
            return None
        return max(1, round(self.duration * (self.fps or self.frame_rate)))


def probe_video(path: Path) -> VideoInfo:
    """Read a video's size, rotation, rates, duration and audio codec from ``ffmpeg -i``.

    Raises:
        VideoError: The file is missing, not a media file ffmpeg can open, or has no video stream.
    """
    path = Path(path)
    if not path.is_file():
        raise VideoError(f"{path}: no such video file")
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", str(path)],
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    text = result.stderr
    video = _VIDEO.search(text)
    if video is None:
        problems = [
            _strip_tags(line)
            for line in text.splitlines()
            if line.strip() and not line.startswith((" ", "Input #", "At least one output"))
        ]
        detail = "; ".join(problems[:QUOTED_LINES]) or "ffmpeg found no video stream"
        raise VideoError(f"{path}: not a readable video ({detail})")
    rest = video.group(3)
    size = _SIZE.search(rest)
    if size is None:
        raise VideoError(f"{path}: not a readable video (ffmpeg reports no frame size: {video.group(0)})")
    duration = _DURATION.search(text)
    start = _START.search(text)
    rotation = _ROTATION.search(text[video.start() :])
    audio = _AUDIO.search(text)
    return VideoInfo(
        path=path,
        width=int(size.group(1)),
        height=int(size.group(2)),
        rotation=float(rotation.group(1)) if rotation else 0.0,
        codec=video.group(2),
        duration=(
            int(duration.group(1)) * 3600 + int(duration.group(2)) * 60 + float(duration.group(3))
            if duration
            else None
        ),
        start=float(start.group(1)) if start else 0.0,
        fps=_rate(_FPS.search(rest)),
        tbr=_rate(_TBR.search(rest)),
        audio_codec=audio.group(2) if audio else None,
    )


def _rate(match: re.Match[str] | None) -> float | None:
    if match is None:
        return None
    value = float(match.group(1)) * (1000.0 if match.group(2) else 1.0)
    return value if value > 0 else None


@dataclass
class DecodedFrame:
    """One decoded frame.

    Attributes:
        index: Position in decoding order, from 0.
        time: Presentation time in seconds from the start of the file (real, also for VFR).
        image: uint8 BGR (H, W, 3), upright (rotation applied), writable.
        sar: Sample (pixel) aspect ratio as (num, den).
    """

    index: int
    time: float
    image: np.ndarray
    sar: tuple[int, int] = (1, 1)


class FrameReader:
    """Decode a video frame by frame through an ffmpeg pipe (iterate it once).

    Args:
        path: The video.
        strict: Treat any decoding error ffmpeg reports (corrupt or truncated data) as fatal:
            ffmpeg stops at the first one (``-xerror``) and iteration raises :class:`VideoError`.
            When False, errors are logged, damaged frames are concealed by the decoder, and
            :attr:`errors` lists what ffmpeg said.

    Attributes:
        decode_seconds: Time spent waiting for frames (decoding runs in the ffmpeg process).
        frames: Frames yielded so far.
        errors: ffmpeg's error lines.
    """

    def __init__(self, path: Path, strict: bool = True) -> None:
        self.path = Path(path)
        self.strict = strict
        self.decode_seconds = 0.0
        self.frames = 0
        self.errors: list[str] = []
        self._started = False

    def command(self) -> list[str]:
        """The ffmpeg command line (``-loglevel level+info`` tags each line with its level)."""
        return [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "level+info",
            *(["-xerror"] if self.strict else []),
            "-i",
            str(self.path),
            "-map",
            "0:v:0",
            "-an",
            "-sn",
            "-dn",
            "-fps_mode",
            "passthrough",
            "-vf",
            "showinfo",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "pipe:1",
        ]

    def __iter__(self) -> Iterator[DecodedFrame]:
        if self._started:
            raise RuntimeError(f"{self.path}: a FrameReader can be iterated once")
        self._started = True
        return self._frames()

    def _frames(self) -> Iterator[DecodedFrame]:
        process = subprocess.Popen(
            self.command(), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        assert process.stdout is not None and process.stderr is not None
        infos: queue.Queue[tuple[int, float, int, int, tuple[int, int]] | None] = queue.Queue()
        tail: deque[str] = deque(maxlen=40)
        drain = threading.Thread(
            target=self._read_log, args=(process.stderr, infos, tail), name="ffmpeg-log", daemon=True
        )
        drain.start()
        finished = False
        try:
            while True:
                started = time.perf_counter()
                info = infos.get()
                if info is None:
                    break
                _, pts_time, width, height, sar = info
                image = _read_exactly(process.stdout, width * height * 3)
                self.decode_seconds += time.perf_counter() - started
                if image is None:
                    break
                frame = DecodedFrame(self.frames, pts_time, image.reshape(height, width, 3), sar)
                self.frames += 1
                yield frame
            leftover = process.stdout.read(1)
            returncode = process.wait()
            drain.join()
            finished = True
        finally:
            if not finished:  # the consumer stopped early or failed: stop ffmpeg too
                process.kill()
                process.wait()
                drain.join(timeout=5)
            process.stdout.close()
            process.stderr.close()
        if returncode != 0 or (self.strict and self.errors):
            raise VideoError(self._describe_failure(returncode, list(tail)))
        if self.errors:
            logger.warning(
                "%s: ffmpeg reported %d decoding error(s), damaged frames were concealed: %s",
                self.path,
                len(self.errors),
                self.errors[0],
            )
        if leftover:
            raise VideoError(f"{self.path}: ffmpeg wrote more frame data than it announced (a bug)")
        if self.frames == 0:
            raise VideoError(f"{self.path}: ffmpeg decoded no video frame from this file")

    def _read_log(
        self,
        stream: IO[bytes],
        infos: queue.Queue[tuple[int, float, int, int, tuple[int, int]] | None],
        tail: deque[str],
    ) -> None:
        time_base: tuple[int, int] | None = None
        try:
            for raw in stream:
                line = raw.decode("utf-8", "replace").rstrip()
                match = _SHOWINFO.search(line)
                if match:
                    sar = _SAR.search(line)
                    ratio = (int(sar.group(1)), int(sar.group(2))) if sar else (1, 1)
                    # pts x time base is exact; pts_time is printed with 6 significant digits.
                    seconds = (
                        int(match.group(2)) * time_base[0] / time_base[1]
                        if time_base
                        else float(match.group(3))
                    )
                    infos.put(
                        (
                            int(match.group(1)),
                            seconds,
                            int(match.group(4)),
                            int(match.group(5)),
                            ratio if ratio[0] > 0 and ratio[1] > 0 else (1, 1),
                        )
                    )
                    continue
                if "Parsed_showinfo" in line:
                    base = _TIME_BASE.search(line)
                    if base and int(base.group(2)) > 0:
                        time_base = (int(base.group(1)), int(base.group(2)))
                    continue  # side data, colour info of the frame just announced
                tail.append(line)
                # The raw output's own timestamps are unused (showinfo gives the real ones), so the
                # muxer's complaints about repeated ones (at joins of concatenated files) are not
                # decoding errors.
                if _LEVEL.search(line) and "to muxer" not in line:
                    self.errors.append(_strip_tags(line))
        finally:
            infos.put(None)

    def _describe_failure(self, returncode: int, tail: list[str]) -> str:
        quoted = self.errors[:QUOTED_LINES] or [_strip_tags(line) for line in tail[-QUOTED_LINES:]]
        where = f" after {self.frames} frame(s)" if self.frames else ""
        detail = "; ".join(quoted) or f"ffmpeg exited with status {returncode}"
        return f"{self.path}: corrupt or unreadable video{where} ({detail})"


def _strip_tags(line: str) -> str:
    """``[h264 @ 0x55..] [error] text`` -> ``h264: text``."""
    source = re.match(r"\[(\w[\w:#/,. -]*?) @ 0x[0-9a-f]+\]", line)
    text = re.sub(r"\[[^\]]*\]\s*", "", line).strip()
    return f"{source.group(1)}: {text}" if source else text


def _read_exactly(stream: IO[bytes], size: int) -> np.ndarray | None:
    """``size`` bytes from a pipe into a new writable array; None at end of stream."""
    buffer = bytearray(size)
    view = memoryview(buffer)
    filled = 0
    while filled < size:
        count = stream.readinto(view[filled:])  # type: ignore[attr-defined]
        if not count:
            return None
        filled += count
    return np.frombuffer(buffer, dtype=np.uint8)


class FrameWriter:
    """Encode BGR frames to H.264 through an ffmpeg pipe, copying the source's audio stream.

    Frames are written at a constant ``rate``; :meth:`write_at` places a frame at its real time
    by repeating the previous frame over gaps and skipping frames that fall on an occupied slot,
    as ffmpeg's ``-fps_mode cfr`` does, so picture and sound stay in sync for variable-rate
    inputs (for constant-rate inputs every frame gets exactly one slot).

    Args:
        path: Output file (its suffix picks the container: .mp4, .m4v, .mov, .mkv).
        width: Frame width in pixels (odd sizes are padded by one pixel: yuv420p needs even).
        height: Frame height.
        rate: Output frames per second.
        audio_from: File whose first audio stream is copied into the output, or None.
        audio_codec: That stream's codec (decides whether it can be copied into the container).
        sar: Pixel aspect ratio of the frames, kept in the output.

    Attributes:
        encode_seconds: Time spent handing frames to the encoder (it blocks when x264 is behind).
        written: Frames written (after repetitions and skips).
    """

    def __init__(
        self,
        path: Path,
        width: int,
        height: int,
        rate: float,
        audio_from: Path | None = None,
        audio_codec: str | None = None,
        sar: tuple[int, int] = (1, 1),
    ) -> None:
        self.path = Path(path)
        self.width, self.height, self.rate = width, height, rate
        self.encode_seconds = 0.0
        self.written = 0
        self.skipped = 0
        self.repeated = 0
        self._previous: np.ndarray | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - ffmpeg's stderr; closed by close()/abort()
        self.audio_copied = False
        command = self._command(audio_from, audio_codec, sar)
        logger.debug("encoding: %s", " ".join(command))
        self._process = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=self._log
        )

    def _command(self, audio_from: Path | None, audio_codec: str | None, sar: tuple[int, int]) -> list[str]:
        container = CONTAINERS.get(self.path.suffix.lower())
        if container is None:
            raise VideoError(
                f"{self.path}: unsupported output type {self.path.suffix!r}; "
                f"use one of {', '.join(CONTAINERS)}"
            )
        command = [
            ffmpeg_exe(),
            "-hide_banner",
            "-nostdin",
            "-nostats",
            "-loglevel",
            "error",
            "-y",
            "-f",
            "rawvideo",
            "-pix_fmt",
            "bgr24",
            "-s",
            f"{self.width}x{self.height}",
            "-framerate",
            f"{self.rate:.6f}",
            "-i",
            "pipe:0",
        ]
        if audio_from is not None:
            command += ["-i", str(audio_from)]
        command += [
            "-map",
            "0:v:0",
            "-vf",
            f"pad=ceil(iw/2)*2:ceil(ih/2)*2,setsar={sar[0]}/{sar[1]}",
            "-c:v",
            "libx264",
            "-preset",
            X264_PRESET,
            "-crf",
            str(X264_CRF),
            "-pix_fmt",
            "yuv420p",
        ]
        if audio_from is not None:
            command += ["-map", "1:a:0?"]
            if container != "mp4" or audio_codec in MP4_AUDIO_CODECS:
                command += ["-c:a", "copy"]
                self.audio_copied = True
            else:
                logger.warning(
                    "%s audio cannot be stored in %s as it is: re-encoding it to AAC "
                    "(use a .mkv or .mov output to keep it bit for bit)",
                    audio_codec,
                    self.path.suffix,
                )
                command += ["-c:a", "aac", "-b:a", "192k"]
        if container in ("mp4", "mov"):
            command += ["-movflags", "+faststart"]
        return [*command, "-f", container, str(self.path)]

    def write(self, image: np.ndarray) -> None:
        """Append one frame (uint8 BGR, ``height`` x ``width``) at the next slot."""
        if image.shape != (self.height, self.width, 3) or image.dtype != np.uint8:
            raise ValueError(
                f"frame {image.dtype} {image.shape} does not match the video ({self.height}, {self.width}, 3)"
            )
        started = time.perf_counter()
        assert self._process.stdin is not None
        try:
            self._process.stdin.write(memoryview(np.ascontiguousarray(image)).cast("B"))
        except (BrokenPipeError, OSError):
            self._process.wait()
            raise VideoError(f"{self.path}: encoding failed ({self._errors()})") from None
        finally:
            self.encode_seconds += time.perf_counter() - started
        self.written += 1

    def write_at(self, image: np.ndarray, time_s: float) -> None:
        """Place a frame at its presentation time (seconds from the file's start).

        The frame takes slot ``round(time_s * rate)``; slots left empty before it repeat the
        previous frame (or this one, before the first), and a frame whose slot is already
        filled is skipped.
        """
        slot = max(0, round(time_s * self.rate))
        if slot < self.written:
            self.skipped += 1
            return
        filler = self._previous if self._previous is not None else image
        while self.written < slot:
            self.write(filler)
            self.repeated += 1
        self.write(image)
        self._previous = image

    def close(self) -> None:
        """Finish the file.

        Raises:
            VideoError: ffmpeg failed (its message is quoted).
        """
        started = time.perf_counter()
        assert self._process.stdin is not None
        with contextlib.suppress(BrokenPipeError, OSError):  # ffmpeg died: its exit status says why
            self._process.stdin.close()
        returncode = self._process.wait()
        self.encode_seconds += time.perf_counter() - started
        errors = self._errors()
        self._log.close()
        if returncode != 0:
            raise VideoError(f"{self.path}: encoding failed ({errors or f'ffmpeg exit status {returncode}'})")

    def abort(self) -> None:
        """Stop ffmpeg without finishing the file (the caller deletes it)."""
        if self._process.poll() is None:
            self._process.kill()
        self._process.wait()
        if not self._log.closed:
            self._log.close()

    def _errors(self) -> str:
        if self._log.closed:
            return ""
        self._log.seek(0)
        lines = self._log.read().decode("utf-8", "replace").strip().splitlines()
        return "; ".join(lines[-QUOTED_LINES:])


def stream_md5(path: Path, selector: str = "a:0") -> str:
    """MD5 of one stream's packets as stored (``-c copy -f md5``): equal means bit-for-bit equal.

    Args:
        path: Media file.
        selector: Stream specifier, e.g. ``a:0`` (first audio) or ``v:0``.

    Raises:
        VideoError: The stream does not exist or ffmpeg fails.
    """
    result = subprocess.run(
        [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-i", str(path),
         "-map", f"0:{selector}", "-c", "copy", "-f", "md5", "-"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    if result.returncode != 0 or not result.stdout.startswith("MD5="):
        raise VideoError(
            f"{path}: cannot hash stream {selector} ({result.stderr.strip() or 'no such stream'})"
        )
    return result.stdout.strip().removeprefix("MD5=")


__all__ = [
    "DecodedFrame",
    "FrameReader",
    "FrameWriter",
    "VideoError",
    "VideoInfo",
    "ffmpeg_exe",
    "probe_video",
    "stream_md5",
]
