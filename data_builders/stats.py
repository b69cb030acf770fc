"""Object statistics over a set of source rows: how often each class appears, and with which others."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence


def object_classes(record: dict, canonical) -> set[str]:
    """Canonical classes of a source row's annotated objects (`canonical` maps a name to its class or None)."""
    found = set()
    for obj in record.get("objects") or []:
        name = canonical(str(obj.get("name", "")))
        if name:
            found.add(name)
    return found


def frequencies(class_sets: Iterable[set[str]]) -> Counter:
    """Number of rows each class appears in (POPE's popularity)."""
    counts: Counter = Counter()
    for classes in class_sets:
        counts.update(classes)
    return counts


def cooccurrence(class_sets: Sequence[set[str]]) -> dict[str, Counter]:
    """class -> Counter of the classes it shares a row with."""
    table: dict[str, Counter] = {}
    for classes in class_sets:
        for a in classes:
            row = table.setdefault(a, Counter())
            row.update(c for c in classes if c != a)
    return table
