"""The closing table of `align build-pairs`: rows read, pairs written, rows skipped by reason."""

from __future__ import annotations


def print_summary(method: str, summary) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"build-pairs {method} -> {summary.out}")
    table.add_column("")
    table.add_column("count", justify="right")
    table.add_row("rows read", f"{summary.rows_read:,}")
    table.add_row("pairs written", f"{summary.pairs_written:,}")
    for reason, n in sorted(summary.skipped.items()):
        table.add_row(f"skipped: {reason}", f"{n:,}")
    Console().print(table)
