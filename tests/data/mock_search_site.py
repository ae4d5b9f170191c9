"""A local image search site for the scraper's tests and benchmark (``http.server`` on 127.0.0.1).

``/search?q=...`` is a results page whose HTML holds no results: a script renders the first batch
of ``<img class="result">`` elements after the page loads, appends one more batch each time the
page is scrolled to the bottom, and reveals a ``button#more`` that shows the rest once scrolling
has nothing left to add. ``/bing?q=...`` renders the same results the way Bing does (``a.iusc``
elements with JSON in their ``m`` attribute). Every other path is looked up in :attr:`resources`.

The site also answers proxy-style requests (``GET http://other.host/path``), recording the absolute
URL in :attr:`proxied`, so a test can check that downloads really go through a configured proxy.

Run as a program, it serves a folder of images as search results on the port ``params.yaml``'s
generic engine points at, for a manual ``emonext scrape --set scrape.engine=generic``::

    python -m tests.data.mock_search_site --images /path/to/photos [--port 8765]

A query's first word picks the subfolder (``happy expression`` -> ``photos/happy/``); without a
matching subfolder every image in the folder tree is a result.
"""

from __future__ import annotations

import argparse
import html
import io
import json
import mimetypes
import random
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from urllib.parse import parse_qs, urlsplit

from PIL import Image


@dataclass
class Resource:
    """What the site answers for one path.

    Args:
        body: Response body.
        content_type: ``Content-Type`` header (empty: none sent).
        status: HTTP status.
        delay: Seconds to sleep before answering.
        location: Redirect target (sent as ``Location``), for 3xx statuses.
        send_length: Send ``Content-Length``; without it the body ends when the connection closes.
        failures_before_success: Answer 503 this many times before answering normally.
    """

    body: bytes = b""
    content_type: str = "image/jpeg"
    status: int = 200
    delay: float = 0.0
    location: str | None = None
    send_length: bool = True
    failures_before_success: int = 0


@dataclass
class Result:
    """One search result: the URL text placed in the page and the attribute that carries it."""

    url: str
    attribute: str = "data-src"


@dataclass
class RequestRecord:
    """One request the site received."""

    path: str
    user_agent: str


_RESULTS_PAGE = """<!doctype html>
<html><head><meta charset="utf-8"><title>results for {query}</title>
<style>
  body {{ margin: 0; }}
  .result, .iusc {{ display: block; width: 240px; height: 320px; margin: 8px; background: #ddd; }}
  #more[hidden] {{ display: none; }}
</style></head>
<body>
<div id="results"></div>
<button id="more" hidden>See more images</button>
<script>
const results = {results_json};
const layout = {layout_json};
const batch = {batch_size};
const scrollLimit = {scroll_limit};
const box = document.getElementById("results");
const more = document.getElementById("more");
let shown = 0;
let pending = false;
function render(upTo) {{
  for (const item of results.slice(shown, upTo)) {{
    let element;
    if (layout === "bing") {{
      element = document.createElement("a");
      element.className = "iusc";
      element.setAttribute("href", "/images/detail?id=" + shown);
      element.setAttribute("m", JSON.stringify({{murl: item.url, turl: "/thumb.jpg"}}));
    }} else {{
      element = document.createElement("img");
      element.className = "result";
      element.alt = "";
      element.setAttribute(item.attribute, item.url);
    }}
    box.appendChild(element);
    shown += 1;
  }}
}}
function atBottom() {{
  return window.innerHeight + window.scrollY >= document.documentElement.scrollHeight - 40;
}}
window.addEventListener("scroll", () => {{
  if (pending || !atBottom()) return;
  if (shown < Math.min(scrollLimit, results.length)) {{
    pending = true;
    setTimeout(() => {{ render(Math.min(shown + batch, scrollLimit)); pending = false; }}, 80);
  }} else if (shown < results.length) {{
    more.hidden = false;
  }}
}});
more.addEventListener("click", () => {{
  more.hidden = true;
  setTimeout(() => render(results.length), 80);
}});
setTimeout(() => render(Math.min(batch, scrollLimit)), 120);
</script>
</body></html>
"""


