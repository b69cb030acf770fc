"""English noun rules shared by the vocabularies, the caption writers and the evaluators: the indefinite article,
the plural of a noun phrase, and a rule-based singularizer (a lemmatizer without a dictionary).

Each is one function here; the vocabularies (`align.data.vocab`), CHAIR-style extraction (`align.eval.chair`) and
the shapes world's words (`align.data.shapes_vocab`) call them rather than keeping their own.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping

# ---- plurals

# Plurals the suffix rule gets wrong, for both vocabularies' words (a user vocabulary may add its own).
IRREGULAR_PLURALS: dict[str, str] = {
    "man": "men", "woman": "women", "child": "children", "person": "people", "gentleman": "gentlemen",
    "policeman": "policemen", "serviceman": "servicemen", "mouse": "mice", "knife": "knives",
    "knive": "knives", "pocketknife": "pocketknives", "goose": "geese", "calf": "calves", "ox": "oxen",
    "thief": "thieves", "sheep": "sheep", "bison": "bison", "buffalo": "buffaloes", "cattle": "cattle",
    "people": "people", "children": "children", "oxen": "oxen", "skis": "skis", "scissors": "scissors",
    "broccoli": "broccoli", "luggage": "luggage", "fowl": "fowl", "waterfowl": "waterfowl",
    "rhombus": "rhombi",
}


def pluralize(phrase: str, irregular: Mapping[str, str] = IRREGULAR_PLURALS) -> str:
    """English plural of a noun or noun phrase (the last word takes the plural: "teddy bear" -> "teddy bears")."""
    head, _, last = phrase.rpartition(" ")
    lower = last.lower()
    if lower in irregular:
        plural = irregular[lower]
    elif len(lower) > 1 and lower.endswith("y") and lower[-2] not in "aeiou":
        plural = lower[:-1] + "ies"
    elif lower.endswith(("s", "x", "z", "ch", "sh")):
        plural = lower + "es"
    else:
        plural = lower + "s"
    return f"{head} {plural}" if head else plural


# Words that start with a vowel letter but a consonant sound, and the reverse.
_CONSONANT_SOUND = ("uni", "use", "usu", "uti", "eu", "one", "once", "ewe")
_VOWEL_SOUND = ("hour", "honest", "honor", "heir")


def article(word: str) -> str:
    """'an' before a vowel sound, else 'a' ("an elephant", "a unicycle", "a tv", "an hour")."""
    lower = word.lower()
    if lower.startswith(_VOWEL_SOUND):
        return "an"
    if lower.startswith(_CONSONANT_SOUND):
        return "a"
    return "an" if lower[:1] in "aeiou" else "a"


# ---- singulars

# Plurals no suffix rule gets right, for COCO's vocabulary and common English (checked before anything else).
IRREGULAR_SINGULARS: dict[str, str] = {
    "people": "person", "men": "man", "women": "woman", "children": "child", "grandchildren": "grandchild",
    "gentlemen": "gentleman", "policemen": "policeman", "servicemen": "serviceman", "mice": "mouse",
    "knives": "knife", "pocketknives": "pocketknife", "geese": "goose", "oxen": "ox", "calves": "calf",
    "teeth": "tooth", "feet": "foot", "lice": "louse", "skis": "ski", "buffaloes": "buffalo",
    "potatoes": "potato", "tomatoes": "tomato", "heroes": "hero", "mangoes": "mango", "volcanoes": "volcano",
    "thieves": "thief", "wolves": "wolf", "leaves": "leaf", "halves": "half", "shelves": "shelf",
    "loaves": "loaf", "wives": "wife", "lives": "life", "cacti": "cactus", "fungi": "fungus", "rhombi": "rhombus",
}
# Words ending in these are singular unless the vocabulary knows the stripped form ("taxis" -> "taxi").
_SINGULAR_ENDINGS = ("ss", "us", "is")


def singularize(word: str, known: Collection[str] = frozenset(),
                irregular: Mapping[str, str] = IRREGULAR_SINGULARS) -> str:
    """The singular of a lower-case token, like a noun lemmatizer but with rules instead of a dictionary.

    Order: the `irregular` table; a word in `known` (the vocabulary's own words) stays as it is; otherwise the
    suffix candidates are tried and the first one in `known` wins, else the rule's default:
    "-ies" -> "-y" (but "ties" -> "tie" for 4-letter words), "-ves" -> "-f"/"-fe" only when known,
    "-sses" -> "-ss" ("glasses") else "-se" ("horses", "houses"; "buses" -> "bus" as "bus" is known),
    "-xes"/"-ches"/"-shes"/"-zzes" -> drop "es", "-men" -> "-man" only when known ("policemen"), else drop the "s". Words ending in
    "ss", "us" or "is" and tokens of 3 letters or fewer ("bus", "has", "its") are left alone unless the stripped
    form is known ("taxis" -> "taxi").
    """
    if word in irregular:
        return irregular[word]
    if word in known or not word.isalpha():
        return word
    candidates = _candidates(word)
    if word.endswith("men"):  # "firemen", but never "omen" -> "oman": only a form the vocabulary knows
        return word[:-3] + "man" if word[:-3] + "man" in known else word
    for candidate in candidates:
        if candidate in known:
            return candidate
    if len(word) <= 3 or word.endswith(_SINGULAR_ENDINGS) or not candidates:
        return word
    return candidates[0]


def _candidates(word: str) -> list[str]:
    """Possible singulars of `word`, the rule's default first."""
    if not word.endswith("s") or word.endswith("ss"):
        return []
    strip_s, strip_es = word[:-1], word[:-2]
    if word.endswith("ies"):
        return [strip_s, word[:-3] + "y"] if len(word) <= 4 else [word[:-3] + "y", strip_s]
    if word.endswith("ves"):
        return [strip_s, word[:-3] + "f", word[:-3] + "fe"]
    if word.endswith("ses"):
        return [strip_es, strip_s] if strip_es.endswith("ss") else [strip_s, strip_es]
    if word.endswith(("xes", "ches", "shes", "zzes")):
        return [strip_es, strip_s]
    if word.endswith("oes"):
        return [strip_s, strip_es]
    return [strip_s]
