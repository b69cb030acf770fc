"""Registries name their entries "module:attribute" and import them on use, so that listing them (for `--help`
or an error that names the choices) imports nothing heavy."""

from __future__ import annotations

import importlib
from typing import Any


def import_object(target: str) -> Any:
    """The object `target` ("package.module:attribute", or the dotted "package.module.attribute") names, its module
    imported on first use."""
    module_name, attribute = target.split(":") if ":" in target else target.rsplit(".", 1)
    return getattr(importlib.import_module(module_name), attribute)
