"""The cleaning steps: decode, size check, face crop, blur, grayscale, resize, duplicates, labels.

Every input image (or FER2013 CSV row) ends as one or more manifest rows with a fate (``kept``
or ``dropped``) and, when dropped, the reason, named after the step that dropped it:

=================  ================================================================================
reason             step
=================  ================================================================================
``malformed_row``  a FER2013 CSV row that cannot be read (wrong field count, bad pixels ...)
``undecodable``    not an image, truncated, empty file
``too_large``      more pixels than :data:`MAX_PIXELS` (decompression bombs)
``too_small``      image (or face window) with a side below ``clean.min_side``
``no_face``        the Haar cascade found no face (sources with ``pre_cropped: true`` skip this)
``blurry``         variance of the Laplacian of the face below ``clean.blur_threshold``
``duplicate``      same processed pixels (SHA-256) as a face kept before it
``near_duplicate`` perceptual hash within ``clean.near_duplicate_distance`` of a face kept before it
``label_conflict`` the same or a near-same face under two labels: every copy is dropped
=================  ================================================================================

Sources are read in priority order and the first copy of a duplicate wins, so a scraped copy of a
FER2013 face is not added twice. Decoding, face detection and hashing run in shards
(:class:`CleanShard`, planned by :func:`plan_shards`, each processed by :func:`process_shard`): in
a process pool of ``clean.workers`` by default, or wherever the caller's ``map_shards`` runs them
(the Prefect clean task: one task run per shard on a process, thread or Ray task runner). The
duplicate search runs in the caller on the collected hashes (:mod:`emonext.cleaning.hashing`),
in item order, so the outputs are the same whatever ran the shards and however many there were.
Faces are written as PNG into a staging folder that replaces ``clean.output_dir`` only when
everything succeeded, so a re-run never mixes old and new outputs.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import multiprocessing
import os
import socket
import threading
import time
import warnings
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import cv2
import numpy as np
from PIL import ExifTags, Image, ImageDraw, ImageOps, UnidentifiedImageError
from tqdm import tqdm

from emonext.cleaning.faces import FaceDetector, HaarFaceDetector, crop_face, resolve_cascade, select_faces
from emonext.cleaning.hashing import connected_components as link_components
from emonext.cleaning.hashing import content_sha256, hash_to_hex, near_duplicate_graph, perceptual_hash
from emonext.config import CleanConfig, DataConfig, FaceDetectionConfig, SourceConfig
from emonext.data.fer_csv import read_fer2013_csv
from emonext.data.folders import UNSPLIT, scan_image_folders
from emonext.fileio import staged_directory, write_atomically, write_json

logger = logging.getLogger(__name__)

#: Drop reasons in pipeline order (the order of the report's rows).
REASONS: tuple[str, ...] = (
    "malformed_row",
    "undecodable",
    "too_large",
    "too_small",
    "no_face",
    "blurry",
    "duplicate",
    "near_duplicate",
    "label_conflict",
)
KEPT, DROPPED = "kept", "dropped"
MANIFEST_COLUMNS: tuple[str, ...] = (
    "path",
    "label",
    "source",
    "original",
    "usage",
    "face",
    "box",
    "blur",
    "phash",
    "sha256",
    "fate",
    "reason",
    "detail",
    "duplicate_of",
    "group",
)
MANIFEST_FILE = "manifest.csv"
IMAGES_DIR = "images"

#: Images declaring more pixels are dropped as ``too_large`` before decoding (decompression bombs).
MAX_PIXELS = 64_000_000
#: Large JPEGs are decoded at a reduced scale (libjpeg's DCT scaling, several times faster) that
#: keeps the longer side at least this multiple of ``face.detect_max_side``: every face the
#: cascade can find at the detection resolution is cut from at least twice as many pixels.
DRAFT_FACTOR = 2
#: Blur is measured on the face resized to this side (FER2013's resolution), so the threshold
#: means the same for a 48-pixel FER2013 face and a 900-pixel face from a web photo.
BLUR_SIDE = 48
#: Kept faces within this perceptual-hash distance (or ``near_duplicate_distance`` when larger)
#: share a ``group`` in the manifest, which the split keeps together.
GROUP_DISTANCE = 4
#: Faces of two near-same photos are the same face when their window centres differ by at most
#: this fraction of the photo's width and height (and their sizes by at most 25%).
SAME_PLACE_SHIFT = 0.1
#: Side of the thumbnails of dropped images on the contact sheets, and how many per sheet.
THUMB_SIDE = 64
CONTACT_SHEET_LIMIT = 32
CONTACT_SHEET_COLUMNS = 8
#: Items per shard sent to a worker: face detection costs ~100x more than a pre-cropped face.
PRECROPPED_CHUNK = 256
DETECT_CHUNK = 8
#: Shards planned per worker (at most), so every worker stays busy to the end of a small job.
SHARDS_PER_WORKER = 4
#: Face processors (each with its Haar cascade) kept per worker thread, one per run's settings.
PROCESSOR_CACHE_SIZE = 4
#: Smaller jobs run in the calling process: starting workers costs more than it saves.
POOL_MIN_ITEMS = 64
UNLABELLED = "(none)"


class UnusableImage(Exception):
    """An input cannot be used; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(detail)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class SourceItem:
    """One input image: a file, or a decoded FER2013 CSV row.

    Attributes:
        source: Index of its source in ``clean.sources``.
        label: Class name.
        original: Path relative to the source root, or ``<file>.csv:<line>``.
        usage: ``train``, ``val`` or ``test`` from the source's split folder or FER2013's Usage;
            empty when the source has none.
        pre_cropped: The source's faces are already cropped: face detection is skipped.
        path: The file, or None for a CSV row.
        pixels: The CSV row's 48x48 face, or None for a file.
        problem: Why a CSV row could not be read (then neither ``path`` nor ``pixels`` is set).
    """

    source: int
    label: str
    original: str
    usage: str
    pre_cropped: bool
    path: Path | None = None
    pixels: np.ndarray | None = None
    problem: str = ""


