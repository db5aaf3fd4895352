"""Behavioural checks of a sentiment model, in the spirit of CheckList (Ribeiro et al. 2020).

Three kinds of test: minimum functionality (a text must get a label), direction (an edit must
move the positive probability one way) and invariance (an edit that changes no sentiment must not
change the label). Each check has a minimum pass rate; ``run_checks`` reports every rate, and a
training run logs the report as an artifact.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field

import numpy as np

Scorer = Callable[[list[str]], np.ndarray]  # texts -> probabilities (rows x classes)

POSITIVE_ADJECTIVES = ["good", "great", "enjoyable", "funny", "wonderful", "brilliant", "moving"]
NEGATIVE_ADJECTIVES = ["bad", "boring", "awful", "dull", "terrible", "predictable", "annoying"]
SUBJECTS = ["The movie", "This film", "The acting", "The story", "The ending", "The script"]


@dataclass(frozen=True)
class Check:
    name: str
    kind: str  # "label": cases are (text, expected label); "up"/"down": (base, edited) pairs
    # move p(positive) up/down; "same": (base, edited) pairs keep the label
    cases: list[tuple[str, str]]
    min_pass_rate: float
    description: str


@dataclass
class CheckResult:
    name: str
    kind: str
    description: str
    cases: int
    passed: int
    pass_rate: float
    min_pass_rate: float
    ok: bool
    failures: list[dict[str, object]] = field(default_factory=list)


def _negated_positive() -> list[tuple[str, str]]:
    return [
        (f"{s} was not {a}.", "negative") for s in SUBJECTS[:4] for a in POSITIVE_ADJECTIVES[:4]
    ]


def _negated_negative() -> list[tuple[str, str]]:
    return [
        (f"{s} was {a}.", f"{s} was not {a}.")
        for s in SUBJECTS[:3]
        for a in NEGATIVE_ADJECTIVES[:4]
    ]


def _intensified(adjectives: list[str]) -> list[tuple[str, str]]:
    return [
        (f"{s} was {a}.", f"{s} was {i} {a}.")
        for s in SUBJECTS[:3]
        for a in adjectives[:3]
        for i in ("very", "extremely")
    ]


CONTRAST = [
    ("Good acting but a terrible plot.", "negative"),
    ("The cast is great, but the story is dull and predictable.", "negative"),
    ("Beautiful photography, but the film is boring and far too long.", "negative"),
    ("I wanted to like it, but it was a waste of time.", "negative"),
    ("The first half is fun, but the ending is awful.", "negative"),
    ("A slow start, but the rest is wonderful.", "positive"),
    ("The effects are cheap, but the story is moving and brilliant.", "positive"),
    ("I expected to hate it, but it was great fun.", "positive"),
    ("Some scenes drag, but overall an excellent film.", "positive"),
    ("Not a perfect movie, but I loved it.", "positive"),
]

BASE_REVIEWS = [
    "Tom Hanks gives a wonderful performance in this film.",
    "Meryl Streep was brilliant and the story was moving.",
    "John Smith directed a boring and predictable movie.",
    "I watched it with Anna and we both hated it.",
    "A great film, I saw it 3 times in 2019.",
    "The worst 2 hours I have spent in a cinema.",
    "Funny, clever and beautifully acted.",
    "Dull, slow and badly written.",
    "I would give it 9 out of 10.",
    "A waste of money, avoid it.",
]
NAME_SWAPS = {
    "Tom Hanks": "Denzel Washington",
    "Meryl Streep": "Aishwarya Rai",
    "John Smith": "Li Wei",
    "Anna": "Fatima",
}
NUMBER_SWAPS = {
    "3 times": "4 times",
    "2019": "2023",
    "2 hours": "3 hours",
    "9 out of 10": "8 out of 10",
}


def _swapped(swaps: dict[str, str]) -> list[tuple[str, str]]:
    pairs = []
    for text in BASE_REVIEWS:
        for old, new in swaps.items():
            if old in text:
                pairs.append((text, text.replace(old, new)))
    return pairs


def _edited(edit: Callable[[str], str]) -> list[tuple[str, str]]:
    return [(text, edit(text)) for text in BASE_REVIEWS]


PRODUCT_REVIEWS = [
    ("Great phone, works perfectly.", "positive"),
    ("Battery life is excellent.", "positive"),
    ("Very comfortable and easy to use.", "positive"),
    ("Best purchase I have made this year.", "positive"),
    ("Highly recommend this product.", "positive"),
    ("The food was delicious and the staff friendly.", "positive"),
    ("Love it, does exactly what it says.", "positive"),
    ("Broke after two days.", "negative"),
    ("Terrible customer service.", "negative"),
    ("Waste of money, do not buy.", "negative"),
    ("The sound quality is poor.", "negative"),
    ("Stopped working after a week, very disappointed.", "negative"),
    ("The food was cold and the service slow.", "negative"),
    ("Cheap plastic, feels like it will break.", "negative"),
]


def default_checks() -> list[Check]:
    """The suite run on every positive/negative model. Minimums sit a little below what the IMDB
    preset model reaches, so that a regression, not noise, fails them. Intensifiers are a known
    weakness of a bag of n-grams: "very" leans positive in reviews and l2 normalisation dilutes
    the adjective, so "very bad" often comes out *less* negative than "bad"; their minimums
    record today's level instead of an aspiration."""
    return [
        Check("negation_of_positive", "label", _negated_positive(), 0.75,
              '"not good" is negative'),
        Check("negation_of_negative", "up", _negated_negative(), 0.8,
              '"not bad" is more positive than "bad"'),
        Check("intensifier_positive", "up", _intensified(POSITIVE_ADJECTIVES), 0.35,
              '"very good" is more positive than "good"'),
        Check("intensifier_negative", "down", _intensified(NEGATIVE_ADJECTIVES), 0.1,
              '"very bad" is more negative than "bad"'),
        Check("contrast", "label", CONTRAST, 0.6,
              "the clause after 'but' decides: \"good acting but a terrible plot\" is negative"),
        Check("invariance_names", "same", _swapped(NAME_SWAPS), 0.95,
              "changing a person's name keeps the label"),
        Check("invariance_numbers", "same", _swapped(NUMBER_SWAPS), 0.95,
              "changing a number keeps the label"),
        Check("invariance_url", "same", _edited(lambda t: t + " https://example.com/review"), 0.95,
              "appending a URL keeps the label"),
        # Holds by construction while the normaliser lower-cases; it is the check that fails
        # the day a pipeline stops doing so (a cased vectorizer, another preprocessor).
        Check("invariance_case", "same", _edited(str.upper), 0.95,
              "UPPER CASE keeps the label"),
        Check("invariance_punctuation", "same", _edited(lambda t: t.rstrip(".") + "!!"), 0.95,
              "trailing punctuation keeps the label"),
        Check("product_reviews", "label", PRODUCT_REVIEWS, 0.8,
              "short product-review sentences get the obvious label"),
    ]  # fmt: skip


