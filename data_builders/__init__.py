"""Preference-pair builders (`align build-pairs METHOD`): no training code lives here.

BUILDERS maps a method name to "module:BuilderClass"; it is filled as builders land.
"""

from __future__ import annotations

BUILDERS: dict[str, str] = {}
