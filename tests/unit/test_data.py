"""Loading, checking and splitting labelled text."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from training.data import DataError, Splits, data_report, load_labelled, make_splits


def frame(n: int = 40, labels: tuple[str, ...] = ("negative", "positive")) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"review number {i}" for i in range(n)],
            "label": [labels[i % len(labels)] for i in range(n)],
        }
    )


def split(data_path: Path, min_rows: int = 10) -> Splits:
    return make_splits(
        load_labelled(data_path),
        seed=1,
        validation_fraction=0.2,
        test_fraction=0.25,
        min_rows=min_rows,
    )


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (pd.DataFrame({"body": ["a"], "label": ["x"]}), r"missing column\(s\) \['text'\]"),
        (pd.DataFrame({"text": ["fine", "  "], "label": ["a", "b"]}), r"1 empty text\(s\).*row 1"),
        (pd.DataFrame({"text": ["fine", None], "label": ["a", "b"]}), r"1 missing text\(s\)"),
        (
            pd.DataFrame({"text": ["a", "b"], "label": [0, 1]}),
            r"'label' must hold strings, found integer.*map label ids",
        ),
        (pd.DataFrame({"text": ["a", "b"], "label": ["x", None]}), r"1 missing label\(s\)"),
    ],
)
def test_bad_content_is_named(tmp_path: Path, content: pd.DataFrame, message: str) -> None:
    path = tmp_path / "data.parquet"
    content.to_parquet(path)
    with pytest.raises(DataError, match=message):
        load_labelled(path)


def test_missing_path_names_the_setting(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"data not found: .*nowhere.*EMOTITRACK_DATA"):
        load_labelled(tmp_path / "nowhere")


def test_unsupported_file_type(tmp_path: Path) -> None:
    (tmp_path / "data.json").write_text("{}")
    with pytest.raises(DataError, match="unsupported file type"):
        load_labelled(tmp_path / "data.json")


def test_empty_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match=r"no \.parquet or \.csv files"):
        load_labelled(tmp_path)


def test_corrupt_parquet_is_a_data_error(tmp_path: Path) -> None:
    (tmp_path / "train.parquet").write_bytes(b"not parquet at all")
    with pytest.raises(DataError, match=r"train.parquet: cannot be read as parquet"):
        load_labelled(tmp_path)


def test_custom_column_names_from_csv(tmp_path: Path) -> None:
    frame().rename(columns={"text": "review", "label": "sentiment"}).to_csv(
        tmp_path / "d.csv", index=False
    )
    data = load_labelled(tmp_path / "d.csv", text_column="review", label_column="sentiment")
    assert list(data.splits["pool"].columns) == ["text", "label"]
    assert len(data.splits["pool"]) == 40


def test_single_class_refused(tmp_path: Path) -> None:
    frame(labels=("positive",)).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match=r"only one class \('positive'\)"):
        split(tmp_path)


def test_too_few_rows_refused(tmp_path: Path) -> None:
    frame(n=8).to_parquet(tmp_path / "train.parquet")
    with pytest.raises(DataError, match="8 training rows, need at least 10"):
        split(tmp_path)


def test_test_labels_unknown_to_train_refused(tmp_path: Path) -> None:
    frame().to_parquet(tmp_path / "train.parquet")
    frame(labels=("neutral",)).to_parquet(tmp_path / "test.parquet")
    with pytest.raises(DataError, match=r"test labels \['neutral'\] never occur in train"):
        split(tmp_path)


def test_stray_files_beside_train_refused(tmp_path: Path) -> None:
    frame().to_parquet(tmp_path / "train.parquet")
    frame().to_parquet(tmp_path / "extra.parquet")
    with pytest.raises(DataError, match=r"\['extra.parquet'\] are not train/validation/test"):
        load_labelled(tmp_path)


def test_own_splits_are_used(tmp_path: Path) -> None:
    frame(40).to_parquet(tmp_path / "train.parquet")
    frame(12).to_parquet(tmp_path / "test.parquet")
    frame(6).to_parquet(tmp_path / "dev.parquet")
    splits = split(tmp_path)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (40, 6, 12)
    assert splits.test_from_source


def test_unsplit_data_gets_stratified_seeded_splits(tmp_path: Path) -> None:
    frame(100).to_parquet(tmp_path / "all.parquet")
    first, second = split(tmp_path), split(tmp_path)
    assert (len(first.train), len(first.validation), len(first.test)) == (60, 15, 25)
    assert first.test["label"].value_counts().to_dict() in (
        {"negative": 13, "positive": 12},
        {"negative": 12, "positive": 13},
    )
    pd.testing.assert_frame_equal(first.validation, second.validation)
    assert not set(first.train["text"]) & set(first.test["text"])


def test_report_counts_duplicates_conflicts_and_overlap(tmp_path: Path) -> None:
    train = pd.DataFrame(
        {
            "text": ["good", "good", "bad", "fine", "fine", "meh"] * 3 + ["shared"],
            "label": ["positive", "positive", "negative", "positive", "negative", "negative"] * 3
            + ["positive"],
        }
    )
    test = pd.DataFrame({"text": ["shared", "new"], "label": ["positive", "negative"]})
    train.to_parquet(tmp_path / "train.parquet")
    test.to_parquet(tmp_path / "test.parquet")
    test.to_parquet(tmp_path / "validation.parquet")  # keeps train whole
    report: dict = data_report(split(tmp_path, min_rows=5))  # type: ignore[type-arg]
    assert report["overlap"] == {"train_test": 1, "train_validation": 1}
    described = report["splits"]["test"]
    assert described == {
        "rows": 2,
        "label_counts": {"negative": 1, "positive": 1},
        "label_shares": {"negative": 0.5, "positive": 0.5},
        "duplicate_texts": 0,
        "texts_with_conflicting_labels": 0,
        "median_chars": 4.5,
    }
    train_report = report["splits"]["train"]
    assert (train_report["duplicate_texts"], train_report["texts_with_conflicting_labels"]) == (
        14,
        1,
    )


def test_three_class_real_data_loads(shared_data: Path) -> None:
    data = load_labelled(shared_data / "semeval2017_task4a")
    assert set(data.splits) == {"train", "test"}
    assert set(data.splits["train"]["label"]) == {"negative", "neutral", "positive"}
