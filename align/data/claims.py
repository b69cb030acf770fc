"""RLAIF-V's divide step without a model: a response split into atomic claims, each claim turned into a yes/no
question (its conquer step's input). RLAIF-V uses fine-tuned Llama-3-8B models for both (`splitter=MODEL`,
`questioner=MODEL` do the same with any local chat LM); these rules are the default and what the tests pin.

- `split_claims`: sentences, then coordinated clauses ("..., and ...", "...; ...", "... but ..."), each kept
  when it has a verb-like word and at least three words.
- `yes_no_question`: "There is/are X" -> "Is/Are there X?"; a leading subject with an auxiliary (is, are, was,
  were, has, have, can, does, do) -> the auxiliary first; anything else -> "Is it true that <claim>?". RLAIF-V
  then appends " Please answer yes or no.".
"""

from __future__ import annotations

import re

_SENTENCE = re.compile(r"(?<=[.!?])\s+")
_CLAUSE = re.compile(r";\s+|,\s+and\s+|,\s+but\s+|\s+but\s+|,\s+while\s+|\s+while\s+")
_AUX = ("is", "are", "was", "were", "has", "have", "can", "does", "do")
ANSWER_SUFFIX = " Please answer yes or no."


def split_claims(response: str) -> list[str]:
    """The atomic claims of a response, in order, each a sentence ending with a full stop."""
    claims = []
    for sentence in _SENTENCE.split(response.strip()):
        for clause in _CLAUSE.split(sentence.strip()):
            clause = clause.strip().rstrip(".!?,;").strip()
            if len(clause.split()) >= 3:
                claims.append(clause[0].upper() + clause[1:] + ".")
    return claims


def yes_no_question(claim: str) -> str:
    """A general yes/no question asking whether `claim` holds, with RLAIF-V's answer instruction."""
    text = claim.strip().rstrip(".!?").strip()
    words = text.split()
    lower = [w.lower() for w in words]
    if len(words) >= 2 and lower[0] == "there" and lower[1] in _AUX:
        question = f"{words[1].capitalize()} there {' '.join(words[2:])}"
    else:
        k = next((i for i, w in enumerate(lower[:6]) if w in _AUX and i > 0), None)
        if k is not None:
            subject = " ".join(words[:k])
            subject = subject[0].lower() + subject[1:] if not subject.startswith("I ") else subject
            question = f"{words[k].capitalize()} {subject} {' '.join(words[k + 1:])}".strip()
        else:
            question = f"Is it true that {text[0].lower() + text[1:]}"
    return question + "?" + ANSWER_SUFFIX
