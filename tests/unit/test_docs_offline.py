"""``/docs`` and ``/redoc`` work without internet access: every script, style and icon they load
is served by the app itself."""

from __future__ import annotations

import asyncio
import re
from html.parser import HTMLParser

import httpx
import pytest

from serving.app import create_app
from serving.settings import ServingSettings

# what a page could load from elsewhere: an absolute or scheme-relative URL
EXTERNAL = re.compile(r"(?:https?:)?//[\w.-]+", re.IGNORECASE)


class Links(HTMLParser):
    """Every URL a page loads: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in {"src", "href"} and value:
                self.urls.append(value)


def fetch_all(paths: list[str]) -> dict[str, httpx.Response]:
    app = create_app(ServingSettings(model_uri="models:/unused@production"))
    transport = httpx.ASGITransport(app=app)

    async def fetch() -> dict[str, httpx.Response]:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return {path: await client.get(path) for path in paths}

    return asyncio.run(fetch())


def loaded_urls(html: str) -> list[str]:
    parser = Links()
    parser.feed(html)
    return parser.urls


@pytest.mark.parametrize(("page", "assets"), [("/docs", 3), ("/redoc", 2)])
def test_page_loads_only_what_the_app_serves(page: str, assets: int) -> None:
    html = fetch_all([page])[page]
    assert html.status_code == 200 and "text/html" in html.headers["content-type"]
    urls = loaded_urls(html.text)
    assert len(urls) == assets, urls
    assert not EXTERNAL.findall(html.text), EXTERNAL.findall(html.text)
    answers = fetch_all(urls)
    for url, answer in answers.items():
        assert answer.status_code == 200, url
        assert len(answer.content) > 1000, url  # the asset, not an error page
    kinds = {answer.headers["content-type"].split(";")[0] for answer in answers.values()}
    assert "text/javascript" in kinds or "application/javascript" in kinds


def test_swagger_ui_reads_our_schema_and_sends_it_nowhere() -> None:
    html = fetch_all(["/docs"])["/docs"].text
    assert "url: '/openapi.json'" in html
    assert '"validatorUrl": null' in html  # no badge fetched from an online validator


def test_the_docs_pages_stay_out_of_the_schema() -> None:
    paths = fetch_all(["/openapi.json"])["/openapi.json"].json()["paths"]
    assert not [path for path in paths if path.startswith(("/docs", "/redoc"))]