@dataclass
class FaceResult:
    """What a worker made of one face (or of an image dropped before faces were found).

    Attributes:
        item: Index of the :class:`SourceItem`.
        face: Index of the face in its image (left to right); -1 when no face was cut.
        reason: Drop reason, empty when the face passed the worker's steps.
        detail: Human-readable detail of the reason.
        box: Face window (x, y, width, height) in the original image's pixels.
        blur: Variance of the Laplacian of the face at :data:`BLUR_SIDE`.
        sha256: Content hash of the processed face.
        phash: Packed perceptual hash of the processed face.
        path: Output path relative to the output folder, where the face was written.
        thumbnail: Small grayscale picture of what was dropped, for the contact sheets.
        image_hash: Packed perceptual hash of the whole photo (faces found by detection only).
        image_size: The photo's original (width, height) in pixels.
    """

    item: int
    face: int
    reason: str = ""
    detail: str = ""
    box: tuple[int, int, int, int] | None = None
    blur: float | None = None
    sha256: str = ""
    phash: np.ndarray | None = None
    path: str = ""
    thumbnail: np.ndarray | None = None
    image_hash: np.ndarray | None = None
    image_size: tuple[int, int] | None = None


@dataclass(frozen=True)
class WorkerSettings:
    """Everything a worker process needs, picklable.

    Attributes:
        face: Face detection and cropping settings.
        min_side: Smallest image (or face window) side kept.
        blur_threshold: Smallest variance of the Laplacian kept; 0 = off.
        hash_size: Perceptual hash side.
        image_size: Side of the written faces.
        output_dir: The (absolute) staging folder the faces are written into. Every worker
            writes there, so on a multi-node Ray cluster it must be on storage every node shares.
    """

    face: FaceDetectionConfig
    min_side: int
    blur_threshold: float
    hash_size: int
    image_size: int
    output_dir: Path


def _this_process() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


@dataclass(frozen=True, eq=False)
class CleanShard:
    """A unit of per-image work: consecutive items of one source, picklable.

    Attributes:
        number: Position in the plan (0-based); results are gathered in this order.
        settings: The step settings and the staging folder the faces are written into.
        items: ``(item index, item)`` pairs, in item order.
        origin: ``(host, pid)`` of the process that planned it: a shard processed elsewhere (a
            pool worker, a Ray worker) runs OpenCV single-threaded, since the pool already uses
            every core; one processed in the planning process (a thread pool) leaves it as is.
    """

    number: int
    settings: WorkerSettings
    items: tuple[tuple[int, SourceItem], ...]
    origin: tuple[str, int] = field(default_factory=_this_process)

    def __len__(self) -> int:
        return len(self.items)


#: What runs one shard: :func:`process_shard`.
ShardFunction: TypeAlias = Callable[[CleanShard], list[list[FaceResult]]]
#: Runs ``function`` on every shard, anywhere, and returns (or yields) the results in shard order,
#: like the built-in ``map``. When it raises, no shard may still be running: the faces they write
#: go into the staging folder, which is deleted on failure.
ShardMapper: TypeAlias = Callable[[ShardFunction, Sequence[CleanShard]], Iterable[list[list[FaceResult]]]]


