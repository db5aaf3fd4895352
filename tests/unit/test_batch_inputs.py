"""Batch input discovery and checks: which files a spec names, and every bad input refused
before anything is scored."""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from batch.inputs import BadInput, discover, open_input


def _parquet(path: Path, **columns: list[object]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns), path)
    return path


def test_a_folder_is_searched_recursively_without_markers_or_hidden_files(tmp_path: Path) -> None:
    a = _parquet(tmp_path / "day=1" / "part-0.parquet", text=["a"])
    b = _parquet(tmp_path / "day=2" / "part-0.parquet", text=["b"])
    _parquet(tmp_path / ".staging" / "part-9.parquet", text=["x"])
    (tmp_path / "_SUCCESS").write_text("")
    (tmp_path / "day=1" / "_SUCCESS").write_text("")
    assert discover(str(tmp_path)) == (a, b)


def test_a_glob_names_files_in_order(tmp_path: Path) -> None:
    files = [_parquet(tmp_path / f"part-{i}.parquet", text=["t"]) for i in (2, 0, 1)]
    _parquet(tmp_path / "other.parquet", text=["t"])
    assert discover(str(tmp_path / "part-*.parquet")) == tuple(sorted(files))


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("missing.parquet", "no such file or folder"),
        ("nothing-*.parquet", "no file matches"),
        ("empty", "folder holds no .parquet or .csv file"),
    ],
)
def test_nothing_to_read_is_refused(tmp_path: Path, spec: str, message: str) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(BadInput, match=re.escape(message)):
        discover(str(tmp_path / spec))


def test_a_missing_text_column_names_the_file_and_its_columns(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", text=["ok"])
    bad = _parquet(tmp_path / "b.parquet", review=["no text column"])
    with pytest.raises(BadInput, match=f"{bad}: no column 'text' \\(columns: review\\)"):
        open_input(str(tmp_path), "text")


def test_a_text_column_of_numbers_is_refused(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", text=[1, 2])
    with pytest.raises(BadInput, match="holds int64, not text"):
        open_input(str(tmp_path / "a.parquet"), "text")


def test_a_corrupt_file_is_refused_whichever_file_it_is(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", text=["fine"])
    (tmp_path / "b.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(BadInput, match=re.escape("b.parquet")):
        open_input(str(tmp_path), "text")


def test_mixed_and_unknown_formats_are_refused(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", text=["x"])
    (tmp_path / "b.csv").write_text("text\ny\n")
    with pytest.raises(BadInput, match="mixes Parquet and CSV"):
        open_input(str(tmp_path), "text")
    (tmp_path / "c.json").write_text("{}")
    with pytest.raises(BadInput, match=re.escape("not a .parquet or .csv file")):
        open_input(str(tmp_path / "c.json"), "text")


def test_csv_texts_stay_text_and_empty_cells_are_null(tmp_path: Path) -> None:
    (tmp_path / "a.csv").write_text('id,text\n1,42\n2,""\n3,"great, really"\n')
    source = open_input(str(tmp_path / "a.csv"), "text")
    assert source.format == "csv"
    assert source.rows() is None  # not counted: that would read the whole file first
    table = source.dataset.to_table()
    assert table.schema.field("text").type == pa.string()
    assert table.column("text").to_pylist() == ["42", "", "great, really"]


def test_files_with_different_extra_columns_are_read_as_one_table(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", text=["x"], source=["web"])
    _parquet(tmp_path / "b.parquet", text=["y"], stars=[5])
    source = open_input(str(tmp_path), "text")
    assert source.rows() == 2
    table = source.dataset.to_table()
    assert set(table.column_names) == {"text", "source", "stars"}
    assert table.column("stars").to_pylist() == [None, 5]


def test_streamed_batches_follow_the_unified_schema_in_file_order(tmp_path: Path) -> None:
    _parquet(tmp_path / "a.parquet", text=["x", "y", "z"], stars=pa.array([1, 2, 3], pa.int32()))
    _parquet(tmp_path / "b.parquet", stars=pa.array([4], pa.int64()), text=["w"], lang=["en"])
    source = open_input(str(tmp_path), "text")
    batches = list(source.batches(batch_rows=2))
    assert [b.num_rows for b in batches] == [2, 1, 1]
    assert all(b.schema.equals(source.dataset.schema) for b in batches)
    table = pa.Table.from_batches(batches)
    assert table.column("text").to_pylist() == ["x", "y", "z", "w"]
    assert table.column("stars").to_pylist() == [1, 2, 3, 4]
    assert table.column("lang").to_pylist() == [None, None, None, "en"]
