"""Seeds derived from parts (a run's seed, a row id, a purpose): stable across runs, platforms and
PYTHONHASHSEED, unlike `hash()`. Every seeded randomness in align (the shapes world, builders' rows, image
corruptions, mDPO's crops) draws its seed here, so one rule decides reproducibility."""

from __future__ import annotations

import hashlib


def derive_seed(*parts: object, bits: int = 63, separator: str = "\x1f") -> int:
    """The top `bits` bits (at most 64) of sha256 over the parts' `str`, joined by `separator`."""
    if not 1 <= bits <= 64:
        raise ValueError(f"bits must be in [1, 64], got {bits}")
    digest = hashlib.sha256(separator.join(map(str, parts)).encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") >> (64 - bits)
