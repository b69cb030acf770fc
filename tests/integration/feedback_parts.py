"""Splitters, labelers and judges the feedback-builder tests name by dotted path (the tests put this folder on sys.path)."""

from __future__ import annotations

import hashlib


def whole(question, response):
    """The whole response as its one claim."""
    return [response] if response.strip() else []


def by_hash(question, source):
    """A deterministic stand-in judge: yes for about half the questions."""
    return hashlib.sha256(question.encode()).digest()[0] % 2 == 0


def fails_on_circles(question, source):
    if "circle" in question:
        raise RuntimeError("labeler crashed")
    return True


def says_maybe(question, source):
    return "maybe"


def judges_gibberish(sentence, source, question):
    return "catastrophic"


def scores_text(response, caption, question):
    return "five"


def adds_a_circle(question, response, source):
    """A stand-in corrector that always changes the response: its words, then one more sentence."""
    return " ".join(response.split()[:6]) + " There is a red circle."


def returns_a_number(question, response, source):
    return 42
