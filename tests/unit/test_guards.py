"""API keys: which headers carry one, and the comparison."""

from __future__ import annotations

import pytest
from pydantic import SecretStr

from serving.guards import ApiKeys, key_from_headers


@pytest.mark.parametrize(
    ("headers", "key"),
    [
        ([(b"authorization", b"Bearer k-one")], b"k-one"),
        ([(b"authorization", b"bearer   k-one ")], b"k-one"),
        ([(b"x-api-key", b"k-two")], b"k-two"),
        # an Authorization header decides alone: empty or another scheme is a wrong key
        ([(b"authorization", b" "), (b"x-api-key", b"k-two")], b""),
        (
            [(b"authorization", b"Basic dXNlcjpwdw=="), (b"x-api-key", b"k-two")],
            b"Basic dXNlcjpwdw==",
        ),
        ([(b"authorization", b"Bearer wrong"), (b"x-api-key", b"k-two")], b"wrong"),
        ([(b"authorization", b"Bearer ")], b""),
        ([], None),
    ],
)
def test_key_from_headers(headers: list[tuple[bytes, bytes]], key: bytes | None) -> None:
    assert key_from_headers(headers) == key


def test_only_configured_keys_are_accepted() -> None:
    keys = ApiKeys([SecretStr("k-one"), SecretStr("k-two")])
    assert keys and keys.accepts(b"k-one") and keys.accepts(b"k-two")
    for guess in (b"", b"k-on", b"k-one ", b"k-one\x00", b"K-ONE", b"k-onek-two"):
        assert not keys.accepts(guess), guess
    assert not ApiKeys([]) and not ApiKeys([]).accepts(b"")


def test_an_empty_credential_never_matches_even_an_empty_key() -> None:
    assert not ApiKeys([SecretStr("")]).accepts(b"")
    assert not ApiKeys([SecretStr(" ")]).accepts(b" ")
