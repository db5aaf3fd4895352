"""A registered model is data: no pickle names a project module, it loads where the project
cannot be imported, and versions registered before the format still serve and repackage."""

from __future__ import annotations

import json
import os
import pickletools
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from emotitrack.core import model_format
from emotitrack.core.registry import resolve
from serving.model_store import load
from training.cli import main
from training.model import Hyperparameters
from training.settings import TrainingSettings
from training.train import TrainingResult, train

pytestmark = pytest.mark.integration

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
PROJECT = ("emotitrack", "training", "serving", "monitoring")
TEXTS = ["A wonderful, moving film.", "Dull and far too long.", "not bad at all", "zzqx", ""]


@pytest.fixture(scope="module")
def registry(imdb_sample: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A SQLite registry of its own (its folder), shared by this module's tests."""
    workdir = tmp_path_factory.mktemp("registry")
    uri = f"sqlite:///{workdir / 'mlflow.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(workdir)  # local artifacts land under the working folder
        patch.setenv("MLFLOW_TRACKING_URI", uri)
        patch.delenv("MLFLOW_RUN_ID", raising=False)
        mlflow.set_tracking_uri(uri)
        yield workdir


@pytest.fixture(scope="module")
def trained(registry: Path, imdb_sample: Path) -> TrainingResult:
    settings = TrainingSettings(
        data=imdb_sample,
        tracking_uri=os.environ["MLFLOW_TRACKING_URI"],
        reference_size=200,
        min_rows=50,
    )
    return train(settings, Hyperparameters(max_features=20_000))


@pytest.fixture(scope="module")
def downloaded(trained: TrainingResult, registry: Path) -> Path:
    uri = f"models:/{trained.registered_name}/{trained.version}"
    return model_format.download(uri, registry / "downloaded")


_STRING_OPCODES = {
    "UNICODE",
    "SHORT_BINUNICODE",
    "BINUNICODE",
    "BINUNICODE8",
    "STRING",
    "BINSTRING",
    "SHORT_BINSTRING",
}


def scorer_of(model_dir: Path) -> model_format.SentimentScorer:
    scorer = model_format.read_logged(model_dir)
    assert scorer is not None, f"{model_dir} is not in the model format"
    return scorer


def pickled_globals(data: bytes) -> list[str] | None:
    """``module.name`` of every GLOBAL and STACK_GLOBAL in a pickle; None if ``data`` is not one.
    STACK_GLOBAL takes its two names from the stack: the last strings pushed or fetched from
    the memo."""
    names: list[str] = []
    strings: list[str | None] = []
    memo: dict[int, str | None] = {}
    last: str | None = None
    try:
        for opcode, arg, _ in pickletools.genops(data):
            if opcode.name == "STOP":
                return names
            if opcode.name in _STRING_OPCODES:
                last = str(arg)
                strings.append(last)
            elif opcode.name == "MEMOIZE":
                memo[len(memo)] = last
            elif opcode.name.endswith("PUT"):
                memo[int(str(arg))] = last
            elif opcode.name.endswith("GET"):
                last = memo.get(int(str(arg)))
                strings.append(last)
            elif opcode.name == "GLOBAL":
                names.append(str(arg).replace(" ", "."))
                last = None
            elif opcode.name == "STACK_GLOBAL":
                names.append(f"{strings[-2]}.{strings[-1]}")
                last = None
            else:
                last = None
    except Exception:  # not a pickle stream (or a truncated one)
        return None
    return None


def every_file(folder: Path) -> Iterator[tuple[str, bytes]]:
    """Every file's bytes, and those of every member of a zip (``arrays.npz`` is one)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            data = path.read_bytes()
            yield str(path.relative_to(folder)), data
            if zipfile.is_zipfile(path):
                with zipfile.ZipFile(path) as archive:
                    for member in archive.namelist():
                        yield f"{path.relative_to(folder)}:{member}", archive.read(member)


def test_no_file_of_a_registered_model_is_a_pickle(downloaded: Path) -> None:
    found = {name: pickled_globals(data) for name, data in every_file(downloaded)}
    assert "artifacts/arrays.npz:coef.npy" in found and "MLmodel" in found
    pickles = {name: names for name, names in found.items() if names is not None}
    assert pickles == {}
    assert not (downloaded / "code").exists()  # no code_paths: the loader is one data-free file
    requirements = (downloaded / "requirements.txt").read_text()
    assert "scikit-learn" not in requirements and "numpy" in requirements


def test_the_scan_finds_project_classes_in_a_pickled_pipeline() -> None:
    # The legacy fixture pickled the pipeline: the scan above would fail on it.
    names = pickled_globals((FIXTURES / "legacy_model/artifacts/pipeline.pkl").read_bytes())
    assert names is not None
    assert {"training.features.LeanTfidfVectorizer", "training.scoring.NgramIndex"} <= set(names)
    assert "emotitrack.core.text.normalize_with_negation" in names


CHILD = """
import json, sys
for name in {project}:
    sys.modules[name] = None  # the project cannot be imported (it is installed editable)
import mlflow.pyfunc, pandas as pd
model = mlflow.pyfunc.load_model(sys.argv[1])
table = model.predict(pd.DataFrame({{"text": json.loads(sys.stdin.read())}}))
print(json.dumps({{
    "probabilities": table.filter(like="prob_").to_numpy().tolist(),
    "labels": table["label"].tolist(),
    "sklearn": "sklearn" in sys.modules,
    "project_on_path": [p for p in sys.path if p.startswith({repo!r}) and "/.venv/" not in p],
}}))
"""


def test_the_model_loads_where_the_project_cannot_be_imported(
    downloaded: Path, tmp_path: Path
) -> None:
    repo = str(Path(__file__).resolve().parents[2])
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    out = subprocess.run(
        [sys.executable, "-I", "-c", CHILD.format(project=PROJECT, repo=repo), str(downloaded)],
        input=json.dumps(TEXTS),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    answer = json.loads(out.stdout.strip().splitlines()[-1])
    assert answer["project_on_path"] == [] and answer["sklearn"] is False
    scorer = scorer_of(downloaded)
    np.testing.assert_allclose(answer["probabilities"], scorer.probabilities(TEXTS), atol=1e-12)
    assert answer["labels"][:2] == ["positive", "negative"]


def test_in_process_pyfunc_users_get_the_scorer_and_explanations(
    trained: TrainingResult, downloaded: Path
) -> None:
    model = mlflow.pyfunc.load_model(f"models:/{trained.registered_name}/{trained.version}")
    scorer = scorer_of(downloaded)
    table = model.predict(pd.DataFrame({"text": TEXTS}), params={"explain": True})
    np.testing.assert_allclose(table.filter(like="prob_"), scorer.probabilities(TEXTS), atol=1e-12)
    assert json.loads(table["explanation"][0]) == scorer.explain(TEXTS[:1])[0]
    assert "explanation" not in model.predict(pd.DataFrame({"text": TEXTS})).columns


@pytest.fixture(scope="module")
def legacy(registry: Path) -> str:
    """The fixture model (saved by the code before the format: pickled pipeline, models-from-code
    entry, the training package as code_paths) registered as version 1 of ``legacy``."""
    client = MlflowClient()
    with mlflow.start_run() as run:
        mlflow.log_artifacts(str(FIXTURES / "legacy_model"), "legacy_model")
    client.create_registered_model("legacy")
    version = client.create_model_version(
        "legacy", f"{run.info.artifact_uri}/legacy_model", run_id=run.info.run_id
    )
    client.set_model_version_tag("legacy", version.version, "data_digest", "0123456789abcdef")
    client.update_model_version("legacy", version.version, description="Trained before.")
    return f"models:/legacy/{version.version}"


def expected_legacy() -> tuple[list[str], np.ndarray]:
    """Texts and the probabilities the legacy model's own code gave them when it was saved."""
    saved = json.loads((FIXTURES / "legacy_model_expected.json").read_text())
    return saved["texts"], np.array(saved["probabilities"])


def test_a_version_registered_before_the_format_still_serves(legacy: str) -> None:
    client = MlflowClient()
    model = load(client, resolve(client, legacy))
    try:
        texts, expected = expected_legacy()
        assert model.scorer is None and model.explain is None  # served through pyfunc predict
        assert model.classes == ["negative", "positive"]
        np.testing.assert_allclose(model.score(texts), expected, atol=1e-6)
        # the project's own training package is still the one imported here
        assert "fixtures" not in (sys.modules["training.model"].__file__ or "")
        assert not any("legacy_model" in entry for entry in sys.path)
    finally:
        model.close()
    assert model.directory is not None and not model.directory.exists()


def test_repackaging_a_version_gives_a_new_version_in_the_format(
    legacy: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["repackage", legacy]) == 0
    assert capsys.readouterr().out.strip() == (
        f"repackaged {legacy} as models:/legacy/2 (not promoted)"
    )
    client = MlflowClient()
    old, new = client.get_model_version("legacy", "1"), client.get_model_version("legacy", "2")
    assert new.run_id == old.run_id
    assert new.tags["data_digest"] == "0123456789abcdef" and new.tags["repackaged_from"] == "1"
    assert (new.description or "").startswith("Trained before. Repackaged from version 1")
    model = load(client, resolve(client, "models:/legacy/2"))
    try:
        texts, expected = expected_legacy()
        assert model.scorer is not None and model.explain is not None
        np.testing.assert_allclose(model.score(texts), expected, atol=1e-6)
        for i, text in enumerate(texts[:10]):
            np.testing.assert_allclose(model.score([text])[0], expected[i], atol=1e-6)
    finally:
        model.close()
    # a version already in the format is refused, with the reason
    assert main(["repackage", "models:/legacy/2"]) == 2
    assert "already in the model format" in capsys.readouterr().err