@dataclass
class MockSearchSite:
    """The site; use as a context manager (or :meth:`start` / :meth:`stop`).

    Args:
        results: Results per query (the ``q`` parameter).
        resources: Responses per raw request path (query string included, not decoded).
        batch_size: Results rendered at load and per scroll.
        scroll_limit: Results reachable by scrolling; the rest need the "more" button.
        extra_delay: Seconds added before every resource response (simulated latency).
    """

    results: dict[str, list[Result]] = field(default_factory=dict)
    resources: dict[str, Resource] = field(default_factory=dict)
    batch_size: int = 4
    scroll_limit: int = 10**9
    extra_delay: float = 0.0
    requests: list[RequestRecord] = field(default_factory=list)
    proxied: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._failures: dict[str, int] = {}

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` of the running site."""
        if self._server is None:
            raise RuntimeError("the site is not running")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def url(self, path: str) -> str:
        """Absolute URL of a path on this site."""
        return self.base_url + path

    def start(self, port: int = 0) -> MockSearchSite:
        """Listen on 127.0.0.1 (``port`` 0: a free port) in a background thread."""
        site = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                site._handle(self)

            def log_message(self, format: str, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        # A client that gave up on a slow response leaves its handler thread sleeping; don't wait.
        server.block_on_close = False
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, name="mock-search-site", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> MockSearchSite:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def image_requests(self, user_agent: str) -> list[str]:
        """Paths requested with ``user_agent`` (the scraper's, not the browser's)."""
        with self._lock:
            return [record.path for record in self.requests if record.user_agent == user_agent]

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        raw_path = handler.path
        if raw_path.startswith(("http://", "https://")):
            with self._lock:
                self.proxied.append(raw_path)
            parts = urlsplit(raw_path)
            raw_path = parts.path + (f"?{parts.query}" if parts.query else "")
        with self._lock:
            self.requests.append(RequestRecord(raw_path, handler.headers.get("User-Agent", "")))
        try:
            parts = urlsplit(raw_path)
            if parts.path in ("/search", "/bing"):
                query = parse_qs(parts.query).get("q", [""])[0]
                layout = "bing" if parts.path == "/bing" else "img"
                self._send(handler, 200, "text/html; charset=utf-8", self._results_page(query, layout))
                return
            resource = self.resources.get(raw_path)
            if resource is None:
                self._send(handler, 404, "text/html", b"<html><body>not found</body></html>")
                return
            self._serve(handler, raw_path, resource)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client gave up (a timeout test); nothing to answer

    def _serve(self, handler: BaseHTTPRequestHandler, raw_path: str, resource: Resource) -> None:
        time.sleep(self.extra_delay + resource.delay)
        with self._lock:
            failures = self._failures.get(raw_path, 0)
            if failures < resource.failures_before_success:
                self._failures[raw_path] = failures + 1
                failing = True
            else:
                failing = False
        if failing:
            self._send(handler, 503, "text/plain", b"try again")
            return
        headers = {"Location": resource.location} if resource.location else {}
        self._send(
            handler, resource.status, resource.content_type, resource.body, resource.send_length, headers
        )

    @staticmethod
    def _send(
        handler: BaseHTTPRequestHandler,
        status: int,
        content_type: str,
        body: bytes,
        send_length: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        handler.send_response(status)
        if content_type:
            handler.send_header("Content-Type", content_type)
        if send_length:
            handler.send_header("Content-Length", str(len(body)))
        for name, value in (headers or {}).items():
            handler.send_header(name, value)
        handler.end_headers()
        handler.wfile.write(body)

    def _results_page(self, query: str, layout: str) -> bytes:
        results = [{"url": item.url, "attribute": item.attribute} for item in self.results.get(query, [])]
        page = _RESULTS_PAGE.format(
            query=html.escape(query),
            # "</" would end the script element early if a URL contained it.
            results_json=json.dumps(results).replace("</", "<\\/"),
            layout_json=json.dumps(layout),
            batch_size=self.batch_size,
            scroll_limit=self.scroll_limit,
        )
        return page.encode("utf-8")


def noise_image(seed: int, size: tuple[int, int] = (96, 96), image_format: str = "JPEG") -> bytes:
    """A random-noise RGB image (unique per seed, incompressible enough to pass size checks)."""
    width, height = size
    pixels = random.Random(seed).randbytes(width * height * 3)
    buffer = io.BytesIO()
    Image.frombytes("RGB", size, pixels).save(buffer, format=image_format)
    return buffer.getvalue()


def flat_image(
    size: tuple[int, int], image_format: str = "PNG", color: tuple[int, int, int] = (200, 30, 30)
) -> bytes:
    """A single-colour image: tiny on disk however many pixels it has (a decompression-bomb stand-in)."""
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format=image_format)
    return buffer.getvalue()


def folder_site(folder: Path) -> MockSearchSite:
    """A site serving every image under ``folder`` (optionally in one subfolder per class) as results.

    A query's first word picks the class subfolder; without one, every image is a result.
    """
    images = sorted(
        path
        for path in folder.rglob("*")
        if path.is_file() and (mimetypes.guess_type(path.name)[0] or "").startswith("image/")
    )
    resources: dict[str, Resource] = {}
    by_class: dict[str, list[str]] = {}
    for number, path in enumerate(images):
        relative = path.relative_to(folder)
        url_path = f"/img/{number}{path.suffix.lower()}"
        resources[url_path] = Resource(
            path.read_bytes(), content_type=mimetypes.guess_type(path.name)[0] or ""
        )
        by_class.setdefault(relative.parts[0].lower() if len(relative.parts) > 1 else "", []).append(url_path)

    class FolderSite(MockSearchSite):
        def _results_page(self, query: str, layout: str) -> bytes:
            words = query.lower().split()
            paths = by_class.get(words[0] if words else "") or [
                path for group in by_class.values() for path in group
            ]
            self.results[query] = [Result(self.url(path)) for path in paths]
            return super()._results_page(query, layout)

    return FolderSite(resources=resources)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve a folder of images as a local image search site.")
    parser.add_argument(
        "--images", type=Path, required=True, help="image folder (optionally <class>/ subfolders)"
    )
    parser.add_argument("--port", type=int, default=8765)
    args = parser.parse_args()
    site = folder_site(args.images)
    site.start(port=args.port)
    print(f"serving {len(site.resources)} images at {site.base_url}/search?q={{query}} (Ctrl-C stops)")
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        site.stop()


if __name__ == "__main__":
    main()