@dataclass
class CleanReport:
    """Counts of what the cleaning kept and dropped, and how fast it ran.

    Attributes:
        output_dir: Where the faces, manifest and report were written.
        inputs: Images and CSV rows read from the sources.
        faces: Manifest rows (an image with two faces under policy ``all`` gives two).
        kept: Faces written.
        dropped: Dropped rows per reason.
        dropped_by_class: Dropped rows per reason and class.
        kept_by_class: Kept faces per class.
        by_source: Per source: inputs, kept and dropped per reason.
        label_conflicts: Groups of copies found under different labels (source, original, label).
        unknown_folders: Per source, folders that name no configured class (their images are
            ignored).
        seconds: Wall-clock duration.
        timings: Seconds per stage (discover, process, deduplicate, write).
        workers: Shards run at once (1: one after the other in the calling process).
        executor: What ran the shards: ``in-process``, ``process pool``, or the ``executor``
            named by the caller of :func:`clean` (``prefect process``, ``prefect ray`` ...).
        contact_sheets: Reasons with a ``contact_<reason>.png`` of dropped examples.
    """

    output_dir: Path
    inputs: int = 0
    faces: int = 0
    kept: int = 0
    dropped: dict[str, int] = field(default_factory=dict)
    dropped_by_class: dict[str, dict[str, int]] = field(default_factory=dict)
    kept_by_class: dict[str, int] = field(default_factory=dict)
    by_source: dict[str, dict[str, Any]] = field(default_factory=dict)
    label_conflicts: list[list[dict[str, str]]] = field(default_factory=list)
    unknown_folders: dict[str, list[str]] = field(default_factory=dict)
    seconds: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)
    workers: int = 1
    executor: str = "in-process"
    contact_sheets: list[str] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        return self.inputs / self.seconds if self.seconds > 0 else 0.0

    @property
    def manifest(self) -> Path:
        return self.output_dir / MANIFEST_FILE

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary (``report.json``)."""
        return {
            "output_dir": str(self.output_dir),
            "inputs": self.inputs,
            "faces": self.faces,
            "kept": self.kept,
            "dropped_total": sum(self.dropped.values()),
            "dropped": self.dropped,
            "dropped_by_class": self.dropped_by_class,
            "kept_by_class": self.kept_by_class,
            "by_source": self.by_source,
            "label_conflict_groups": len(self.label_conflicts),
            "label_conflicts": self.label_conflicts,
            "unknown_folders": self.unknown_folders,
            "contact_sheets": [f"contact_{reason}.png" for reason in self.contact_sheets],
            "throughput": {
                "seconds": round(self.seconds, 3),
                "images_per_second": round(self.images_per_second, 1),
                "workers": self.workers,
                "executor": self.executor,
                "stage_seconds": {stage: round(value, 3) for stage, value in self.timings.items()},
            },
        }


# --------------------------------------------------------------------------------------------
# Orchestration
# --------------------------------------------------------------------------------------------


def clean(
    config: CleanConfig,
    data: DataConfig,
    progress: bool = True,
    map_shards: ShardMapper | None = None,
    *,
    workers: int | None = None,
    executor: str = "map_shards",
    shard_scale: int = 1,
) -> CleanReport:
    """Clean the sources into ``config.output_dir``: every cleaning step, then the outputs.

    Outputs (replacing a previous run's as a whole, only once everything succeeded):
    ``images/<label>/<sha256>.png`` faces, ``manifest.csv`` (one row per input image or face with
    its fate and drop reason), ``report.json``, ``report.md`` and ``contact_<reason>.png`` sheets
    of dropped examples.

    Args:
        config: The ``clean`` section.
        data: The ``data`` section (classes and output image size).
        progress: Show a progress bar.
        map_shards: Runs the per-image work (:func:`process_shard` on each :class:`CleanShard`)
            and returns the results in shard order, like ``map``; None runs it in a process pool
            of ``clean.workers`` (in this process for small jobs or one worker). The outputs are
            the same either way. Shards write faces into the staging folder next to
            ``clean.output_dir``, so wherever they run must see that folder (shared storage
            on a multi-node cluster).
        workers: Shards ``map_shards`` runs at once (sizes the shards and is reported); None =
            ``clean.workers`` (0 = every core). Ignored without ``map_shards``.
        executor: What ``map_shards`` is, for the report (``throughput.executor``).
        shard_scale: Multiplies the items per shard (see :func:`plan_shards`), for a
            ``map_shards`` with a cost per shard (a Prefect task run: API calls, pickling).

    Returns:
        The counts per step, reason, class and source, and the throughput.

    Raises:
        FileNotFoundError: A source or the Haar cascade does not exist.
        ValueError: The output folder overlaps a source, or holds something else than a previous
            output.
    """
    started = time.perf_counter()
    output_dir = config.output_dir
    _check_locations(config)
    if not all(source.pre_cropped for source in config.sources):
        resolve_cascade(config.face.cascade)  # fail before any work, not inside a worker
    report = CleanReport(output_dir=output_dir)

    items = discover_sources(config.sources, data.classes, report)
    report.inputs = len(items)
    report.timings["discover"] = time.perf_counter() - started
    logger.info("clean: %d inputs from %d source(s)", report.inputs, len(config.sources))

    with staged_directory(output_dir, marker=MANIFEST_FILE) as staging:
        for label in data.classes:
            (staging / IMAGES_DIR / label).mkdir(parents=True, exist_ok=True)
        settings = WorkerSettings(
            face=config.face,
            min_side=config.min_side,
            blur_threshold=config.blur_threshold,
            hash_size=config.hash_size,
            image_size=data.image_size,
            # Absolute: shards may run in processes with another working directory.
            output_dir=staging.absolute(),
        )
        stage = time.perf_counter()
        configured = config.workers or os.cpu_count() or 1
        with contextlib.ExitStack() as stack:
            if map_shards is None:
                map_shards, report.workers, report.executor = stack.enter_context(
                    _local_mapper(configured, len(items))
                )
            else:
                report.workers, report.executor = max(1, workers or configured), executor
            shards = plan_shards(items, settings, report.workers, scale=shard_scale)
            logger.info(
                "clean: %d shard(s) on %s (%d worker(s))", len(shards), report.executor, report.workers
            )
            results = _run_shards(map_shards, shards, len(items), progress)
        report.timings["process"] = time.perf_counter() - stage

        stage = time.perf_counter()
        rows = _deduplicate(items, results, config)
        report.timings["deduplicate"] = time.perf_counter() - stage

        stage = time.perf_counter()
        _write_outputs(staging, items, results, rows, config, data, report)
        report.timings["write"] = time.perf_counter() - stage
        report.seconds = time.perf_counter() - started
        write_json(staging / "report.json", {**report.to_dict(), "config": _config_summary(config, data)})
        write_atomically(staging / "report.md", render_markdown(report, data.classes))
    logger.info(
        "clean: kept %d of %d faces from %d inputs in %.1f s (%.0f images/s); dropped %s",
        report.kept,
        report.faces,
        report.inputs,
        report.seconds,
        report.images_per_second,
        {reason: count for reason, count in report.dropped.items() if count},
    )
    return report


def _check_locations(config: CleanConfig) -> None:
    output_dir = config.output_dir.resolve()
    for source in config.sources:
        source_path = source.path.resolve()
        if not source.path.exists():
            raise FileNotFoundError(f"clean source {source.name!r}: {source.path} does not exist")
        if source_path == output_dir or output_dir in source_path.parents:
            raise ValueError(f"clean.output_dir {output_dir} contains source {source.name!r} ({source_path})")
        if source_path in output_dir.parents:
            raise ValueError(
                f"clean.output_dir {output_dir} lies inside source {source.name!r} ({source_path}); "
                "a re-run would read its own outputs"
            )
    names = [source.name for source in config.sources]
    if len(set(names)) != len(names):
        raise ValueError(f"clean.sources: names must be unique, got {names}")


def discover_sources(
    sources: Sequence[SourceConfig], classes: Sequence[str], report: CleanReport | None = None
) -> list[SourceItem]:
    """List the inputs of every source, in priority order.

    A source is an image-folder tree (split or class layout, see
    :func:`emonext.data.folders.scan_image_folders`) or a FER2013 CSV file. Malformed CSV rows
    become items without pixels (dropped as ``malformed_row``); folders naming no class are
    recorded in ``report.unknown_folders``.

    Args:
        sources: The sources, first has priority.
        classes: Configured class names in label order.
        report: Receives unknown folders, if given.

    Returns:
        The items, source by source, each source sorted by path (or CSV line).

    Raises:
        FileNotFoundError: A source does not exist.
    """
    items: list[SourceItem] = []
    for index, source in enumerate(sources):
        if source.path.is_file():
            table = read_fer2013_csv(source.path, classes)
            name = source.path.name
            rows = [
                (line, SourceItem(index, classes[code], f"{name}:{line}", _usage(split), True, pixels=pixels))
                for line, code, split, pixels in zip(
                    table.lines, table.labels.tolist(), table.splits, table.images, strict=True
                )
            ]
            rows += [
                (bad.line, SourceItem(index, "", f"{name}:{bad.line}", "", True, problem=bad.reason))
                for bad in table.malformed
            ]
            found = [item for _, item in sorted(rows, key=lambda row: row[0])]
        elif source.path.is_dir():
            try:
                scan = scan_image_folders(source.path, classes)
            except ValueError as error:
                logger.warning("clean source %r: %s", source.name, error)
                found = []
            else:
                found = [
                    SourceItem(
                        index,
                        classes[record.label],
                        record.path.relative_to(source.path).as_posix(),
                        _usage(record.split),
                        source.pre_cropped,
                        path=record.path,
                    )
                    for record in scan.records
                ]
                if report is not None and scan.unknown_folders:
                    report.unknown_folders[source.name] = list(scan.unknown_folders)
        else:
            raise FileNotFoundError(f"clean source {source.name!r}: {source.path} does not exist")
        logger.info("clean source %r: %d inputs from %s", source.name, len(found), source.path)
        items.extend(found)
    return items


def _usage(split: str) -> str:
    return "" if split == UNSPLIT else split


def plan_shards(
    items: Sequence[SourceItem], settings: WorkerSettings, workers: int, scale: int = 1
) -> list[CleanShard]:
    """Split the items into shards of consecutive items of one source.

    A shard holds at most ``scale`` x :data:`PRECROPPED_CHUNK` pre-cropped items or ``scale`` x
    :data:`DETECT_CHUNK` items needing face detection (about the same work), and at most
    ``1 / SHARDS_PER_WORKER`` of a worker's share, so that every worker stays busy to the end of
    a small job. The plan only changes how the work is cut: the concatenated results are the
    same for any plan.

    Args:
        items: The inputs, in priority order.
        settings: What every shard runs with.
        workers: Shards that will run at once.
        scale: Multiplies the items per shard, for executors with a cost per shard.

    Returns:
        The shards, numbered in item order.
    """
    balance = max(1, math.ceil(len(items) / (max(1, workers) * SHARDS_PER_WORKER)))
    chunks: list[list[tuple[int, SourceItem]]] = []
    current: list[tuple[int, SourceItem]] = []
    for index, item in enumerate(items):
        limit = min(balance, max(1, scale) * (PRECROPPED_CHUNK if item.pre_cropped else DETECT_CHUNK))
        if current and (len(current) >= limit or current[-1][1].source != item.source):
            chunks.append(current)
            current = []
        current.append((index, item))
    if current:
        chunks.append(current)
    return [CleanShard(number, settings, tuple(chunk)) for number, chunk in enumerate(chunks)]


def process_shard(shard: CleanShard) -> list[list[FaceResult]]:
    """Decode, face-crop, blur-check, hash and write the faces of every item of a shard.

    Module-level and picklable by reference, for any process or Ray worker that imports
    ``emonext``. The Haar cascade is loaded once per worker thread and run, not once per shard.

    Args:
        shard: The items and settings.

    Returns:
        Per item, in the shard's order, its results (see :meth:`FaceProcessor.process`).

    Raises:
        OSError: A face could not be written (a full disk stops the run instead of dropping
            images).
    """
    if shard.origin != _this_process():
        # A pool or Ray worker: the pool already uses every core.
        cv2.setNumThreads(1)
    return _cached_processor(shard.settings).process_chunk(shard.items)


# Per thread, not per process: a CascadeClassifier keeps per-image buffers while it detects, so
# two threads of a thread pool must not share one.
_PROCESSORS = threading.local()


def _cached_processor(settings: WorkerSettings) -> FaceProcessor:
    """This thread's processor for ``settings``; it loads the Haar cascade on first use only."""
    cache: dict[WorkerSettings, FaceProcessor] | None = getattr(_PROCESSORS, "by_settings", None)
    if cache is None:
        cache = _PROCESSORS.by_settings = {}
    processor = cache.get(settings)
    if processor is None:
        # A long-lived worker (Ray) serves run after run, each with its own staging folder.
        if len(cache) >= PROCESSOR_CACHE_SIZE:
            cache.clear()
        processor = cache[settings] = FaceProcessor(settings)
    return processor


@contextlib.contextmanager
def _local_mapper(workers: int, items: int) -> Iterator[tuple[ShardMapper, int, str]]:
    """The default way to run the shards: a process pool, or this process for small jobs.

    Yields:
        The mapper, the workers it uses and its name for the report.
    """
    if workers <= 1 or items < POOL_MIN_ITEMS:
        yield map, 1, "in-process"
        return
    # forkserver: workers never inherit the parent's threads (torch, OpenCV) through fork(). The
    # server imports this module once and workers fork from it, sharing those pages.
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload([__name__])
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=context)
    try:
        yield pool.map, workers, "process pool"
    except BaseException:
        # Queued shards must not start writing into a staging folder that is about to go.
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_shards(
    map_shards: ShardMapper, shards: Sequence[CleanShard], items: int, progress: bool
) -> list[list[FaceResult]]:
    results: list[list[FaceResult]] = []
    with tqdm(total=items, desc="clean", unit="img", disable=not progress, leave=False) as bar:
        for shard, shard_results in zip(shards, map_shards(process_shard, shards), strict=True):
            if len(shard_results) != len(shard):
                raise RuntimeError(
                    f"clean shard {shard.number}: {len(shard_results)} results for {len(shard)} items"
                )
            results.extend(shard_results)
            bar.update(len(shard))
    return results


