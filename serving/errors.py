"""What the service refuses, and the one table that says which HTTP status answers each refusal.

No HTTP here: the service raises these; ``serving.http_errors`` answers them by ``HTTP_STATUS``
with the body of the protocol the route speaks: ``{"detail": <the error's message>}``
(``ErrorResponse``) by default, MLflow's ``{"error_code": MLFLOW_ERROR_CODE[...], "message": ...}``
on the MLflow scoring routes, ``{"error": ...}`` on the Open Inference Protocol's. Each message
says what went wrong and what the client can do about it.
"""

from __future__ import annotations


class ServingError(Exception):
    """A request the service cannot answer as asked."""


class NoModelLoaded(ServingError):
    """No model is loaded yet: none promoted, or the registry unreachable since start-up."""


class CannotExplain(ServingError):
    """Explanations were asked of a model that has none."""


class InvalidTexts(ServingError):
    """A text is blank, holds NUL or is too long, or there are none or too many."""


class PayloadError(ServingError):
    """An ``/invocations`` payload is not one of the accepted formats."""


class SchemaMismatch(PayloadError):
    """An ``/invocations`` payload parses, but its rows do not fit the model's input (a
    ``text`` column of strings)."""


class InvalidParams(PayloadError):
    """``params`` beside an ``/invocations`` payload are not the model's (``explain``: a bool)."""


class UnsupportedMediaType(PayloadError):
    """A Content-Type the scoring protocol refuses: a charset other than UTF-8, unknown
    parameters."""


class InvalidInferenceRequest(ServingError):
    """An Open Inference Protocol request whose tensors are not the model's: one ``text`` input
    of ``BYTES``, its shape matching its data, outputs the model has."""


class UnknownModel(ServingError):
    """An Open Inference Protocol request names a model or version that is not served."""


class UnknownLabel(ServingError):
    """Feedback names a label that the served model does not predict."""


class UnknownPrediction(ServingError):
    """Feedback names a request_id that the prediction log does not hold."""


class FeedbackExists(ServingError):
    """Feedback for this prediction was given already."""


class PredictionLogUnavailable(ServingError):
    """The prediction log's store cannot be reached now; the client should retry later."""


# Exact classes, not inherited: a new error gets its status on purpose (a unit test checks
# that every class above has one).
HTTP_STATUS: dict[type[ServingError], int] = {
    NoModelLoaded: 503,
    CannotExplain: 400,
    InvalidTexts: 422,
    PayloadError: 400,
    SchemaMismatch: 400,
    InvalidParams: 400,
    UnsupportedMediaType: 415,
    InvalidInferenceRequest: 400,
    UnknownModel: 404,
    UnknownLabel: 422,
    UnknownPrediction: 404,
    FeedbackExists: 409,
    PredictionLogUnavailable: 503,
}

# The MLflow error code of each, as ``mlflow models serve`` names the same refusal
# (mlflow.protos.databricks_pb2): its clients read ``error_code``.
MLFLOW_ERROR_CODE: dict[type[ServingError], str] = {
    NoModelLoaded: "TEMPORARILY_UNAVAILABLE",
    CannotExplain: "INVALID_PARAMETER_VALUE",
    InvalidTexts: "INVALID_PARAMETER_VALUE",
    PayloadError: "BAD_REQUEST",
    SchemaMismatch: "INVALID_PARAMETER_VALUE",
    InvalidParams: "INVALID_PARAMETER_VALUE",
    UnsupportedMediaType: "BAD_REQUEST",
    InvalidInferenceRequest: "INVALID_PARAMETER_VALUE",
    UnknownModel: "RESOURCE_DOES_NOT_EXIST",
    UnknownLabel: "INVALID_PARAMETER_VALUE",
    UnknownPrediction: "RESOURCE_DOES_NOT_EXIST",
    FeedbackExists: "RESOURCE_ALREADY_EXISTS",
    PredictionLogUnavailable: "TEMPORARILY_UNAVAILABLE",
}
