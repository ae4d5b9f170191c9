"""Download throughput of the scraper: the thread pool against one thread, on a site with latency.

A local site (the tests' mock search site) serves ``--images`` distinct JPEGs, each answer delayed
by ``--latency`` seconds as a remote server would be. The scraper's :class:`Downloader` fetches,
validates and stores all of them with ``--workers`` threads and with one thread, alternately,
``--repeats`` times; the median rates and their ratio are reported. All images come from one
host, so the per-host delay is off (with ``per_host_delay`` d, one host allows at most 1/d
downloads/s whatever the pool size).

    python bench/scrape_download.py --out bench/results/scrape_download.md
"""

from __future__ import annotations

import argparse
import logging
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # the mock site lives in the test package

from emonext.config import DownloadConfig, load_params  # noqa: E402
from emonext.fileio import write_atomically  # noqa: E402
from emonext.scraping.download import Downloader, DownloadJob, ImageStore  # noqa: E402
from tests.data.mock_search_site import MockSearchSite, Resource, noise_image  # noqa: E402

logger = logging.getLogger("bench.scrape_download")


def download_rate(site: MockSearchSite, paths: list[str], config: DownloadConfig) -> float:
    """Download every path once into a fresh folder; images per second (all must be stored)."""
    with tempfile.TemporaryDirectory(prefix="emonext-bench-") as folder:
        jobs = [
            DownloadJob(url=site.url(path), page="bench", keyword="bench", engine="bench", label="happy")
            for path in paths
        ]
        started = time.perf_counter()
        with Downloader(config, ImageStore(Path(folder))) as downloader:
            futures = [downloader.submit(job) for job in jobs]
        seconds = time.perf_counter() - started
        statuses = [future.result().status for future in futures]
    if statuses.count("ok") != len(paths):
        raise RuntimeError(f"not every download succeeded: {sorted(set(statuses))}")
    return len(paths) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml")
    parser.add_argument("--images", type=int, default=100)
    parser.add_argument("--latency", type=float, default=0.1, help="seconds added to every image answer")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "scrape_download.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    base = load_params(args.params).scrape.download.model_copy(
        update={"per_host_delay": 0.0, "retries": 0, "min_bytes": 100, "proxy": None}
    )
    resources = {
        f"/img/{index}.jpg": Resource(noise_image(index, size=(64, 64))) for index in range(args.images)
    }
    rates: dict[int, list[float]] = {args.workers: [], 1: []}
    with MockSearchSite(resources=resources, extra_delay=args.latency) as site:
        for repeat in range(args.repeats):
            for workers in rates:
                rate = download_rate(site, list(resources), base.model_copy(update={"workers": workers}))
                rates[workers].append(rate)
                logger.info("repeat %d, %d worker(s): %.1f downloads/s", repeat + 1, workers, rate)

    pool, single = statistics.median(rates[args.workers]), statistics.median(rates[1])
    ratio = pool / single
    lines = [
        "# Scraper download throughput",
        "",
        f"{args.images} distinct 64x64 JPEGs from a local site that answers each after"
        f" {args.latency * 1000:.0f} ms;",
        "fetch + validation (magic bytes, header pixel count, full decode) + SHA-256 + atomic store.",
        f"Median of {args.repeats} alternating repeats; per-host delay off (one host).",
        f"Machine: {platform.machine()}, Python {platform.python_version()}.",
        "",
        "| workers | downloads/s (median) | all repeats |",
        "|---|---|---|",
        f"| {args.workers} | {pool:.1f} | {', '.join(f'{rate:.1f}' for rate in rates[args.workers])} |",
        f"| 1 | {single:.1f} | {', '.join(f'{rate:.1f}' for rate in rates[1])} |",
        "",
        f"Speed-up of the pool: **{ratio:.1f}x**.",
        "",
        f"Command: `python bench/scrape_download.py --images {args.images} --latency {args.latency}"
        f" --workers {args.workers} --repeats {args.repeats}`",
        "",
    ]
    report = "\n".join(lines)
    write_atomically(args.out, report)
    print(report)


if __name__ == "__main__":
    main()
