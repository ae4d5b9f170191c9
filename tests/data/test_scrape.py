"""``emonext scrape`` end to end: real headless Chromium and real HTTP against a local search site.

The site (``tests/data/mock_search_site.py``) renders its results with JavaScript, appends more on
scroll and behind a "more" button, and serves good images next to every kind of bad URL; each must
end as a manifest row with the right status. Chromium is required: without it these tests fail
with the install command (CI installs ``chromium`` and ``chromium-driver``).
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import shutil
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import pytest
import requests

from emonext.config import ScrapeConfig, load_params
from emonext.scraping import ScrapeSummary, scrape
from emonext.scraping import download as download_module
from emonext.scraping.browser import BrowserUnavailableError, collect_image_urls, open_browser
from emonext.scraping.download import HostRateLimiter, ImageStore, fetch_image, make_session
from emonext.scraping.engines import BING, adapter_for
from emonext.scraping.manifest import COLUMNS, MANIFEST_NAME, ManifestRow, ManifestWriter, read_manifest
from tests.conftest import PARAMS_FILE
from tests.data.mock_search_site import MockSearchSite, Resource, Result, flat_image, noise_image

GOOD = {
    name: noise_image(seed) for seed, name in enumerate(["good_1", "good_2", "good_3", "good_4", "good_5"])
}
GOOD_PNG = noise_image(99, image_format="PNG")
SAD_ONLY = noise_image(42)
TRAVERSAL_PATH = "/img/..%2F..%2F..%2Fetc%2Fpasswd.jpg"
MIN_BYTES = 500
MAX_BYTES = 300_000
MAX_PIXELS = 1_000_000

#: Result path -> (status the manifest must record, the attribute carrying it in the page).
HAPPY_CASES: dict[str, tuple[str, str]] = {
    "/img/good_1.jpg": ("ok", "data-src"),
    "/img/good_2.png": ("ok", "src"),
    "/img/good_3.jpg": ("ok", "data-src"),
    "/img/missing.jpg": ("http_404", "data-src"),
    "/img/slow.jpg": ("timeout", "data-src"),
    "/img/page.jpg": ("content_type_mismatch", "data-src"),
    "/img/fake.jpg": ("not_image", "data-src"),
    "/img/truncated.jpg": ("undecodable", "data-src"),
    "/img/huge_pixels.png": ("too_many_pixels", "data-src"),
    "/img/huge_bytes.png": ("too_large", "data-src"),
    "/img/huge_stream.png": ("too_large", "data-src"),
    "/img/tiny.png": ("too_small", "data-src"),
    "/redirect/2": ("ok", "data-src"),
    "/img/copy_of_good_1.jpg": ("duplicate", "data-src"),
    TRAVERSAL_PATH: ("ok", "data-src"),
}
SAD_CASES: dict[str, tuple[str, str]] = {
    "/img/sad_only.jpg": ("ok", "data-src"),
    # The same content as a happy image is stored under sad too: the cleaning step reports and drops
    # images found under two labels, so it must see both.
    "/img/good_1_for_sad.jpg": ("ok", "data-src"),
}


def _resources() -> dict[str, Resource]:
    html_page = b"<!doctype html><html><body>" + b"<p>a web page, not an image</p>" * 40 + b"</body></html>"
    noise_png = noise_image(7, size=(400, 400), image_format="PNG")
    assert len(noise_png) > MAX_BYTES
    return {
        "/img/good_1.jpg": Resource(GOOD["good_1"]),
        "/img/good_2.png": Resource(GOOD_PNG, content_type="image/png"),
        "/img/good_3.jpg": Resource(GOOD["good_3"], content_type="application/octet-stream"),
        "/img/slow.jpg": Resource(GOOD["good_2"], delay=3.0),
        "/img/page.jpg": Resource(html_page, content_type="text/html; charset=utf-8"),
        "/img/fake.jpg": Resource(html_page, content_type="image/jpeg"),
        "/img/truncated.jpg": Resource(GOOD["good_3"][: len(GOOD["good_3"]) // 2]),
        "/img/huge_pixels.png": Resource(flat_image((2000, 2000)), content_type="image/png"),
        "/img/huge_bytes.png": Resource(noise_png, content_type="image/png"),
        "/img/huge_stream.png": Resource(noise_png, content_type="image/png", send_length=False),
        "/img/tiny.png": Resource(flat_image((2, 2)), content_type="image/png"),
        "/redirect/2": Resource(status=302, location="/redirect/1", content_type=""),
        "/redirect/1": Resource(status=301, location="/img/good_4.jpg", content_type=""),
        "/img/good_4.jpg": Resource(GOOD["good_4"]),
        "/img/copy_of_good_1.jpg": Resource(GOOD["good_1"]),
        TRAVERSAL_PATH: Resource(GOOD["good_5"]),
        "/img/sad_only.jpg": Resource(SAD_ONLY),
        "/img/good_1_for_sad.jpg": Resource(GOOD["good_1"]),
        "/img/flaky.jpg": Resource(noise_image(11), failures_before_success=2),
    }


def _results(site: MockSearchSite, cases: dict[str, tuple[str, str]]) -> list[Result]:
    results = []
    for path, (_status, attribute) in cases.items():
        # Relative URLs must be resolved against the results page.
        url = path.lstrip("/") if attribute == "src" else site.url(path)
        results.append(Result(url, attribute))
    # A data: thumbnail the engine's url_pattern must filter out.
    results.insert(3, Result("data:image/png;base64,iVBORw0KGgo=", "src"))
    return results


@pytest.fixture(scope="module")
def site() -> Iterator[MockSearchSite]:
    with MockSearchSite(resources=_resources(), batch_size=4, scroll_limit=12) as running:
        running.results["happy expression"] = _results(running, HAPPY_CASES)
        running.results["sad expression"] = _results(running, SAD_CASES)
        yield running


def scrape_config(
    site: MockSearchSite, output_dir: Path, *overrides: str, require_browser: bool = True
) -> ScrapeConfig:
    """The repository's scrape settings pointed at the local site, with small limits and timeouts.

    Fails (never skips) when Chromium or ChromeDriver is missing and ``require_browser`` is set.
    """
    params = load_params(
        PARAMS_FILE,
        [
            "scrape.enabled=true",
            "scrape.engine=generic",
            f"scrape.generic.results_url={site.base_url}/search?q={{query}}",
            "scrape.generic.image_selector=img.result",
            "scrape.generic.image_attributes=[data-src, src]",
            "scrape.generic.more_button=button#more",
            "scrape.keyword_templates=['{emotion} expression']",
            "scrape.images_per_keyword=40",
            f"scrape.output_dir={output_dir}",
            "scrape.browser.scroll_pause=1.0",
            "scrape.browser.max_scrolls=2",
            "scrape.browser.page_load_timeout=10",
            "scrape.download.workers=4",
            "scrape.download.timeout=1",
            "scrape.download.retries=0",
            "scrape.download.backoff=0.05",
            "scrape.download.per_host_delay=0.01",
            f"scrape.download.min_bytes={MIN_BYTES}",
            f"scrape.download.max_bytes={MAX_BYTES}",
            f"scrape.download.max_pixels={MAX_PIXELS}",
            *overrides,
        ],
    )
    browser = params.scrape.browser
    required = [(browser.binary, "chromium"), (browser.driver, "chromium-driver")] if require_browser else []
    for path, package in required:
        if not Path(path).is_file():
            pytest.fail(f"{path} is missing: these tests need real Chromium (apt-get install {package})")
    return params.scrape


@dataclass
class ScrapeRun:
    config: ScrapeConfig
    summary: ScrapeSummary
    rows: list[ManifestRow]
    seconds: float


@pytest.fixture(scope="module")
def first_run(site: MockSearchSite, tmp_path_factory: pytest.TempPathFactory) -> ScrapeRun:
    config = scrape_config(site, tmp_path_factory.mktemp("scrape") / "scraped")
    started = time.monotonic()
    summary = scrape(config, ["happy", "sadness"], progress=False)
    seconds = time.monotonic() - started
    return ScrapeRun(config, summary, read_manifest(config.output_dir / MANIFEST_NAME), seconds)


def _by_path(rows: list[ManifestRow], site: MockSearchSite) -> dict[tuple[str, str], ManifestRow]:
    return {(row.label, row.url.removeprefix(site.base_url)): row for row in rows}


def _stored_files(output_dir: Path) -> dict[str, float]:
    return {
        str(path.relative_to(output_dir)): path.stat().st_mtime
        for path in output_dir.rglob("*")
        if path.is_file() and path.name not in (MANIFEST_NAME, "summary.json")
    }


def test_scrape_collects_good_images_and_records_every_bad_url(
    first_run: ScrapeRun, site: MockSearchSite
) -> None:
    rows = _by_path(first_run.rows, site)
    expected = {("happy", path): status for path, (status, _) in HAPPY_CASES.items()}
    expected |= {("sad", path): status for path, (status, _) in SAD_CASES.items()}
    assert {key: row.status for key, row in rows.items()} == expected, "every result URL, and only those"
    assert all(row.engine == "generic" and row.fetched_at for row in first_run.rows)
    assert rows[("happy", "/img/good_1.jpg")].keyword == "happy expression"
    assert rows[("happy", "/img/good_1.jpg")].page == f"{site.base_url}/search?q=happy+expression"

    reasons = {path: row.reason for (_label, path), row in rows.items()}
    assert "404" in reasons["/img/missing.jpg"]
    assert "text/html" in reasons["/img/page.jpg"]
    assert "max_pixels" in reasons["/img/huge_pixels.png"]
    assert "max_bytes" in reasons["/img/huge_bytes.png"]
    assert "min_bytes" in reasons["/img/tiny.png"]
    assert "JPEG" in reasons["/img/truncated.jpg"]
    good_1 = rows[("happy", "/img/good_1.jpg")]
    assert rows[("happy", "/img/copy_of_good_1.jpg")].sha256 == good_1.sha256
    assert (good_1.width, good_1.height, good_1.bytes) == (96, 96, len(GOOD["good_1"]))
    assert rows[("happy", "/img/huge_pixels.png")].width == 2000, "dimensions come from the header"
    assert rows[("happy", "/redirect/2")].sha256 == hashlib.sha256(GOOD["good_4"]).hexdigest()

    summary = first_run.summary.to_dict()
    assert summary["classes"]["happy"]["ok"] == 5
    assert summary["classes"]["happy"]["duplicate"] == 1
    assert summary["classes"]["happy"]["failed"]["too_large"] == 2
    assert summary["classes"]["sad"] == {"ok": 2, "duplicate": 0, "skipped": 0, "failed": {}}
    assert summary["downloads"] == len(HAPPY_CASES) + len(SAD_CASES)
    assert summary["downloads_per_second"] > 0
    assert first_run.seconds < 25


def test_stored_files_are_content_addressed_inside_output_dir(first_run: ScrapeRun) -> None:
    output_dir = first_run.config.output_dir
    stored = {
        path.relative_to(output_dir).as_posix(): path.read_bytes()
        for path in output_dir.parent.rglob("*")
        if path.is_file() and path.name not in (MANIFEST_NAME, "summary.json")
    }
    names = {*(f"happy/{hashlib.sha256(GOOD[name]).hexdigest()}.jpg" for name in GOOD)}
    names |= {f"happy/{hashlib.sha256(GOOD_PNG).hexdigest()}.png"}
    names |= {
        f"sad/{hashlib.sha256(SAD_ONLY).hexdigest()}.jpg",
        f"sad/{hashlib.sha256(GOOD['good_1']).hexdigest()}.jpg",
    }
    names -= {f"happy/{hashlib.sha256(GOOD['good_2']).hexdigest()}.jpg"}  # only behind the slow URL
    assert set(stored) == names
    for name, data in stored.items():
        assert re.fullmatch(r"(happy|sad)/[0-9a-f]{64}\.(jpg|png)", name)
        assert name.split("/")[1].split(".")[0] == hashlib.sha256(data).hexdigest()
    assert not list(output_dir.parent.parent.rglob("passwd*")), "a traversal-looking URL escaped"

    assert json.loads((output_dir / "summary.json").read_text()) == first_run.summary.to_dict()
    with (output_dir / MANIFEST_NAME).open(newline="") as handle:
        header = next(csv.reader(handle))
    assert tuple(header) == COLUMNS


def test_rerun_downloads_nothing_new(first_run: ScrapeRun, site: MockSearchSite, tmp_path: Path) -> None:
    output_dir = tmp_path / "scraped"
    shutil.copytree(first_run.config.output_dir, output_dir)
    before = _stored_files(output_dir)
    user_agent = first_run.config.download.user_agent
    requests_before = len(site.image_requests(user_agent))

    summary = scrape(
        first_run.config.model_copy(update={"output_dir": output_dir}), ["happy", "sad"], progress=False
    )

    assert site.image_requests(user_agent)[requests_before:] == ["/img/slow.jpg"], (
        "only the transient failure"
    )
    assert summary.classes["happy"].ok == 0 and summary.classes["happy"].duplicate == 0
    assert summary.classes["happy"].skipped == len(HAPPY_CASES) - 1
    assert dict(summary.classes["happy"].failed) == {"timeout": 1}
    assert summary.classes["sad"].skipped == len(SAD_CASES)
    assert _stored_files(output_dir) == before
    rows = read_manifest(output_dir / MANIFEST_NAME)
    assert len(rows) == len(first_run.rows)
    assert not [key for key, count in Counter(row.url for row in rows).items() if count > 1]


def test_bing_style_json_results(site: MockSearchSite, tmp_path: Path) -> None:
    config = scrape_config(site, tmp_path)
    adapter = replace(BING, results_url=f"{site.base_url}/bing?q={{query}}", more_button="button#more")
    with open_browser(config.browser) as driver:
        urls = collect_image_urls(driver, adapter, "sad expression", 10, config.browser)
    assert urls == [site.url(path) for path in SAD_CASES], "murl values from the m attribute's JSON"


def test_collection_stops_at_the_wanted_count(site: MockSearchSite, tmp_path: Path) -> None:
    config = scrape_config(site, tmp_path)
    adapter = adapter_for(config)
    static_html = requests.get(adapter.results_page_url("happy expression"), timeout=5).text
    assert "<img" not in static_html, "results exist only once the page's script runs"
    with open_browser(config.browser) as driver:
        no_scrolling = config.browser.model_copy(update={"max_scrolls": 0})
        first_batch = collect_image_urls(driver, adapter, "happy expression", 40, no_scrolling)
        urls = collect_image_urls(driver, adapter, "happy expression", 6, config.browser)
    assert len(first_batch) == 3, "without scrolling only the first rendered batch (4, one a data: URI)"
    assert urls[:2] == [site.url("/img/good_1.jpg"), site.url("/img/good_2.png")]
    assert len(urls) == 6 and len(set(urls)) == 6
    assert all(url.startswith(site.base_url) for url in urls)


def test_missing_driver_or_browser_is_a_clear_error(site: MockSearchSite, tmp_path: Path) -> None:
    config = scrape_config(
        site, tmp_path, "scrape.browser.driver=/nonexistent/chromedriver", require_browser=False
    )
    with pytest.raises(BrowserUnavailableError, match=r"ChromeDriver not found at /nonexistent/chromedriver"):
        scrape(config, ["happy"], progress=False)
    config = scrape_config(
        site, tmp_path, "scrape.browser.binary=/nonexistent/chromium", require_browser=False
    )
    with pytest.raises(
        BrowserUnavailableError, match=r"Chromium not found at /nonexistent/chromium.*apt-get"
    ):
        scrape(config, ["happy"], progress=False)
    not_chromium = shutil.which("true")
    assert not_chromium is not None
    config = scrape_config(site, tmp_path, f"scrape.browser.binary={not_chromium}")
    with pytest.raises(
        BrowserUnavailableError, match=rf"could not start Chromium {not_chromium} with ChromeDriver"
    ):
        scrape(config, ["happy"], progress=False)
    assert not (tmp_path / MANIFEST_NAME).exists() or read_manifest(tmp_path / MANIFEST_NAME) == []


def test_proxy_is_used_for_http_and_https(site: MockSearchSite, tmp_path: Path) -> None:
    config = scrape_config(site, tmp_path, f"scrape.download.proxy={site.base_url}").download
    session = make_session(config)
    assert session.proxies == {"http": site.base_url, "https": site.base_url}
    assert session.headers["User-Agent"] == config.user_agent
    # The site doubles as a forward proxy: a host that does not exist is only reachable through it.
    outcome = fetch_image(session, "http://images.example.invalid/img/good_1.jpg", config, HostRateLimiter(0))
    assert outcome.status == "ok"
    assert "http://images.example.invalid/img/good_1.jpg" in site.proxied


def test_transient_errors_are_retried_with_backoff(site: MockSearchSite, tmp_path: Path) -> None:
    config = scrape_config(
        site, tmp_path, "scrape.download.retries=2", "scrape.download.backoff=0.05"
    ).download
    started = time.monotonic()
    outcome = fetch_image(make_session(config), site.url("/img/flaky.jpg"), config, HostRateLimiter(0))
    assert outcome.status == "ok"
    assert time.monotonic() - started >= 0.05 + 0.1, "waited backoff * 2**attempt between attempts"
    no_retry = config.model_copy(update={"retries": 0})
    site.resources["/img/flaky_again.jpg"] = Resource(noise_image(12), failures_before_success=1)
    outcome = fetch_image(
        make_session(no_retry), site.url("/img/flaky_again.jpg"), no_retry, HostRateLimiter(0)
    )
    assert (outcome.status, outcome.reason) == ("http_503", "HTTP 503 Service Unavailable")


def test_per_host_delay_spaces_requests_to_one_host() -> None:
    limiter = HostRateLimiter(0.1)
    started = time.monotonic()
    for _ in range(4):
        limiter.wait("http://a.example/x.jpg")
    assert time.monotonic() - started >= 0.3
    started = time.monotonic()
    limiter.wait("http://b.example/x.jpg")
    assert time.monotonic() - started < 0.05, "another host is not delayed"


def test_interrupted_write_leaves_no_partial_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    data = GOOD["good_1"]

    def write_half_then_die(path: Path, payload: bytes) -> None:
        path.write_bytes(payload[: len(payload) // 2])
        raise KeyboardInterrupt

    monkeypatch.setattr(download_module, "_write_file", write_half_then_die)
    store = ImageStore(tmp_path)
    with pytest.raises(KeyboardInterrupt):
        store.add("happy", data, "jpg")
    assert list((tmp_path / "happy").iterdir()) == []
    assert not store.has("happy", hashlib.sha256(data).hexdigest())

    monkeypatch.undo()
    sha = hashlib.sha256(data).hexdigest()
    stale = tmp_path / "happy" / f".{sha}.jpg.k1ll3d.tmp"  # what a SIGKILL during a write leaves
    stale.write_bytes(data[:10])
    assert ImageStore(tmp_path).add("happy", data, "jpg") == (sha, True)
    assert [path.name for path in (tmp_path / "happy").iterdir()] == [f"{sha}.jpg"]
    with pytest.raises(ValueError, match="safe folder name"):
        ImageStore(tmp_path).add("../escape", data, "jpg")


def test_torn_manifest_line_is_dropped_and_repaired(tmp_path: Path) -> None:
    path = tmp_path / MANIFEST_NAME
    row = ManifestRow(
        url="http://x/a.jpg",
        page="http://x/search?q=a",
        keyword="happy expression",
        engine="generic",
        label="happy",
        sha256=None,
        bytes=None,
        width=None,
        height=None,
        fetched_at="2026-01-01T00:00:00+00:00",
        status="http_404",
        reason="HTTP 404 Not Found",
    )
    with ManifestWriter(path) as manifest:
        manifest.append(row)
    with path.open("a") as handle:
        handle.write("http://x/b.jpg,http://x/search?q=a,happy exp")  # a crash mid-row
    assert read_manifest(path) == [row]

    with ManifestWriter(path) as manifest:
        assert manifest.done("happy", "http://x/a.jpg") == row, "a 404 is final"
        manifest.append(replace(row, url="http://x/c.jpg", status="timeout", reason="timed out"))
    with ManifestWriter(path) as manifest:
        assert manifest.done("happy", "http://x/c.jpg") is None, "a timeout is tried again"
    assert [item.url for item in read_manifest(path)] == ["http://x/a.jpg", "http://x/c.jpg"]
    assert path.read_text().endswith("\n")


def test_disabled_scrape_keeps_earlier_downloads_and_never_starts_a_browser(tmp_path: Path) -> None:
    output_dir = tmp_path / "scraped"
    (output_dir / "happy").mkdir(parents=True)
    kept = output_dir / "happy" / "earlier.jpg"
    kept.write_bytes(b"an earlier download")
    params = load_params(
        PARAMS_FILE,
        [f"scrape.output_dir={output_dir}", "scrape.browser.binary=/no/such/chromium"],
    )
    assert not params.scrape.enabled
    summary = scrape(params.scrape, params.data.classes, progress=False)
    assert summary.downloads == 0 and kept.read_bytes() == b"an earlier download"
    assert (output_dir / "manifest.csv").read_text().splitlines() == [",".join(COLUMNS)]
    assert (output_dir / "summary.json").is_file()
