"""Preference-pair builders (`align build-pairs METHOD`): no training code lives here.

BUILDERS maps a method name to "module:BuilderClass", imported on use so listing methods stays cheap.
"""

from __future__ import annotations

from align.errors import lookup
from align.registry import import_object

BUILDERS: dict[str, str] = {
    "halva": "data_builders.halva:HalvaBuilder",
    "povid": "data_builders.povid:PovidBuilder",
    "bpo": "data_builders.bpo:BpoBuilder",
    "stic": "data_builders.stic:SticBuilder",
    "rlhfv": "data_builders.rlhfv:RlhfvBuilder",
    "vlfeedback": "data_builders.vlfeedback:VlfeedbackBuilder",
    "rlaifv": "data_builders.rlaifv:RlaifvBuilder",
    "hsa": "data_builders.hsa:HsaBuilder",
    "hound": "data_builders.hound:HoundBuilder",
    "correct": "data_builders.correct:CorrectBuilder",
}


def builder_class(method: str):
    return import_object(lookup(BUILDERS, "method", method))


def config_for_recipe(values: dict):
    """The config class of a recipes/pairs/ file: its builder's, named by the recipe's `method` key."""
    from align.errors import ConfigError

    method = values.get("method")
    if not method:
        raise ConfigError(f"a pairs recipe names its builder with `method:`; known: {', '.join(sorted(BUILDERS))}")
    return builder_class(str(method)).config_cls
