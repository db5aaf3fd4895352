"""What the service refuses, and the one table that says which HTTP status answers each refusal.

No HTTP here: the service raises these; ``serving.http_errors`` answers them by ``HTTP_STATUS``
with the body ``{"detail": <the error's message>}`` (``ErrorResponse``). Each message says what
went wrong and what the client can do about it.
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
    UnknownLabel: 422,
    UnknownPrediction: 404,
    FeedbackExists: 409,
    PredictionLogUnavailable: 503,
}
