"""Request and response bodies of the API (what OpenAPI documents)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    StrictBool,
    StrictInt,
    StrictStr,
    create_model,
)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


BLANK_PROBLEM = "is empty or whitespace; send the text to classify"
# NUL never belongs in natural text, and PostgreSQL refuses it in a text column: a record with
# one would fail its whole batch in the prediction log. (Lone surrogates, the other unstorable
# strings, are refused by the JSON parsers already: pydantic for /predict, orjson for /invocations.)
NUL_PROBLEM = "contains NUL characters (\\u0000); remove them"
# As serving.prediction_log.new_request_id issues them (uuid4().hex).
REQUEST_ID_PATTERN = r"^[0-9a-f]{32}$"
# What text_problem accepts, for OpenAPI: no NUL, and one character that is not blank.
CLASSIFIABLE_TEXT = r"^[^\x00]*[^\s\x00\x1c-\x1f][^\x00]*$"
REQUEST_ID_LENGTH = 32


def text_problem(text: str) -> str | None:
    """Why ``text`` cannot be classified and logged, or None: the one rule of every endpoint.
    Blank is what ``str.strip`` removes, which includes the ASCII separators U+001C-U+001F that
    a regex ``\\s`` does not."""
    if not text.strip():
        return BLANK_PROBLEM
    return NUL_PROBLEM if "\x00" in text else None


def _classifiable(text: str) -> str:
    problem = text_problem(text)
    if problem:
        raise ValueError(problem)
    return text


class PredictRequest(Strict):
    """What ``/predict`` reads; the app validates with ``request_models``' subclass."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"text": "Loved it, a wonderful film.", "explain": True}]}
    )

    text: str
    explain: bool = False


class BatchRequest(Strict):
    """What ``/predict/batch`` reads; the app validates with ``request_models``' subclass."""

    model_config = ConfigDict(
        json_schema_extra={"examples": [{"texts": ["Loved it!", "Dull and far too long."]}]}
    )

    texts: list[str]


def request_models(
    max_text_chars: int, max_batch_texts: int
) -> tuple[type[PredictRequest], type[BatchRequest]]:
    """``PredictRequest`` and ``BatchRequest`` with the configured limits in their schema, so the
    OpenAPI document states what the server accepts."""
    text = Annotated[
        StrictStr,
        Field(
            min_length=1,
            max_length=max_text_chars,
            description=f"Text to classify: not blank, no NUL, at most {max_text_chars} "
            "characters.",
            # documented only: _classifiable applies it with a message that says what to fix
            json_schema_extra={"pattern": CLASSIFIABLE_TEXT},
        ),
        AfterValidator(_classifiable),
    ]
    predict = create_model(
        "PredictRequest",
        __base__=PredictRequest,
        text=(text, ...),
        explain=(
            StrictBool,
            Field(
                False,
                description="Also return the n-grams that pushed the prediction towards each "
                "class, with their contributions to the logit.",
            ),
        ),
    )
    batch = create_model(
        "BatchRequest",
        __base__=BatchRequest,
        texts=(
            list[text],
            Field(
                min_length=1,
                max_length=max_batch_texts,
                description=f"1 to {max_batch_texts} texts to classify.",
            ),
        ),
    )
    return predict, batch


class FeedbackRequest(Strict):
    request_id: StrictStr = Field(
        max_length=REQUEST_ID_LENGTH,
        pattern=REQUEST_ID_PATTERN,
        description="request_id of a prediction this API returned: 32 lowercase hex characters.",
    )
    label: StrictStr = Field(
        min_length=1, description="The true label: one of the served model's classes."
    )


class NgramContribution(BaseModel):
    ngram: str = Field(description="A word n-gram of the text (character n-grams are quoted).")
    contribution: float = Field(description="How much it added to the class's logit (> 0).")


class Prediction(BaseModel):
    sentiment: str = Field(description="Predicted label.")
    confidence: float = Field(description="Calibrated probability of the predicted label.")
    probabilities: dict[str, float] = Field(description="Probability of every label.")
    model_version: str
    request_id: str = Field(description="Id of this prediction, for /feedback.")
    explanation: dict[str, list[NgramContribution]] | None = Field(
        None,
        description='With "explain": true: per class, the (up to 5) n-grams that pushed the '
        "prediction most towards it.",
    )


class BatchResponse(BaseModel):
    predictions: list[Prediction] = Field(description="One result per text, in request order.")
    model_version: str


class InvocationsResponse(BaseModel):
    predictions: list[dict[str, Any]] = Field(
        description="As `mlflow models serve`: label, confidence and prob_<class> per row."
    )
    request_ids: list[str] = Field(
        description="The logged prediction of each row, in order (for `POST /feedback`)."
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


class MlflowErrorResponse(BaseModel):
    """MLflow's error body (``mlflow models serve``)."""

    error_code: str = Field(description="MLflow's code: BAD_REQUEST, INVALID_PARAMETER_VALUE...")
    message: str = Field(description="What went wrong and how to fix the request.")
    detail: str = Field(description="The same message under EmotiTrack's own key.")


class OpenInferenceError(BaseModel):
    """The Open Inference Protocol's error body."""

    error: str = Field(description="What went wrong and how to fix the request.")


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
    scoring: Literal["process", "in-process"] | None = Field(
        None,
        description="Where the model scores: its child process, or in the API process (child "
        "off, starting or restarting).",
    )


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


# The Open Inference Protocol (V2): its JSON objects, as its REST specification names them.
class MetadataTensor(BaseModel):
    name: str
    datatype: str = Field(description="BYTES for texts, FP64 for numbers.")
    shape: list[int] = Field(description="-1: any length.")


class ServerMetadata(BaseModel):
    name: str
    version: str
    extensions: list[str]


class ModelMetadata(BaseModel):
    name: str
    versions: list[str]
    platform: str
    inputs: list[MetadataTensor]
    outputs: list[MetadataTensor]


class ModelReadiness(BaseModel):
    name: str
    ready: bool


class Liveness(BaseModel):
    live: bool


class ServerReadiness(BaseModel):
    ready: bool


class RequestInput(BaseModel):
    name: StrictStr = Field(description='The texts: "text".')
    shape: list[StrictInt] = Field(description="[N] or [N, 1] for N texts.")
    datatype: StrictStr = Field(description="BYTES.")
    parameters: dict[str, Any] | None = None
    data: list[Any] = Field(description="The N texts, flat or nested by shape.")


class RequestOutput(BaseModel):
    name: StrictStr = Field(description="label, confidence, probabilities or request_id.")
    parameters: dict[str, Any] | None = None


class InferenceRequest(BaseModel):
    id: StrictStr | None = Field(None, description="Echoed in the response.")
    parameters: dict[str, Any] | None = None
    inputs: list[RequestInput] = Field(min_length=1)
    outputs: list[RequestOutput] | None = Field(
        None, description="The outputs to return (default: all)."
    )


class ResponseOutput(BaseModel):
    name: str
    shape: list[int]
    datatype: str
    parameters: dict[str, Any] | None = None
    data: list[Any]


class InferenceResponse(BaseModel):
    model_config = ConfigDict(protected_namespaces=())  # model_name is the protocol's field

    model_name: str
    model_version: str
    id: str | None = None
    parameters: dict[str, Any] | None = None
    outputs: list[ResponseOutput]