# --------------------------------------------------------------------------------------------
# Per-image steps (run in the workers)
# --------------------------------------------------------------------------------------------


@dataclass
class DecodedImage:
    """A decoded grayscale image.

    Attributes:
        gray: uint8 (H, W), possibly decoded at a reduced scale; (H, W, 3) RGB when decoded
            with ``decode_pixels(mode="RGB")``.
        width: Width of the original image in pixels.
        height: Height of the original image in pixels.
        scale: ``gray``'s pixels per original pixel (1.0 unless decoded at a reduced scale).
    """

    gray: np.ndarray
    width: int
    height: int
    scale: float = 1.0


def decode_gray(
    path: Path | bytes, max_pixels: int = MAX_PIXELS, draft_side: int | None = None
) -> DecodedImage:
    """Decode any image file PIL reads into 8-bit grayscale, robustly.

    See :func:`decode_pixels`; JPEGs over twice ``draft_side`` are decoded at a reduced scale.

    Args:
        path: The image file, or its bytes (an upload, a request body).
        max_pixels: Larger images are refused before decoding.
        draft_side: JPEGs whose longer side exceeds twice this are decoded at the smallest DCT
            scale (1/2, 1/4, 1/8) that keeps the longer side at least this large; None decodes
            at full resolution.

    Returns:
        The grayscale image and its original size.

    Raises:
        UnusableImage: ``undecodable`` (empty, truncated, unknown format) or ``too_large``.
    """
    return decode_pixels(path, max_pixels, draft_side, "L")


