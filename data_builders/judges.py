"""Judges that builders ask about responses: a Python callable named by dotted path, or a local model read by
the likelihood of each allowed answer at its first answer token (a small or untuned model answers reliably that
way; free text would need parsing). A judge that raises or answers outside the allowed set is a failure the
builder counts, never a silent default."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import Any

from align.errors import ConfigError


class JudgeFailed(Exception):
    """The judge raised or gave an answer outside the allowed ones."""


def is_callable_spec(spec: str) -> bool:
    """`pkg.mod:func` (a callable) rather than a model folder or hub id."""
    return ":" in spec and not spec.startswith(("/", "./", "../"))


def load_callable(spec: str, what: str) -> Callable:
    from align.registry import import_object

    try:
        fn = import_object(spec)
    except Exception as exc:  # an import error in the user's module: name the setting that pointed at it
        raise ConfigError(f"{what}={spec}: cannot import it ({type(exc).__name__}: {exc})") from None
    if not callable(fn):
        raise ConfigError(f"{what}={spec} is not callable")
    return fn


def judge_callable(spec: str | None, setting: str, doing: str, model_kind: str) -> Callable | None:
    """A builder's required judge setting (`setting=MODEL` or `setting=pkg.mod:func`): the callable it names, or
    None for a model; missing, a ConfigError saying what the judge is for (`doing`, e.g. "hsa rates severity")."""
    if not spec:
        raise ConfigError(f"{doing} with a {setting}: pass {setting}=MODEL ({model_kind}) or {setting}=pkg.mod:func")
    return load_callable(spec, setting) if is_callable_spec(spec) else None


def judge_each(fn: Callable, calls: Sequence[tuple], read: Callable[[Any], Any]) -> list[Any]:
    """`read(fn(*args))` for each args tuple; None where `fn` raises or `read` refuses its answer (the caller
    counts these)."""
    out = []
    for args in calls:
        try:
            out.append(read(fn(*args)))
        except Exception:  # the user's callable failing, or an answer outside the allowed ones
            out.append(None)
    return out


def choose(generator, conversations: Sequence[list[dict]], images: Sequence[list[Any]],
           answers: Sequence[str]) -> list[str]:
    """For each conversation, the answer (one of `answers`) whose first token the model finds most likely, its
    spellings with a capital and in lower case summed."""
    spellings = {a: sorted({a, a.lower(), a.capitalize()}) for a in answers}
    scores = generator.answer_logprobs(list(conversations), list(images), spellings)
    out = []
    for score in scores:
        finite = {a: v for a, v in score.items() if math.isfinite(v)}
        if not finite:
            raise JudgeFailed("no answer has a finite likelihood")
        out.append(max(finite, key=finite.get))
    return out
