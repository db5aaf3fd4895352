"""Building the IMDB data set from an aclImdb archive, by path and by URL (served on loopback)."""

from __future__ import annotations

import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import pytest

from training.data import DataError, load_labelled
from training.imdb_archive import fetch_imdb

REVIEWS = {
    "aclImdb/train/pos/10_9.txt": "Loved it.<br />Great.",
    "aclImdb/train/pos/2_8.txt": "Fine film, très bien.",
    "aclImdb/train/neg/1_1.txt": "Awful.",
    "aclImdb/test/neg/0_2.txt": "Bad.",
    "aclImdb/test/pos/0_10.txt": "Superb.",
    "aclImdb/train/unsup/0_0.txt": "unlabelled: ignored",
    "aclImdb/README": "not a review",
}


@pytest.fixture
def archive(tmp_path: Path) -> Path:
    path = tmp_path / "aclImdb_v1.tar.gz"
    with tarfile.open(path, "w:gz") as tar:
        for name, text in REVIEWS.items():
            data = text.encode("utf-8")
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


@pytest.fixture
def served(archive: Path) -> Iterator[str]:
    handler = partial(http.server.SimpleHTTPRequestHandler, directory=str(archive.parent))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/{archive.name}"
    server.shutdown()
    server.server_close()


def check_written(out: Path) -> None:
    data = load_labelled(out)
    train = data.splits["train"]
    assert train.to_dict("records") == [
        {"text": "Awful.", "label": "negative"},
        {"text": "Fine film, très bien.", "label": "positive"},
        {"text": "Loved it.<br />Great.", "label": "positive"},
    ]
    assert sorted(data.splits["test"]["label"]) == ["negative", "positive"]


def test_from_path(archive: Path, tmp_path: Path) -> None:
    fetch_imdb(str(archive), tmp_path / "out")
    check_written(tmp_path / "out")


def test_from_url(served: str, tmp_path: Path) -> None:
    fetch_imdb(served, tmp_path / "out")
    check_written(tmp_path / "out")


def test_missing_url_is_a_data_error(served: str, tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"cannot download .*nothing\.tar\.gz"):
        fetch_imdb(served.rsplit("/", 1)[0] + "/nothing.tar.gz", tmp_path / "out")


def test_not_an_archive(tmp_path: Path) -> None:
    bogus = tmp_path / "bogus.tar.gz"
    bogus.write_bytes(b"plain text")
    with pytest.raises(DataError, match="not a readable tar archive"):
        fetch_imdb(str(bogus), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_archive_without_reviews(tmp_path: Path) -> None:
    empty = tmp_path / "empty.tar.gz"
    with tarfile.open(empty, "w:gz"):
        pass
    with pytest.raises(DataError, match="no aclImdb"):
        fetch_imdb(str(empty), tmp_path / "out")


def test_unsupported_scheme(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unsupported URL scheme"):
        fetch_imdb("ftp://example.invalid/a.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()