def run_checks(
    score: Scorer, classes: list[str], checks: list[Check] | None = None
) -> list[CheckResult]:
    """Score every case of every check in one model call per check."""
    if "positive" not in classes or "negative" not in classes:
        raise ValueError(
            f"behavioural checks need 'positive' and 'negative' classes, got {classes}"
        )
    positive = classes.index("positive")
    return [_run(check, score, classes, positive) for check in checks or default_checks()]


def _run(check: Check, score: Scorer, classes: list[str], positive: int) -> CheckResult:
    firsts, seconds = zip(*check.cases, strict=True)
    if check.kind == "label":
        proba = score(list(firsts))
        predicted = [classes[i] for i in proba.argmax(axis=1)]
        passed = [p == want for p, want in zip(predicted, seconds, strict=True)]
        detail = [
            {"text": t, "expected": w, "predicted": p}
            for t, w, p in zip(firsts, seconds, predicted, strict=True)
        ]
    else:
        before, after = score(list(firsts)), score(list(seconds))
        if check.kind == "same":
            passed = list(before.argmax(axis=1) == after.argmax(axis=1))
        else:
            moved = after[:, positive] - before[:, positive]
            passed = list(moved > 0 if check.kind == "up" else moved < 0)
        detail = [
            {
                "base": b,
                "edited": e,
                "p_positive_base": round(float(pb), 4),
                "p_positive_edited": round(float(pe), 4),
            }
            for b, e, pb, pe in zip(
                firsts, seconds, before[:, positive], after[:, positive], strict=True
            )
        ]
    count = int(sum(passed))
    rate = count / len(passed)
    return CheckResult(
        name=check.name,
        kind=check.kind,
        description=check.description,
        cases=len(passed),
        passed=count,
        pass_rate=round(rate, 4),
        min_pass_rate=check.min_pass_rate,
        ok=rate >= check.min_pass_rate,
        failures=[d for d, ok in zip(detail, passed, strict=True) if not ok],
    )


def report(results: list[CheckResult]) -> dict[str, object]:
    """JSON-ready report: every rate, every failing case, and whether all minimums hold."""
    return {"all_ok": all(r.ok for r in results), "checks": [asdict(r) for r in results]}


def markdown_table(results: list[CheckResult]) -> str:
    lines = ["| check | kind | cases | pass rate | minimum | ok |", "|---|---|---:|---:|---:|---|"]
    for r in results:
        lines.append(
            f"| {r.name} | {r.kind} | {r.cases} | {r.pass_rate:.2f} | {r.min_pass_rate:.2f} | "
            f"{'yes' if r.ok else 'NO'} |"
        )
    return "\n".join(lines) + "\n"
