"""A model that is not an EmotiTrack pipeline (any pyfunc with prob_<class> columns) served
over real HTTP: it predicts, and refuses to explain without logging a prediction."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import mlflow
import pytest

from emotitrack.core.prediction_log import PredictionReader
from harness.servers import ApiServer, start_api

pytestmark = pytest.mark.integration

MODEL_CODE = """
import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class Constant(PythonModel):
    def predict(self, context, model_input, params=None):
        rows = len(model_input)
        return pd.DataFrame({"prob_negative": [0.3] * rows, "prob_positive": [0.7] * rows})


mlflow.models.set_model(Constant())
"""


@pytest.fixture(scope="module")
def workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("foreign-model")


@pytest.fixture(scope="module")
def api(workdir: Path) -> Iterator[ApiServer]:
    code = workdir / "constant_model.py"
    code.write_text(MODEL_CODE)
    model = workdir / "model"
    mlflow.pyfunc.save_model(str(model), python_model=str(code))
    server = start_api(
        f"sqlite:///{workdir / 'mlflow.db'}",
        workdir,
        model_uri=str(model),
        log_flush_interval_s="0.1",
    )
    yield server
    assert server.terminate() == 0


def test_explain_on_a_model_that_cannot_is_refused_before_anything_is_logged(
    api: ApiServer, workdir: Path
) -> None:
    before = api.scrape()
    refused = httpx.post(f"{api.url}/predict", json={"text": "Fine.", "explain": True})
    assert refused.status_code == 400, refused.text
    assert 'send "explain": false' in refused.json()["detail"]
    served = httpx.post(f"{api.url}/predict", json={"text": "Fine."})
    assert served.status_code == 200 and served.json()["sentiment"] == "positive"
    time.sleep(1.0)  # several flushes of the prediction log
    after = api.scrape()
    counted = after['emotitrack_predictions_total{label="positive",model_version="unversioned"}']
    assert (
        counted
        - before.get(
            'emotitrack_predictions_total{label="positive",model_version="unversioned"}', 0
        )
        == 1
    )
    logged = PredictionReader(f"sqlite:///{workdir / 'predictions.db'}").read()
    assert list(logged["request_id"]) == [served.json()["request_id"]]
