"""Text normalisation and the token pattern of the sentiment model.

The trained model's config names these by version (``normalizer``), and the scorer applies them
before counting n-grams: training and every scorer prepare a text the same way.
"""

from __future__ import annotations

import html
import re

import numpy as np

_HTML_TAG = re.compile(r"<[^>]{0,200}>")
_ESCAPED_UNICODE = re.compile(r"\\u([0-9a-fA-F]{4})")
_URL = re.compile(r"(?:https?://|www\.)\S+", re.IGNORECASE)  # HTTPS://X.COM too
_MENTION = re.compile(r"@\w+")
_ELONGATION = re.compile(r"(\w)\1{2,}")
_ANY_RUN = re.compile(r"(.)\1\1", re.DOTALL)
_SHORT_TEXT = 300  # characters
_NEGATION = re.compile(
    r"\b(?:not|no|never|cannot|nothing|nobody|none|nor|neither|without|\w+n't)\b"
    r"[^.,:;!?]{0,60}"
)
_WORD = re.compile(r"\b\w[\w']*")
# Words (with inner apostrophes: "don't"), "!" / "?" runs and the common emoticons, which the
# default token pattern drops although they carry much of a tweet's sentiment.
WORD_PATTERN = r"\w[\w']*|[!?]+|[:;=][\-o']?[()\[\]dpo/\\|*]"


def normalize_text(text: str) -> str:
    """Lower-case text with markup, escapes, URLs, user names and elongations made uniform.

    IMDB reviews carry ``<br />`` tags, tweets literal ``\\u2019`` escapes, HTML entities, URLs
    and user names: noise that splits one word into many features."""
    # Each pattern runs only on texts that can match it: a regex scan of a review costs more
    # than a substring test, and most texts have no escapes, tags, URLs or user names.
    if "\\u" in text:
        text = _ESCAPED_UNICODE.sub(lambda m: chr(int(m.group(1), 16)), text)
    if "<" in text:
        text = _HTML_TAG.sub(" ", text)
    text = html.unescape(text)
    # Any case: "://" has none, and lower() costs ~1 µs per review where a regex scan costs ~20.
    if "://" in text or "www." in text.lower():
        text = _URL.sub(" url ", text)
    if "@" in text:
        text = _MENTION.sub(" @user ", text)
    if _has_word_character_run(text):
        text = _ELONGATION.sub(r"\1\1", text)
    return text.replace("\u2019", "'").lower()


def _has_word_character_run(text: str) -> bool:
    """Whether a word character occurs three times in a row (what ``_ELONGATION`` shortens).
    Its regex scan cost ~60 µs per review, a third of the served model's text preparation, and
    finds something in few texts. A short text (a tweet, a sentence) is first searched for any
    character three times in a row (~2 µs; none in most); a long one, where "..." and "!!!" make
    that search find something too often, with numpy (~9 µs per review)."""
    if len(text) < _SHORT_TEXT:
        return _ANY_RUN.search(text) is not None and _ELONGATION.search(text) is not None
    codes = np.frombuffer(text.encode("utf-32-le", "surrogatepass"), dtype=np.uint32)
    runs = np.flatnonzero((codes[2:] == codes[1:-1]) & (codes[1:-1] == codes[:-2]))
    return any(text[i].isalnum() or text[i] == "_" for i in set(runs.tolist()))


def normalize_with_negation(text: str) -> str:
    """``normalize_text``, then mark words that follow a negation up to the next punctuation
    (``not good at all`` → ``not neg_good neg_at neg_all``), as in Das & Chen (2001)."""
    return _NEGATION.sub(_mark_negated, normalize_text(text))


def _mark_negated(match: re.Match[str]) -> str:
    head, _, tail = match.group(0).partition(" ")
    return head + " " + _WORD.sub(lambda w: "neg_" + w.group(0), tail) if tail else head
