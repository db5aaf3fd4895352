"""The one table from domain errors to HTTP statuses: complete, and the one the app answers by."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping

import httpx
import pytest

from serving import errors
from serving.app import create_app
from serving.errors import HTTP_STATUS, ServingError
from serving.settings import ServingSettings


def unmapped(namespace: Mapping[str, object]) -> set[type]:
    """The domain errors in ``namespace`` without their own entry in the table."""
    defined = {
        value
        for value in namespace.values()
        if isinstance(value, type) and issubclass(value, ServingError) and value is not ServingError
    }
    return defined - HTTP_STATUS.keys()


class Forgotten(errors.InvalidTexts):
    """A new error someone forgot to give a status."""


def test_every_domain_error_has_its_own_status() -> None:
    assert len(HTTP_STATUS) >= 8
    assert unmapped(vars(errors)) == set()


def test_an_error_left_out_of_the_table_is_caught() -> None:
    assert unmapped({**vars(errors), "Forgotten": Forgotten}) == {Forgotten}


Get = Callable[[str], httpx.Response]


@pytest.fixture(scope="module")
def get() -> Get:
    """GET from the real app (no lifespan: nothing is loaded), given a route that raises any
    error by name."""
    app = create_app(ServingSettings(model_uri="models:/unused@production"))
    raisable = {cls.__name__: cls for cls in [*HTTP_STATUS, Forgotten]}

    async def fail(name: str) -> None:
        raise raisable[name](f"{name}: what to do about it")

    app.add_api_route("/fail/{name}", fail, methods=["GET"])
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)

    async def fetch(path: str) -> httpx.Response:
        async with httpx.AsyncClient(transport=transport, base_url="http://api") as client:
            return await client.get(path)

    return lambda path: asyncio.run(fetch(path))


@pytest.mark.parametrize("error", list(HTTP_STATUS), ids=lambda error: error.__name__)
def test_the_app_answers_each_domain_error_by_the_table(
    get: Get, error: type[ServingError]
) -> None:
    answer = get(f"/fail/{error.__name__}")
    assert answer.status_code == HTTP_STATUS[error]
    assert answer.json() == {"detail": f"{error.__name__}: what to do about it"}


def test_an_unmapped_error_is_a_server_error_not_its_parents_status(get: Get) -> None:
    assert get("/fail/Forgotten").status_code == 500