def decode_pixels(
    source: Path | bytes,
    max_pixels: int = MAX_PIXELS,
    draft_side: int | None = None,
    mode: Literal["L", "RGB"] = "L",
) -> DecodedImage:
    """Decode any image PIL reads into upright 8-bit grayscale (``L``) or RGB, robustly.

    EXIF orientation is applied; the first frame of an animation is used; transparent pixels are
    composited onto white; 16-bit and float images are rescaled to 0-255 by their maximum; CMYK,
    palette and other modes are converted. Cleaning and inference share it, so both see the
    same picture.

    Args:
        source: The image file, or its bytes.
        max_pixels: Larger images are refused before decoding.
        draft_side: Grayscale only: decode large JPEGs at a reduced scale (see :func:`decode_gray`).
        mode: ``L`` for grayscale (H, W), ``RGB`` for colour (H, W, 3); in ``DecodedImage.gray``.

    Raises:
        UnusableImage: ``undecodable`` (empty, truncated, unknown format) or ``too_large``.
    """
    try:
        size = len(source) if isinstance(source, bytes) else Path(source).stat().st_size
    except OSError as error:
        raise UnusableImage("undecodable", f"cannot read file: {error.strerror or error}") from None
    if size == 0:
        raise UnusableImage("undecodable", "empty file (0 bytes)")
    with warnings.catch_warnings():
        # Corrupt EXIF, palette transparency notes: the decode below handles or reports them.
        warnings.simplefilter("ignore")
        try:
            with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as image:
                width, height = image.size
                if width * height > max_pixels:
                    raise UnusableImage("too_large", f"{width}x{height} exceeds {max_pixels} pixels")
                if width == 0 or height == 0:
                    raise UnusableImage("undecodable", f"image has size {width}x{height}")
                if getattr(image, "n_frames", 1) > 1:
                    image.seek(0)
                if (
                    mode == "L"
                    and draft_side
                    and image.format == "JPEG"
                    and max(width, height) > 2 * draft_side
                ):
                    ratio = draft_side / max(width, height)
                    image.draft("L", (math.ceil(width * ratio), math.ceil(height * ratio)))
                image.load()
                scale = image.size[0] / width
                oriented = _apply_orientation(image)
                if oriented.size != image.size:
                    width, height = height, width
                pixels = _to_gray(oriented) if mode == "L" else _to_rgb(oriented)
        except Image.DecompressionBombError as error:
            raise UnusableImage("too_large", str(error)) from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError, MemoryError) as error:
            raise UnusableImage("undecodable", f"{type(error).__name__}: {error}") from None
    return DecodedImage(pixels, width, height, scale)


def _apply_orientation(image: Image.Image) -> Image.Image:
    """Rotate as the EXIF orientation says (phone photos are often stored sideways)."""
    try:
        if image.getexif().get(ExifTags.Base.Orientation, 1) in (0, 1):
            return image
        return ImageOps.exif_transpose(image)
    except (OSError, ValueError, TypeError, KeyError, ZeroDivisionError, SyntaxError):
        return image  # unreadable EXIF: keep the stored orientation


def _to_gray(image: Image.Image) -> np.ndarray:
    mode = image.mode
    if mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        values = np.asarray(image, dtype=np.float64)
        top = float(values.max()) if values.size else 0.0
        if top > 255:
            values = values * (255.0 / top)
        return np.clip(np.rint(values), 0, 255).astype(np.uint8)
    has_alpha = mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info
    if has_alpha:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("L"), dtype=np.uint8)
    if mode == "L":
        return np.asarray(image, dtype=np.uint8)
    if mode not in ("1", "P", "RGB", "RGBX", "CMYK", "YCbCr"):
        image = image.convert("RGB")
    return np.asarray(image.convert("L"), dtype=np.uint8)


def _to_rgb(image: Image.Image) -> np.ndarray:
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "I;16N", "F"):
        return np.repeat(_to_gray(image)[:, :, None], 3, axis=2)
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return np.asarray(Image.alpha_composite(white, rgba).convert("RGB"), dtype=np.uint8)
    return np.asarray(image.convert("RGB"), dtype=np.uint8)


def laplacian_variance(face: np.ndarray, side: int = BLUR_SIDE) -> float:
    """Sharpness: variance of the Laplacian of ``face`` resized to ``side`` x ``side``.

    Args:
        face: uint8 grayscale face crop.
        side: Resolution the measure is taken at.

    Returns:
        The variance; near 0 for blank or heavily blurred faces, hundreds for sharp ones.
    """
    resized = resize_square(face, side)
    return float(cv2.Laplacian(resized, cv2.CV_64F).var())


def resize_square(image: np.ndarray, side: int) -> np.ndarray:
    """Resize to ``side`` x ``side``: area averaging when shrinking, bicubic when enlarging."""
    if image.shape[0] == side and image.shape[1] == side:
        return image
    shrinking = image.shape[0] * image.shape[1] >= side * side
    interpolation = cv2.INTER_AREA if shrinking else cv2.INTER_CUBIC
    return cv2.resize(image, (side, side), interpolation=interpolation)


def thumbnail(image: np.ndarray, side: int = THUMB_SIDE) -> np.ndarray:
    """Shrink ``image`` to fit ``side`` x ``side``, keeping its aspect ratio."""
    height, width = image.shape[:2]
    scale = min(1.0, side / max(height, width, 1))
    if scale >= 1.0:
        return image.copy()
    size = (max(1, round(width * scale)), max(1, round(height * scale)))
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


