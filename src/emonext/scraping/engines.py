"""Image search engines as adapters: where the results page is and how image URLs are read from it.

An :class:`EngineAdapter` describes one engine declaratively: a results-page URL template, the CSS
selector of the result elements, the attributes (or the JSON embedded in an attribute) that carry
each image URL, a pattern that kept URLs must match, and the "more results" button clicked when
scrolling stalls. The browser code in :mod:`emonext.scraping.browser` interprets it.

Built-in adapters:

* ``bing``: Bing Images. Each result is an ``a.iusc`` element whose ``m`` attribute holds JSON with
  the full-size image URL under ``murl``; more results load on scroll and behind a "See more
  images" button.
* ``google``: Google Images, **best effort**. Google changes its markup often and keeps full-size
  URLs inside scripts, so this adapter collects the result thumbnails Google serves from
  ``encrypted-tbn*.gstatic.com`` (large enough for 48x48 faces). When Google changes its markup
  (or shows a consent page), it finds nothing; use ``bing`` or a ``generic`` adapter instead.
* ``generic``: built entirely from ``scrape.generic`` in ``params.yaml``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import quote_plus

from emonext.config import EngineConfig, ScrapeConfig


@dataclass(frozen=True)
class EngineAdapter:
    """How one image search engine's results page is read.

    Args:
        name: Engine name recorded in the manifest.
        results_url: Results-page URL template with ``{query}`` (replaced by the URL-encoded keyword).
        image_selector: CSS selector of the result elements that carry image URLs.
        image_attributes: Attributes tried in order for the image URL; the first non-empty one wins.
        json_attribute: Attribute holding JSON with the image URL, tried before ``image_attributes``;
            None when the engine has none.
        json_key: Key of the image URL inside that JSON.
        more_button: CSS selector of a "more results" button clicked when scrolling stalls, or None.
        url_pattern: Regular expression an (absolute) image URL must match to be kept.
    """

    name: str
    results_url: str
    image_selector: str
    image_attributes: tuple[str, ...]
    json_attribute: str | None
    json_key: str | None
    more_button: str | None
    url_pattern: str

    def __post_init__(self) -> None:
        if "{query}" not in self.results_url:
            raise ValueError(
                f"engine {self.name}: results_url needs a {{query}} placeholder: {self.results_url}"
            )
        if not self.image_attributes and not self.json_attribute:
            raise ValueError(f"engine {self.name}: needs image_attributes or a json_attribute")
        if self.json_attribute and not self.json_key:
            raise ValueError(f"engine {self.name}: json_attribute {self.json_attribute!r} needs a json_key")
        try:
            re.compile(self.url_pattern)
        except re.error as error:
            raise ValueError(
                f"engine {self.name}: url_pattern {self.url_pattern!r} is invalid: {error}"
            ) from None

    def results_page_url(self, query: str) -> str:
        """The results page of ``query`` (URL-encoded into the template)."""
        return self.results_url.replace("{query}", quote_plus(query))

    @property
    def attributes_to_read(self) -> tuple[str, ...]:
        """Every attribute read from a result element: the JSON attribute first, then the others."""
        leading = (self.json_attribute,) if self.json_attribute else ()
        return leading + tuple(name for name in self.image_attributes if name != self.json_attribute)

    def image_url(self, attributes: Mapping[str, str | None]) -> str | None:
        """The image URL of one result element, before resolution against the page URL.

        Args:
            attributes: The element's values of :attr:`attributes_to_read` (None when absent).

        Returns:
            The URL from the JSON attribute if it has one, else the first non-empty plain attribute,
            else None.
        """
        if self.json_attribute and self.json_key:
            from_json = _json_value(attributes.get(self.json_attribute), self.json_key)
            if from_json:
                return from_json
        for name in self.image_attributes:
            value = (attributes.get(name) or "").strip()
            if value:
                return value
        return None

    def accepts(self, url: str) -> bool:
        """Whether an absolute image URL matches :attr:`url_pattern`."""
        return re.search(self.url_pattern, url) is not None


def _json_value(text: str | None, key: str) -> str | None:
    if not text:
        return None
    try:
        document = json.loads(text)
    except ValueError:
        return None
    value = document.get(key) if isinstance(document, dict) else None
    return value.strip() if isinstance(value, str) and value.strip() else None


BING = EngineAdapter(
    name="bing",
    results_url="https://www.bing.com/images/search?q={query}",
    image_selector="a.iusc",
    image_attributes=(),
    json_attribute="m",
    json_key="murl",
    more_button="a.btn_seemore, .mm_seemore a",
    url_pattern=r"^https?://",
)

GOOGLE = EngineAdapter(
    name="google",
    results_url="https://www.google.com/search?tbm=isch&q={query}",
    image_selector="#search img, #islrg img, g-img img",
    image_attributes=("data-src", "data-iurl", "src"),
    json_attribute=None,
    json_key=None,
    more_button="input.mye4qd, input[type='button'][value*='more' i]",
    url_pattern=r"^https://encrypted-tbn\d\.gstatic\.com/images\?",
)

BUILT_IN_ADAPTERS: dict[str, EngineAdapter] = {"bing": BING, "google": GOOGLE}


def generic_adapter(config: EngineConfig, name: str = "generic") -> EngineAdapter:
    """An adapter configured entirely from ``scrape.generic``.

    Raises:
        ValueError: The template has no ``{query}``, the JSON settings are incomplete or the URL
            pattern is not a valid regular expression.
    """
    return EngineAdapter(
        name=name,
        results_url=config.results_url,
        image_selector=config.image_selector,
        image_attributes=tuple(config.image_attributes),
        json_attribute=config.json_attribute,
        json_key=config.json_key,
        more_button=config.more_button,
        url_pattern=config.url_pattern,
    )


def adapter_for(config: ScrapeConfig) -> EngineAdapter:
    """The adapter of ``config.engine`` (``bing``, ``google`` or ``generic``)."""
    if config.engine == "generic":
        return generic_adapter(config.generic)
    return BUILT_IN_ADAPTERS[config.engine]
