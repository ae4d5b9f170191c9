"""Web image scraping by emotion keyword (``emonext scrape``).

For each class and keyword template (``"{emotion} expression"`` ...), headless Chromium loads the
engine's results page and scrolls until ``images_per_keyword`` image URLs are found; a thread pool
downloads, validates and stores them as ``<output_dir>/<label>/<sha256>.<ext>`` while the browser
moves on to the next keyword. Every URL gets a row in ``<output_dir>/manifest.csv``; the run's
counts go to ``<output_dir>/summary.json``.

Runs are resumable and idempotent: URLs already final in the manifest are not fetched again,
content already stored under a label is recorded as a duplicate and not stored twice, keywords
that already have their URLs are not searched again, and an interrupted run leaves complete files
and a valid manifest. The same content found under two labels is stored under both: the cleaning
step must see the conflict to report and drop it.

Example:
    >>> from emonext.config import load_params
    >>> params = load_params("params.yaml")
    >>> summary = scrape(params.scrape, params.scrape.classes or params.data.classes)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future
from contextlib import ExitStack
from pathlib import Path

from selenium.webdriver.remote.webdriver import WebDriver
from tqdm import tqdm

from emonext.config import ScrapeConfig
from emonext.fileio import write_json
from emonext.labels import canonical_class
from emonext.scraping.browser import BrowserUnavailableError, collect_image_urls, open_browser
from emonext.scraping.download import LABEL_PATTERN, Downloader, DownloadJob, ImageStore
from emonext.scraping.engines import EngineAdapter, adapter_for
from emonext.scraping.manifest import (
    MANIFEST_NAME,
    ClassCounts,
    ManifestRow,
    ManifestWriter,
    ScrapeSummary,
    is_transient,
    read_manifest,
)

logger = logging.getLogger(__name__)

SUMMARY_NAME = "summary.json"


def label_for(class_name: str) -> str:
    """The folder label of a class name: its canonical name (``happiness`` -> ``happy``).

    Raises:
        ValueError: The name is not usable as a folder name.
    """
    label = canonical_class(class_name) or class_name.strip().lower()
    if not LABEL_PATTERN.match(label):
        raise ValueError(f"class {class_name!r}: not a safe folder name (a-z, 0-9, _ and - only)")
    return label


def keywords_for(label: str, templates: Sequence[str]) -> list[str]:
    """The search phrases of one class: each template with ``{emotion}`` replaced, without repeats."""
    return list(dict.fromkeys(template.replace("{emotion}", label).strip() for template in templates))


def _final_rows_per_keyword(manifest: ManifestWriter) -> dict[tuple[str, str], int]:
    counts: dict[tuple[str, str], int] = {}
    for row in manifest.previous.values():
        if not is_transient(row.status):
            counts[(row.label, row.keyword)] = counts.get((row.label, row.keyword), 0) + 1
    return counts


def scrape(config: ScrapeConfig, classes: Sequence[str], progress: bool = True) -> ScrapeSummary:
    """Search, download, validate and store images for every class and keyword.

    Args:
        config: The ``scrape`` section of ``params.yaml``.
        classes: Class names to scrape (``scrape.classes`` or, when that is null, ``data.classes``).
        progress: Show a download progress bar (on stderr).

    Returns:
        Per class counts of this run and its download speed (also written to ``summary.json``).

    Raises:
        ValueError: A class name is not a safe folder name, or the engine settings are invalid.
        BrowserUnavailableError: Chromium or ChromeDriver is missing or does not start.
        ManifestError: ``manifest.csv`` exists but is not a scrape manifest.
        OSError: An image or the manifest could not be written.
    """
    started = time.monotonic()
    labels = list(dict.fromkeys(label_for(name) for name in classes))
    if not labels:
        raise ValueError("no classes to scrape: set scrape.classes or data.classes")
    adapter = adapter_for(config)
    output_dir = Path(config.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    summary = ScrapeSummary(classes={label: ClassCounts() for label in labels})
    if not config.enabled:
        return _keep_previous_scrape(output_dir, summary)
    lock = threading.Lock()
    futures: list[Future[ManifestRow]] = []

    with ExitStack() as stack:
        manifest = stack.enter_context(ManifestWriter(output_dir / MANIFEST_NAME))
        bar = stack.enter_context(
            tqdm(total=0, unit="img", desc="download", disable=not progress, leave=False)
        )

        def on_row(row: ManifestRow) -> None:
            manifest.append(row)
            with lock:
                summary.record(row.label, row.status)
                bar.update(1)

        # Entered last, so it is left first: the downloads finish before the manifest is compacted.
        downloader = stack.enter_context(Downloader(config.download, ImageStore(output_dir), on_row))
        final_per_keyword = _final_rows_per_keyword(manifest)
        browser: WebDriver | None = None
        for label in labels:
            seen: set[str] = set()
            for keyword in keywords_for(label, config.keyword_templates):
                already = final_per_keyword.get((label, keyword), 0)
                if already >= config.images_per_keyword:
                    logger.info("%r: %d URLs already done, not searched again", keyword, already)
                    with lock:
                        summary.classes[label].skipped += already
                    continue
                if browser is None:
                    browser = stack.enter_context(open_browser(config.browser, config.download.proxy))
                page = adapter.results_page_url(keyword)
                urls = collect_image_urls(
                    browser, adapter, keyword, config.images_per_keyword, config.browser
                )
                for url in urls:
                    if url in seen:
                        continue
                    seen.add(url)
                    if manifest.done(label, url) is not None:
                        with lock:
                            summary.record(label, "skipped")
                        continue
                    job = DownloadJob(url=url, page=page, keyword=keyword, engine=adapter.name, label=label)
                    futures.append(downloader.submit(job))
                with lock:
                    bar.total = len(futures)
                    bar.refresh()

    for future in futures:
        future.result()  # re-raises a worker's unexpected error (e.g. a full disk)
    summary.download_seconds = downloader.active_seconds
    summary.elapsed_seconds = time.monotonic() - started
    write_json(output_dir / SUMMARY_NAME, summary.to_dict())
    for label, counts in summary.classes.items():
        logger.info(
            "%s: %d ok, %d duplicate, %d skipped, failed %s",
            label,
            counts.ok,
            counts.duplicate,
            counts.skipped,
            dict(counts.failed) or "none",
        )
    logger.info(
        "%d downloads in %.1fs (%.1f/s); run took %.1fs",
        summary.downloads,
        summary.download_seconds,
        summary.downloads_per_second,
        summary.elapsed_seconds,
    )
    return summary


def _keep_previous_scrape(output_dir: Path, summary: ScrapeSummary) -> ScrapeSummary:
    """Scraping is off: leave earlier downloads alone and make sure a (possibly empty) manifest
    exists, so downstream steps and DVC see a valid, unchanged output folder."""
    with ManifestWriter(output_dir / MANIFEST_NAME) as manifest:
        for row in manifest.previous.values():
            summary.record(row.label, "skipped")
    if not (output_dir / SUMMARY_NAME).is_file():
        write_json(output_dir / SUMMARY_NAME, summary.to_dict())
    logger.info(
        "scraping is off (scrape.enabled=false): kept %d earlier manifest rows in %s",
        sum(counts.skipped for counts in summary.classes.values()),
        output_dir,
    )
    return summary


__all__ = [
    "BrowserUnavailableError",
    "ClassCounts",
    "EngineAdapter",
    "ManifestRow",
    "ScrapeSummary",
    "adapter_for",
    "keywords_for",
    "label_for",
    "read_manifest",
    "scrape",
]
