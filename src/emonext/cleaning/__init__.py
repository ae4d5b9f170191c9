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
    clean,
    plan_shards,
    process_shard,
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