class FaceProcessor:
    """Decode, face-crop, blur-check, resize, hash and write the faces of one item.

    Args:
        settings: Step settings and the folder the faces are written to.
        detector: Face detector; a :class:`HaarFaceDetector` from ``settings.face`` is created
            on first use when None.
    """

    def __init__(self, settings: WorkerSettings, detector: FaceDetector | None = None) -> None:
        self.settings = settings
        self._detector = detector

    @property
    def detector(self) -> FaceDetector:
        if self._detector is None:
            self._detector = HaarFaceDetector(self.settings.face)
        return self._detector

    def process_chunk(self, chunk: Sequence[tuple[int, SourceItem]]) -> list[list[FaceResult]]:
        """:meth:`process` for each ``(item index, item)``."""
        return [self.process(index, item) for index, item in chunk]

    def process(self, index: int, item: SourceItem) -> list[FaceResult]:
        """All per-image steps for one item; never raises for a bad input.

        Args:
            index: The item's index (recorded in the results).
            item: The input.

        Returns:
            One result per face found, or a single dropped result.
        """
        try:
            return self._process(index, item)
        except UnusableImage as error:
            return [FaceResult(index, -1, error.reason, error.detail)]
        except (cv2.error, ValueError) as error:
            # Decoded, yet OpenCV or numpy cannot process it (an exotic shape or depth). Write
            # errors (OSError) are not caught: a full disk must stop the run, not drop images.
            logger.warning("clean: %s: %s", item.original, error)
            return [FaceResult(index, -1, "undecodable", f"{type(error).__name__}: {error}")]

    def _process(self, index: int, item: SourceItem) -> list[FaceResult]:
        settings = self.settings
        if item.pixels is not None:
            height, width = item.pixels.shape
            decoded = DecodedImage(np.ascontiguousarray(item.pixels, dtype=np.uint8), width, height)
        elif item.path is not None:
            decoded = decode_gray(item.path, draft_side=DRAFT_FACTOR * settings.face.detect_max_side)
        else:
            return [FaceResult(index, -1, "malformed_row", item.problem or "unreadable CSV row")]

        gray = decoded.gray
        if min(decoded.width, decoded.height) < settings.min_side:
            return [
                FaceResult(
                    index,
                    -1,
                    "too_small",
                    f"{decoded.width}x{decoded.height} is below min_side {settings.min_side}",
                    thumbnail=thumbnail(gray),
                )
            ]
        if item.pre_cropped:
            windows = [(gray, (0, 0, decoded.width, decoded.height))]
        else:
            boxes = select_faces(self.detector.detect(gray), settings.face.policy)
            if not boxes:
                return [FaceResult(index, -1, "no_face", "no face found", thumbnail=thumbnail(gray))]
            windows = []
            for box in boxes:
                crop, window = crop_face(gray, box, settings.face.margin)
                original = window.scaled(1 / decoded.scale)
                windows.append((crop, (original.x, original.y, original.width, original.height)))
        results = [
            self._finish_face(index, item.label, face, crop, box) for face, (crop, box) in enumerate(windows)
        ]
        if not item.pre_cropped:
            # Shrinking first makes imagehash's own LANCZOS resize cheap on multi-megapixel photos.
            side = settings.hash_size * 8
            small = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
            image_hash = perceptual_hash(small, settings.hash_size)
            for result in results:
                result.image_hash, result.image_size = image_hash, (decoded.width, decoded.height)
        return results

    def _finish_face(
        self, index: int, label: str, face: int, crop: np.ndarray, box: tuple[int, int, int, int]
    ) -> FaceResult:
        settings = self.settings
        result = FaceResult(index, face, box=box)
        if min(box[2], box[3]) < settings.min_side:
            result.reason, result.detail = "too_small", f"face window {box[2]}x{box[3]} below min_side"
            result.thumbnail = thumbnail(crop)
            return result
        result.blur = laplacian_variance(crop)
        if settings.blur_threshold > 0 and result.blur < settings.blur_threshold:
            result.reason = "blurry"
            result.detail = f"Laplacian variance {result.blur:.1f} < {settings.blur_threshold}"
            result.thumbnail = thumbnail(crop)
            return result
        processed = np.ascontiguousarray(resize_square(crop, settings.image_size))
        result.sha256 = content_sha256(processed)
        result.phash = perceptual_hash(processed, settings.hash_size)
        self.write_face(result, label, processed)
        return result

    def write_face(self, result: FaceResult, label: str, face: np.ndarray) -> None:
        """Write a processed face as ``images/<label>/<sha256>.png`` and record its path."""
        relative = f"{IMAGES_DIR}/{label}/{result.sha256}.png"
        target = self.settings.output_dir / relative
        if not target.exists():
            ok, encoded = cv2.imencode(".png", face)
            if not ok:
                raise ValueError(f"OpenCV could not encode the face {result.sha256} as PNG")
            # Two workers may write the same face (exact duplicates): the atomic rename makes that harmless.
            write_atomically(target, encoded.tobytes())
        result.path = relative


# --------------------------------------------------------------------------------------------
# Duplicates and label conflicts (parent)
# --------------------------------------------------------------------------------------------


@dataclass
class ManifestRow:
    """One row of ``manifest.csv`` before it is written."""

    result: FaceResult
    item: SourceItem
    fate: str
    reason: str = ""
    detail: str = ""
    duplicate_of: str = ""
    group: str = ""
    cluster: int = -1


def _reference(item: SourceItem, result: FaceResult, source_names: Sequence[str]) -> str:
    suffix = f"#{result.face}" if result.face > 0 else ""
    return f"{source_names[item.source]}:{item.original}{suffix}"


def _deduplicate(
    items: Sequence[SourceItem], results: Sequence[list[FaceResult]], config: CleanConfig
) -> list[ManifestRow]:
    source_names = [source.name for source in config.sources]
    rows: list[ManifestRow] = []
    candidates: list[int] = []
    for per_item in results:
        for result in per_item:
            item = items[result.item]
            if result.reason:
                rows.append(ManifestRow(result, item, DROPPED, result.reason, result.detail))
            else:
                candidates.append(len(rows))
                rows.append(ManifestRow(result, item, KEPT))
    if not candidates:
        return rows

    faces = [rows[index].result for index in candidates]
    distance = config.near_duplicate_distance
    group_distance = max(distance, GROUP_DISTANCE)
    graph = near_duplicate_graph(np.stack([face.phash for face in faces]), group_distance)  # type: ignore[misc]
    if distance >= 0:
        links = _group_links(graph.groups(distance)) + same_photo_links(faces, distance)
    else:
        sha_index = np.unique([face.sha256 for face in faces], return_inverse=True)[1].reshape(-1)
        first = np.full(sha_index.max() + 1, len(faces), dtype=np.int64)
        np.minimum.at(first, sha_index, np.arange(len(faces)))
        links = _group_links(first[sha_index])
    roots = link_components(len(faces), np.array(links, dtype=np.int64).reshape(-1, 2))

    members: dict[int, list[int]] = defaultdict(list)
    for position, root in enumerate(roots.tolist()):
        members[root].append(position)
    for group_members in members.values():
        if len(group_members) < 2:
            continue
        group_rows = [rows[candidates[position]] for position in group_members]
        for row in group_rows:
            row.cluster = group_members[0]
        first_row = group_rows[0]
        first_ref = _reference(first_row.item, first_row.result, source_names)
        labels = sorted({row.item.label for row in group_rows})
        if len(labels) > 1:
            for row in group_rows:
                row.fate, row.reason = DROPPED, "label_conflict"
                row.detail = f"same face under labels {', '.join(labels)}"
                row.duplicate_of = first_ref
            second = group_rows[1]
            first_row.duplicate_of = _reference(second.item, second.result, source_names)
            continue
        for row in group_rows[1:]:
            exact = row.result.sha256 == first_row.result.sha256
            row.fate = DROPPED
            row.reason = "duplicate" if exact else "near_duplicate"
            row.detail = "identical pixels" if exact else "perceptual hash within near_duplicate_distance"
            row.duplicate_of = first_ref

    # Near-same faces, the same photo at another size or quality, and the faces cut from one
    # photo go to the same split.
    split_links = _group_links(graph.groups(group_distance)) + same_photo_links(faces, group_distance)
    split_links += [
        (position - 1, position)
        for position in range(1, len(faces))
        if faces[position].item == faces[position - 1].item
    ]
    _assign_split_groups(rows, candidates, split_links)
    return rows


