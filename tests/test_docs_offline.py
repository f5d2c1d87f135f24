"""/docs and /redoc work without internet: every script, style and icon comes from the app."""

from __future__ import annotations

from collections.abc import AsyncIterator
from html.parser import HTMLParser
from urllib.parse import urljoin, urlsplit

import httpx
import pytest

from remedy.config import RemedyConfig
from starter.app import create_app
from tests.intake_harness import RecordingReporter


class _Assets(HTMLParser):
    """The URLs a browser would fetch to render the page."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(RemedyConfig(), reporter=RecordingReporter())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://intake") as client:
        yield client


@pytest.mark.parametrize(
    ("page", "kinds"),
    [("/docs", {".js", ".css", ".png"}), ("/redoc", {".js", ".png"})],
)
async def test_the_docs_pages_load_only_what_the_app_serves(
    http: httpx.AsyncClient, page: str, kinds: set[str]
) -> None:
    response = await http.get(page)
    assert response.status_code == 200 and "text/html" in response.headers["content-type"]
    parser = _Assets()
    parser.feed(response.text)

    assert parser.urls, f"{page} references no script or style"
    assert "//" not in response.text.replace("http://intake", ""), "a page names another host"
    for url in parser.urls:
        absolute = urljoin(f"http://intake{page}", url)
        assert urlsplit(absolute).netloc == "intake", f"{page} loads {url} from elsewhere"
        asset = await http.get(absolute)
        assert asset.status_code == 200, url
        assert len(asset.content) > 1000, f"{url} is not the asset itself"
    assert {url[url.rindex(".") :] for url in parser.urls} == kinds
    assert (await http.get("/openapi.json")).json()["info"]["title"] == "Remedy intake"
