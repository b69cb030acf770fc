"""The `VARIANTS` registry of `align dpo --variant`: every module of this package that defines `VARIANT` (an
`align.train.dpo.variants.base.Variant`), by name, in `position` order.

Adding a variant is adding a module here (see docs/contributing.md); nothing else lists the variants.
"""

from __future__ import annotations

import importlib
import pkgutil

from align.errors import ConfigError
from align.train.dpo.variants.base import Variant


def _discover() -> dict[str, Variant]:
    found = []
    for info in pkgutil.iter_modules(__path__):
        if info.name == "base" or info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{__name__}.{info.name}")
        variant = getattr(module, "VARIANT", None)
        if not isinstance(variant, Variant):
            raise TypeError(f"{module.__name__} defines no VARIANT (a Variant instance)")
        found.append(variant)
    found.sort(key=lambda v: (v.position, v.name))
    names = [v.name for v in found]
    if len(set(names)) != len(names):
        raise TypeError(f"two variant modules register the same name: {names}")
    return {v.name: v for v in found}


VARIANTS: dict[str, Variant] = _discover()


def get_variant(name: str) -> Variant:
    if name not in VARIANTS:
        raise ConfigError(f"unknown variant '{name}'; known variants: {', '.join(VARIANTS)}")
    return VARIANTS[name]


def variant_settings() -> tuple[type, ...]:
    """The variants' settings dataclasses, mixed into `AlignDPOConfig` (listing order)."""
    return tuple(v.settings for v in VARIANTS.values() if v.settings is not None)
