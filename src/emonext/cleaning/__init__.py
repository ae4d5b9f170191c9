"""Cleaning of labelled face images: decode checks, face crop, blur, duplicates, label conflicts.

``emonext clean`` reads the sources of ``clean.sources`` (image-folder trees or a FER2013 CSV, in
priority order), runs every step of :mod:`emonext.cleaning.pipeline` and writes
``data.image_size`` square grayscale faces with a manifest and a report to ``clean.output_dir``.
Face detection lives in :mod:`emonext.cleaning.faces` (reused by inference), hashing and the
near-duplicate search in :mod:`emonext.cleaning.hashing`.
"""

from __future__ import annotations

from emonext.cleaning.pipeline import (
    MANIFEST_COLUMNS,
    MANIFEST_FILE,
    REASONS,
    CleanReport,
    CleanShard,
    ShardMapper,
    plan_shards,
    process_shard,
    run_clean,
)
from emonext.config import CleanConfig, DataConfig


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
    """Clean the sources into ``config.output_dir``.

    Outputs (replacing a previous run's as a whole, only once everything succeeded):
    ``images/<label>/<sha256>.png`` faces, ``manifest.csv`` (one row per input image or face with
    its fate and drop reason), ``report.json``, ``report.md`` and ``contact_<reason>.png`` sheets
    of dropped examples.

    Args:
        config: The ``clean`` section.
        data: The ``data`` section (classes and output image size).
        progress: Show a progress bar.
        map_shards: Runs :func:`process_shard` on every :class:`CleanShard` anywhere (a Prefect
            task runner, Ray) and returns the results in shard order, like ``map``; None = a
            process pool of ``clean.workers``. Same outputs either way. Shards write faces into
            a staging folder next to ``config.output_dir``: on several machines it must be on
            storage they all share.
        workers: Shards ``map_shards`` runs at once (sizes the shards; reported); None =
            ``clean.workers``.
        executor: What ``map_shards`` is, for the report.
        shard_scale: Multiplies the items per shard, for a ``map_shards`` with a cost per shard.

    Returns:
        The counts per step, reason, class and source, and the throughput.

    Raises:
        FileNotFoundError: A source or the Haar cascade does not exist.
        ValueError: The output folder overlaps a source, or holds something else than a previous
            output.
    """
    return run_clean(
        config, data, progress, map_shards, workers=workers, executor=executor, shard_scale=shard_scale
    )


__all__ = [
    "MANIFEST_COLUMNS",
    "MANIFEST_FILE",
    "REASONS",
    "CleanReport",
    "CleanShard",
    "ShardMapper",
    "clean",
    "plan_shards",
    "process_shard",
]