def _group_links(groups: np.ndarray) -> list[tuple[int, int]]:
    return [(position, group) for position, group in enumerate(groups.tolist()) if group != position]


def same_photo_links(faces: Sequence[FaceResult], max_distance: int) -> list[tuple[int, int]]:
    """Pairs of faces at the same place of near-same photos.

    A face's perceptual hash depends on where the detector put its box, which moves by a few
    pixels when the photo is resized or re-encoded; the hash of the whole photo does not. Faces
    of two photos whose hashes are within ``max_distance`` are paired when their windows sit at
    the same relative place and size.

    Args:
        faces: Faces in manifest order; those without ``image_hash`` (pre-cropped) are ignored.
        max_distance: Largest Hamming distance between the photos' hashes.

    Returns:
        ``(position, position)`` pairs into ``faces``.
    """
    by_item: dict[int, list[int]] = defaultdict(list)
    for position, face in enumerate(faces):
        if face.image_hash is not None and face.box is not None and face.image_size is not None:
            by_item[face.item].append(position)
    items = list(by_item)
    if len(items) < 2:
        return []
    hashes = np.stack([faces[by_item[item][0]].image_hash for item in items])  # type: ignore[misc]
    groups = near_duplicate_graph(hashes, max_distance).groups(max_distance)
    photos: dict[int, list[int]] = defaultdict(list)
    for order, group in enumerate(groups.tolist()):
        photos[group].append(items[order])
    links: list[tuple[int, int]] = []
    for same_photos in photos.values():
        for first_index, first_item in enumerate(same_photos):
            for second_item in same_photos[first_index + 1 :]:
                links += [
                    (first, second)
                    for first in by_item[first_item]
                    for second in by_item[second_item]
                    if _same_place(faces[first], faces[second])
                ]
    return links


def _same_place(first: FaceResult, second: FaceResult) -> bool:
    (x1, y1, w1, h1), (x2, y2, w2, h2) = first.box, second.box  # type: ignore[misc]
    (width1, height1), (width2, height2) = first.image_size, second.image_size  # type: ignore[misc]
    shift_x = abs((x1 + w1 / 2) / width1 - (x2 + w2 / 2) / width2)
    shift_y = abs((y1 + h1 / 2) / height1 - (y2 + h2 / 2) / height2)
    size_ratio = (w1 / width1) / max(w2 / width2, 1e-9)
    return shift_x <= SAME_PLACE_SHIFT and shift_y <= SAME_PLACE_SHIFT and 0.8 <= size_ratio <= 1.25


def _assign_split_groups(
    rows: list[ManifestRow], candidates: list[int], links: list[tuple[int, int]]
) -> None:
    roots = link_components(len(candidates), np.array(links, dtype=np.int64).reshape(-1, 2)).tolist()
    smallest: dict[int, str] = {}
    for position, index in enumerate(candidates):
        row = rows[index]
        if row.fate == KEPT:
            root = roots[position]
            smallest[root] = min(smallest.get(root, row.result.sha256), row.result.sha256)
    for position, index in enumerate(candidates):
        if rows[index].fate == KEPT:
            rows[index].group = smallest[roots[position]]


# --------------------------------------------------------------------------------------------
# Outputs
# --------------------------------------------------------------------------------------------


def _write_outputs(
    staging: Path,
    items: Sequence[SourceItem],
    results: Sequence[list[FaceResult]],
    rows: list[ManifestRow],
    config: CleanConfig,
    data: DataConfig,
    report: CleanReport,
) -> None:
    source_names = [source.name for source in config.sources]
    kept_paths = {row.result.path for row in rows if row.fate == KEPT}
    sheets: dict[str, list[tuple[np.ndarray, str]]] = defaultdict(list)
    dropped_rows = [row for row in rows if row.fate == DROPPED]
    # Copies under different labels side by side on their sheet (a stable sort keeps the order).
    for row in sorted(dropped_rows, key=lambda row: row.cluster if row.reason == "label_conflict" else -1):
        sheet = sheets[row.reason]
        if len(sheet) < CONTACT_SHEET_LIMIT:
            picture = row.result.thumbnail
            if picture is None and row.result.path:
                picture = cv2.imread(str(staging / row.result.path), cv2.IMREAD_GRAYSCALE)
            if picture is not None:
                sheet.append((thumbnail(picture), row.item.label or UNLABELLED))
    # Faces of dropped duplicates were written by the workers; copies identical to a kept face
    # share its file, which stays.
    for row in dropped_rows:
        if row.result.path and row.result.path not in kept_paths:
            (staging / row.result.path).unlink(missing_ok=True)
        row.result.path = ""

    dropped: Counter[str] = Counter()
    dropped_by_class: dict[str, Counter[str]] = defaultdict(Counter)
    kept_by_class: Counter[str] = Counter()
    by_source: dict[str, dict[str, Any]] = {
        name: {"inputs": 0, "kept": 0, "dropped": Counter()} for name in source_names
    }
    for item in items:
        by_source[source_names[item.source]]["inputs"] += 1
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(MANIFEST_COLUMNS)
    for row in rows:
        result, item = row.result, row.item
        label = item.label or UNLABELLED
        source_name = source_names[item.source]
        if row.fate == KEPT:
            kept_by_class[label] += 1
            by_source[source_name]["kept"] += 1
        else:
            dropped[row.reason] += 1
            dropped_by_class[row.reason][label] += 1
            by_source[source_name]["dropped"][row.reason] += 1
        writer.writerow(
            (
                result.path if row.fate == KEPT else "",
                item.label,
                source_name,
                item.original,
                item.usage,
                "" if result.face < 0 else result.face,
                "" if result.box is None else " ".join(str(value) for value in result.box),
                "" if result.blur is None else f"{result.blur:.1f}",
                "" if result.phash is None else hash_to_hex(result.phash),
                result.sha256,
                row.fate,
                row.reason,
                row.detail,
                row.duplicate_of,
                row.group,
            )
        )
    write_atomically(staging / MANIFEST_FILE, buffer.getvalue())

    report.faces = len(rows)
    report.kept = sum(kept_by_class.values())
    report.dropped = {reason: dropped.get(reason, 0) for reason in REASONS}
    # Only malformed CSV rows lack a label: the unlabelled column appears only when there are some.
    labels = (
        (*data.classes, UNLABELLED)
        if any(counts[UNLABELLED] for counts in dropped_by_class.values())
        else data.classes
    )
    report.dropped_by_class = {
        reason: {label: dropped_by_class[reason].get(label, 0) for label in labels} for reason in REASONS
    }
    report.kept_by_class = {label: kept_by_class.get(label, 0) for label in data.classes}
    for name, counts in by_source.items():
        existing = report.by_source.get(name, {})
        report.by_source[name] = {
            "inputs": counts["inputs"],
            "kept": counts["kept"],
            "dropped": {reason: counts["dropped"].get(reason, 0) for reason in REASONS},
            **existing,
        }
    report.label_conflicts = _conflict_groups(rows, source_names)
    for reason in REASONS:
        if sheets.get(reason):
            contact_sheet(sheets[reason]).save(staging / f"contact_{reason}.png")
            report.contact_sheets.append(reason)


