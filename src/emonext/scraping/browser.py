"""Headless Chromium (Selenium 4) that loads image search results and collects image URLs.

Chromium and ChromeDriver are Debian's ``chromium`` and ``chromium-driver`` packages, used through
explicit paths from :class:`~emonext.config.BrowserConfig`; Selenium Manager is never asked to find
or download anything (``SE_OFFLINE=true``). Each browser gets a fresh temporary profile that is
removed when it closes.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urldefrag, urljoin

from selenium import webdriver
from selenium.common.exceptions import TimeoutException, WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webdriver import WebDriver

from emonext.config import BrowserConfig
from emonext.scraping.engines import EngineAdapter

logger = logging.getLogger(__name__)

#: Flags that let Chromium run headless as root in containers and keep it from calling home.
CHROMIUM_FLAGS: tuple[str, ...] = (
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--window-size=1280,1024",
    "--lang=en-US",
)

#: Seconds between two looks at the page while waiting for results to appear.
POLL_INTERVAL = 0.05

#: Returns the base URL and, per result element, the values of the requested attributes, in one
#: round trip (one ``get_attribute`` call per element and attribute is far slower).
_EXTRACT_SCRIPT = """
const [selector, names] = arguments;
const rows = Array.from(document.querySelectorAll(selector), el => names.map(n => el.getAttribute(n)));
return [document.baseURI, rows];
"""

_SCROLL_SCRIPT = (
    "window.scrollTo(0, Math.max(document.body.scrollHeight, document.documentElement.scrollHeight));"
)


class BrowserUnavailableError(RuntimeError):
    """Chromium or ChromeDriver is missing or does not start; the message names the paths."""


def _check_executable(path: Path, what: str, key: str, package: str) -> None:
    if not path.is_file():
        raise BrowserUnavailableError(
            f"{what} not found at {path} (scrape.browser.{key}); install Debian's {package} package "
            f"(apt-get install chromium chromium-driver) or set scrape.browser.{key}"
        )
    if not os.access(path, os.X_OK):
        raise BrowserUnavailableError(f"{what} at {path} (scrape.browser.{key}) is not executable")


@contextmanager
def open_browser(config: BrowserConfig, proxy: str | None = None) -> Iterator[WebDriver]:
    """Start Chromium through ChromeDriver and quit it (and remove its profile) afterwards.

    Args:
        config: Chromium and ChromeDriver paths, headless mode and page-load timeout.
        proxy: HTTP(S) proxy URL for the browser too, or None. Chromium ignores credentials in it.

    Yields:
        The Selenium driver.

    Raises:
        BrowserUnavailableError: The binary or the driver is missing, not executable, or they fail
            to start (e.g. mismatched versions); the message names both paths.
    """
    _check_executable(Path(config.binary), "Chromium", "binary", "chromium")
    _check_executable(Path(config.driver), "ChromeDriver", "driver", "chromium-driver")
    # Selenium Manager is skipped for an explicit driver path; this also keeps it offline if a
    # Selenium code path consults it anyway.
    os.environ.setdefault("SE_OFFLINE", "true")
    profile = Path(tempfile.mkdtemp(prefix="emonext-chromium-"))
    options = webdriver.ChromeOptions()
    options.binary_location = str(config.binary)
    if config.headless:
        options.add_argument("--headless=new")
    for flag in CHROMIUM_FLAGS:
        options.add_argument(flag)
    options.add_argument(f"--user-data-dir={profile}")
    if proxy:
        options.add_argument(f"--proxy-server={proxy}")
    service = Service(str(config.driver), env={**os.environ, "SE_OFFLINE": "true"})
    try:
        try:
            driver = webdriver.Chrome(service=service, options=options)
        except WebDriverException as error:
            raise BrowserUnavailableError(
                f"could not start Chromium {config.binary} with ChromeDriver {config.driver}: "
                f"{(error.msg or str(error)).strip()}"
            ) from error
        try:
            driver.set_page_load_timeout(config.page_load_timeout)
            yield driver
        finally:
            driver.quit()
    finally:
        shutil.rmtree(profile, ignore_errors=True)


def extract_image_urls(driver: WebDriver, adapter: EngineAdapter) -> list[str]:
    """The image URLs on the current page, absolute, de-duplicated, in page order.

    Relative URLs are resolved against the page's base URL; URLs not matching the adapter's
    ``url_pattern`` (``data:`` thumbnails, logos) are dropped.
    """
    base_url, rows = driver.execute_script(
        _EXTRACT_SCRIPT, adapter.image_selector, list(adapter.attributes_to_read)
    )
    names = adapter.attributes_to_read
    urls: dict[str, None] = {}
    for values in rows:
        candidate = adapter.image_url(dict(zip(names, values, strict=True)))
        if not candidate:
            continue
        absolute, _fragment = urldefrag(urljoin(base_url, candidate))
        if adapter.accepts(absolute):
            urls.setdefault(absolute)
    return list(urls)


def _wait_for_more(driver: WebDriver, adapter: EngineAdapter, known: int, timeout: float) -> list[str]:
    """Poll until more than ``known`` URLs are on the page or ``timeout`` seconds have passed."""
    deadline = time.monotonic() + timeout
    while True:
        urls = extract_image_urls(driver, adapter)
        if len(urls) > known or time.monotonic() >= deadline:
            return urls
        time.sleep(POLL_INTERVAL)


def _click_more_button(driver: WebDriver, adapter: EngineAdapter) -> bool:
    """Click the first visible "more results" button; whether one was clicked."""
    if not adapter.more_button:
        return False
    for button in driver.find_elements(By.CSS_SELECTOR, adapter.more_button):
        try:
            if button.is_displayed() and button.is_enabled():
                # A script click is not blocked by overlays that intercept a simulated mouse click.
                driver.execute_script("arguments[0].click();", button)
                return True
        except WebDriverException:
            continue
    return False


def collect_image_urls(
    driver: WebDriver, adapter: EngineAdapter, query: str, wanted: int, browser_config: BrowserConfig
) -> list[str]:
    """Load the results page of ``query`` and scroll until ``wanted`` image URLs are found.

    After the page loads, results that scripts add are waited for (up to the page-load timeout).
    Then each round scrolls to the bottom and waits up to ``scroll_pause`` seconds for new results,
    clicking the "more results" button when scrolling alone brought none. Collection stops when
    ``wanted`` URLs are found or ``max_scrolls`` rounds in a row brought nothing new.

    Args:
        driver: A browser from :func:`open_browser`.
        adapter: The engine's results-page description.
        query: The search keyword.
        wanted: Number of image URLs to collect.
        browser_config: Page-load timeout, scroll pause and scroll limit.

    Returns:
        Up to ``wanted`` absolute image URLs, de-duplicated, in page order.
    """
    page_url = adapter.results_page_url(query)
    try:
        driver.get(page_url)
    except TimeoutException:
        logger.warning(
            "%s: page load timed out after %ss; reading what loaded",
            page_url,
            browser_config.page_load_timeout,
        )
    urls = _wait_for_more(driver, adapter, 0, browser_config.page_load_timeout)
    rounds_without_news = 0
    while len(urls) < wanted and rounds_without_news < browser_config.max_scrolls:
        driver.execute_script(_SCROLL_SCRIPT)
        found = _wait_for_more(driver, adapter, len(urls), browser_config.scroll_pause)
        if len(found) <= len(urls) and _click_more_button(driver, adapter):
            found = _wait_for_more(driver, adapter, len(urls), browser_config.scroll_pause)
        # Pages may re-render (and reorder) results; keep the earlier order and append new ones.
        merged = dict.fromkeys(urls)
        merged.update(dict.fromkeys(found))
        rounds_without_news = rounds_without_news + 1 if len(merged) == len(urls) else 0
        urls = list(merged)
    logger.info("%s: %d image URLs (%d wanted)", page_url, min(len(urls), wanted), wanted)
    return urls[:wanted]
