"""Request bodies: what the API accepts is what it issues."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from emotitrack.core.prediction_log import new_request_id
from serving.schemas import FeedbackRequest, text_problem


def test_feedback_takes_every_request_id_the_api_issues() -> None:
    for _ in range(100):
        request_id = new_request_id()
        assert FeedbackRequest(request_id=request_id, label="positive").request_id == request_id


@pytest.mark.parametrize("request_id", ["", "ab\x00cd", "a" * 33, "A" * 32, "g" * 32, "a" * 31])
def test_feedback_refuses_anything_else_as_a_request_id(request_id: str) -> None:
    with pytest.raises(ValidationError):
        FeedbackRequest(request_id=request_id, label="positive")


@pytest.mark.parametrize("text", ["", " ", "\t\n", "\u001c", "\u001f \u00a0", "\u3000"])
def test_blank_text_is_refused_by_the_one_rule(text: str) -> None:
    assert text_problem(text) is not None and "empty or whitespace" in text_problem(text)  # type: ignore[operator]