def _conflict_groups(rows: Sequence[ManifestRow], source_names: Sequence[str]) -> list[list[dict[str, str]]]:
    groups: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        if row.reason != "label_conflict":
            continue
        member = {
            "source": source_names[row.item.source],
            "original": row.item.original,
            "face": str(row.result.face),
            "label": row.item.label,
        }
        own = _reference(row.item, row.result, source_names)
        anchor = row.duplicate_of if row.duplicate_of in groups else own
        groups.setdefault(anchor, []).append(member)
    return list(groups.values())


def contact_sheet(
    pictures: Sequence[tuple[np.ndarray, str]], columns: int = CONTACT_SHEET_COLUMNS
) -> Image.Image:
    """A grid of grayscale thumbnails, each captioned (with its label).

    Args:
        pictures: ``(image, caption)`` pairs; images at most :data:`THUMB_SIDE` on a side.
        columns: Thumbnails per row.

    Returns:
        The sheet as a grayscale PIL image.
    """
    caption_height = 12
    cell = THUMB_SIDE + 4
    columns = max(1, min(columns, len(pictures)))
    rows = max(1, math.ceil(len(pictures) / columns))
    sheet = Image.new("L", (columns * cell, rows * (cell + caption_height)), color=255)
    draw = ImageDraw.Draw(sheet)
    for index, (picture, caption) in enumerate(pictures):
        left = (index % columns) * cell + 2
        top = (index // columns) * (cell + caption_height) + 2
        height, width = picture.shape[:2]
        sheet.paste(
            Image.fromarray(picture), (left + (THUMB_SIDE - width) // 2, top + (THUMB_SIDE - height) // 2)
        )
        draw.text((left, top + THUMB_SIDE + 1), caption[:11], fill=0)
    return sheet


def render_markdown(report: CleanReport, classes: Sequence[str]) -> str:
    """The readable summary (``report.md``): what each step dropped, per class and per source."""
    columns = (
        [*classes, UNLABELLED]
        if any(report.dropped_by_class.get(reason, {}).get(UNLABELLED, 0) for reason in REASONS)
        else list(classes)
    )
    lines = [
        "# Cleaning report",
        "",
        f"{report.inputs} inputs, {report.faces} faces, **{report.kept} kept**, "
        f"{sum(report.dropped.values())} dropped; {report.seconds:.1f} s "
        f"({report.images_per_second:.0f} images/s, {report.workers} worker(s), {report.executor}).",
        "",
        "| step (reason) | " + " | ".join(columns) + " | total |",
        "|---" * (len(columns) + 2) + "|",
    ]
    for reason in REASONS:
        per_class = report.dropped_by_class.get(reason, {})
        cells = [str(per_class.get(label, 0)) for label in columns]
        lines.append(f"| {reason} | " + " | ".join(cells) + f" | {report.dropped.get(reason, 0)} |")
    kept_cells = [str(report.kept_by_class.get(label, 0)) for label in columns]
    lines.append("| **kept** | " + " | ".join(kept_cells) + f" | **{report.kept}** |")
    lines += ["", "## Sources", "", "| source | inputs | kept | dropped |", "|---|---:|---:|---|"]
    for name, counts in report.by_source.items():
        dropped_counts = counts.get("dropped", {}).items()
        dropped = ", ".join(f"{reason} {count}" for reason, count in dropped_counts if count)
        lines.append(f"| {name} | {counts.get('inputs', 0)} | {counts.get('kept', 0)} | {dropped or '-'} |")
    if report.unknown_folders:
        lines += ["", "## Ignored folders (no configured class)", ""]
        lines += [f"- {name}: {', '.join(folders)}" for name, folders in report.unknown_folders.items()]
    if report.label_conflicts:
        lines += ["", f"## Label conflicts ({len(report.label_conflicts)} groups, first 20)", ""]
        for group in report.label_conflicts[:20]:
            described = (f"{m['source']}:{m['original']} face {m['face']} ({m['label']})" for m in group)
            lines.append("- " + "; ".join(described))
    if report.contact_sheets:
        lines += ["", "## Dropped examples", ""]
        lines += [f"- {reason}: `contact_{reason}.png`" for reason in report.contact_sheets]
    stages = ", ".join(f"{stage} {seconds:.1f} s" for stage, seconds in report.timings.items())
    lines += ["", f"Stages: {stages}.", ""]
    return "\n".join(lines)


def _config_summary(config: CleanConfig, data: DataConfig) -> dict[str, Any]:
    return {
        "clean": config.model_dump(mode="json"),
        "image_size": data.image_size,
        "classes": list(data.classes),
        "blur_side": BLUR_SIDE,
        "group_distance": max(config.near_duplicate_distance, GROUP_DISTANCE),
        "max_pixels": MAX_PIXELS,
    }
