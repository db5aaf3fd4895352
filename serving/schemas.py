"""Request and response bodies of the API (what OpenAPI documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, StrictStr


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PredictRequest(Strict):
    text: StrictStr = Field(
        description="Text to classify: not empty, at most the configured length."
    )


class BatchRequest(Strict):
    texts: list[StrictStr] = Field(
        min_length=1, description="Texts to classify, at most the configured count."
    )


class FeedbackRequest(Strict):
    request_id: StrictStr = Field(description="request_id of a prediction this API returned.")
    label: StrictStr = Field(description="The true label: one of the served model's classes.")


class Prediction(BaseModel):
    sentiment: str = Field(description="Predicted label.")
    confidence: float = Field(description="Probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")
    model_version: str
    request_id: str = Field(description="Id of this prediction, for /feedback.")


class BatchResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One result per text, in request order.")
    model_version: str


class InvocationsResponse(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="As `mlflow models serve`: label, confidence and prob_<class> per row."
    )


class FeedbackResponse(BaseModel):
    request_id: str
    label: str
    stored: bool = True


class ErrorResponse(BaseModel):
    detail: str = Field(description="What went wrong and how to fix the request.")
    errors: list[dict[str, Any]] | None = Field(
        None, description="Each invalid field, when validation failed."
    )


class ServiceInfo(BaseModel):
    service: str
    version: str
    model_uri: str
    docs: str


class Health(BaseModel):
    status: str


class Readiness(BaseModel):
    ready: bool
    reason: str = ""
    model_version: str | None = None
    registry_reachable: bool
    registry_error: str = ""
    last_check_at: datetime | None = None
    prediction_log_store_up: bool


class ModelInfo(BaseModel):
    name: str
    version: str
    uri: str
    reference: str = Field(
        description="How the URI names the model: alias, stage, version, run or path."
    )
    run_id: str | None
    loaded_at: datetime
    load_seconds: float
    classes: list[str]
    metrics: dict[str, float] = Field(description="Headline metrics of the training run.")


class ReloadResponse(BaseModel):
    outcome: str
    model_version: str | None
