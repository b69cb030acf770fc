"""Rich tables that describe a model: family and parameter counts per part."""

from __future__ import annotations

from pathlib import Path


def part_counts_table(counts: dict[str, dict[str, int]], title: str):
    from rich.table import Table

    from align.models.families import PART_NAMES

    table = Table(title=title)
    table.add_column("part")
    table.add_column("parameters", justify="right")
    table.add_column("trainable", justify="right")
    table.add_column("frozen", justify="right")
    order = [p for p in PART_NAMES if p in counts] + [p for p in counts if p not in PART_NAMES]
    total = trainable = 0
    for part in order:
        c = counts[part]
        total += c["total"]
        trainable += c["trainable"]
        table.add_row(part, f"{c['total']:,}", f"{c['trainable']:,}", f"{c['total'] - c['trainable']:,}")
    table.add_section()
    table.add_row("total", f"{total:,}", f"{trainable:,}", f"{total - trainable:,}", style="bold")
    return table


def model_summary(path_or_id: str | Path) -> tuple[str, dict[str, dict[str, int]]]:
    """(family, {part: {"total", "trainable"}}) without loading weights: the model is built on the meta device."""
    import torch

    from align.models.families import family_of, get_family
    from align.models.load import load_config

    config = load_config(path_or_id)
    family = family_of(config)
    spec = get_family(family)
    with torch.device("meta"):
        model = spec.auto_class().from_config(config)
    from align.models.families import count_parameters_by_part

    return family, count_parameters_by_part(model, spec)


def print_model_summary(path_or_id: str | Path, title: str | None = None) -> dict[str, dict[str, int]]:
    from rich.console import Console

    family, counts = model_summary(path_or_id)
    Console().print(part_counts_table(counts, title or f"{path_or_id} ({family})"))
    return counts
