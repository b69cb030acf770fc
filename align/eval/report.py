"""Evaluation outputs: metrics.json, a rich table, and `compare` (runs side by side + a PNG bar chart).

The chart is drawn with PIL (already a dependency) so evaluation needs no plotting library.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from align.errors import DataError
from align.eval.common import EvalResult
from align.files import read_json

METRICS_FILE = "metrics.json"


def write_metrics(out_dir: str | Path, result: EvalResult, extra: dict[str, Any] | None = None) -> Path:
    """`out_dir/metrics.json` (written to a temporary name, then renamed)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / METRICS_FILE
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**result.to_dict(), **(extra or {})}, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)
    return path


def format_value(name: str, value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    return f"{value:.4f}"


def print_result(result: EvalResult, title: str | None = None) -> None:
    """The headline metrics, then one column per group (split, category, subtask)."""
    from rich.console import Console
    from rich.table import Table

    console = Console()
    table = Table(title=title or result.benchmark)
    table.add_column("metric")
    table.add_column("all", justify="right")
    groups = list(result.groups)
    for group in groups:
        table.add_column(group, justify="right")
    names = list(result.metrics) + [n for g in groups for n in result.groups[g] if n not in result.metrics]
    for name in dict.fromkeys(names):
        table.add_row(name, format_value(name, result.metrics.get(name, "")),
                      *(format_value(name, result.groups[g].get(name, "")) for g in groups))
    console.print(table)
    if result.counts:
        console.print("  " + ", ".join(f"{k}: {v:,}" for k, v in result.counts.items()))
    for note in result.notes:
        console.print(f"  note: {note}")


def load_run(path: str | Path) -> dict[str, Any]:
    """metrics.json of a run folder (or the file itself)."""
    path = Path(path)
    file = path / METRICS_FILE if path.is_dir() else path
    if not file.is_file():
        raise DataError(path, f"no {METRICS_FILE} here; run `align eval BENCH --out {path}` first")
    return read_json(file)


def compare_runs(paths: Sequence[str | Path], png: str | Path | None = None,
                 names: Sequence[str] | None = None) -> dict[str, dict[str, float]]:
    """{run name: headline metrics} for runs of the same benchmark; printed side by side and, with `png`, drawn
    as grouped bars (one group per metric, one bar per run)."""
    from rich.console import Console
    from rich.table import Table

    runs = {}
    benchmarks = set()
    for i, path in enumerate(paths):
        data = load_run(path)
        benchmarks.add(data.get("benchmark"))
        name = names[i] if names else Path(path).name or str(path)
        runs[name] = {k: v for k, v in data.get("metrics", {}).items() if isinstance(v, (int, float))}
    if len(benchmarks) > 1:
        raise DataError(paths[0], f"runs of different benchmarks cannot be compared: {', '.join(map(str, benchmarks))}")
    metrics = list(dict.fromkeys(m for values in runs.values() for m in values))
    table = Table(title=f"{benchmarks.pop()}: {len(runs)} runs")
    table.add_column("metric")
    for name in runs:
        table.add_column(name, justify="right")
    for metric in metrics:
        table.add_row(metric, *(format_value(metric, runs[r].get(metric, "")) for r in runs))
    Console().print(table)
    if png is not None:
        draw_bars(runs, metrics, png)
    return runs


PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
           (227, 119, 194), (127, 127, 127)]


def draw_bars(runs: dict[str, dict[str, float]], metrics: Sequence[str], png: str | Path,
              title: str | None = None) -> Path:
    """Grouped bar chart as a PNG: per metric, one bar per run, each metric scaled to its own largest absolute
    value (the value is written above each bar), so metrics of different ranges share one chart."""
    from PIL import Image, ImageDraw

    bar, gap, pad, height = 18, 26, 60, 260
    n_runs = max(len(runs), 1)
    width = pad * 2 + len(metrics) * (n_runs * bar + gap) + 160
    image = Image.new("RGB", (max(width, 420), height + 140), "white")
    draw = ImageDraw.Draw(image)
    base_y = pad + height
    draw.line([(pad, base_y), (width - 160, base_y)], fill="black")
    if title:
        draw.text((pad, 15), title, fill="black")
    x = pad + gap // 2
    for metric in metrics:
        values = [runs[r].get(metric) for r in runs]
        scale = max((abs(v) for v in values if v is not None), default=0.0) or 1.0
        for i, value in enumerate(values):
            if value is None:
                continue
            h = int(height * abs(value) / scale)
            left = x + i * bar
            draw.rectangle([left, base_y - h, left + bar - 3, base_y], fill=PALETTE[i % len(PALETTE)])
            draw.text((left, base_y - h - 12), f"{value:.2f}" if isinstance(value, float) else str(value),
                      fill="black")
        draw.text((x, base_y + 8), metric[:14], fill="black")
        x += n_runs * bar + gap
    for i, name in enumerate(runs):  # legend
        y = pad + i * 18
        draw.rectangle([width - 150, y, width - 138, y + 12], fill=PALETTE[i % len(PALETTE)])
        draw.text((width - 132, y), str(name)[:20], fill="black")
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    tmp = png.with_name(f".{png.name}.{os.getpid()}.tmp.png")
    image.save(tmp)
    os.replace(tmp, png)
    return png
