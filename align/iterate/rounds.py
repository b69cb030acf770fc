"""`align iterate`: on-policy rounds (RLAIF-V's iterative DPO, OPA-DPO's correct-then-train).

Round k (in `output_dir/round_k/`):
1. `samples/`: the round's prompts with `responses` sampled from the current policy (the pair builder's
   `samples`, `temperature`, ... settings);
2. `pairs/`: the builder's pairs from those responses (`rlaifv` judges them, `correct` revises them);
3. `sft/` (with `sft_first`): SFT on the pairs' chosen side, OPA-DPO's step that brings the chosen responses
   on-policy; DPO then starts from it and, with `reference: previous`, uses it as the reference;
4. `model/`: `align dpo` on the pairs, from the current policy; it becomes the next round's policy, and its
   reference with `reference: previous`;
5. `eval/BENCH/`: the `eval:` benchmarks on the new policy;
6. `round.json`: counts, metrics and seconds per step, written last: a round without it is unfinished.
A rerun of the same command continues at the first unfinished step (each step resumes as its own command does);
`run.json` records the settings, and a rerun with other settings (bar a larger `rounds`) is refused with what
differs.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from align.errors import ConfigError, DataError
from align.iterate.settings import IterateConfig

ROUND_RECORD = "round.json"
# Settings a rerun may change: where the run lives, and how many rounds (adding rounds continues the run).
_NOT_COMPARED = ("output_dir", "rounds")


def round_dir(output_dir: str | Path, k: int) -> Path:
    return Path(output_dir) / f"round_{k}"


def run_iterate(cfg: IterateConfig, show: bool = True, console=None,
                on_round: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Run (or continue) every round; returns each round's record (round.json). `on_round` is called with each
    record as its round finishes or is found finished."""
    from align.data.io import read_records
    from align.files import atomic_write_text
    from align.resolve import config_to_dict

    for key in ("model", "data", "output_dir"):
        if not getattr(cfg, key):
            raise ConfigError(f"{key} is required (--{key.replace('_', '-')} or `{key}:` in the recipe)")
    from data_builders import builder_class as builder_of

    builder_class = builder_of(cfg.pairs["method"])
    out = Path(cfg.output_dir)
    settings = config_to_dict(cfg)
    _check_resume(out, settings)
    records = read_records(cfg.data, image_root=cfg.image_root)
    if not records:
        raise DataError(cfg.data, "has no rows")
    data_root = str(cfg.image_root or records.base_dir or Path(cfg.data).parent)
    # On-policy: the policy answers every prompt itself, whatever responses the rows bring.
    rows = [{k: v for k, v in r.items() if k not in ("responses", "response")} for r in records]
    done: list[dict[str, Any]] = []
    policy = cfg.model
    for k in range(1, cfg.rounds + 1):
        folder = round_dir(out, k)
        record = _read_record(folder)
        if record is None:
            _say(console, show, f"[bold]round {k}/{cfg.rounds}[/bold] from {policy}")
            record = _run_round(cfg, k, policy, _round_prompts(rows, k, cfg), data_root, builder_class, console,
                                show)
        done.append(record)
        policy = record["policy"]
        atomic_write_text(out / "run.json", json.dumps({"command": "iterate", "config": settings, "complete":
                                                        k == cfg.rounds, "rounds": done}, indent=1) + "\n")
        if on_round is not None:
            on_round(record)
    if show:
        print_rounds(done, console)
    return done


def _check_resume(out: Path, settings: dict[str, Any]) -> None:
    from align.files import read_json

    path = out / "run.json"
    if not path.is_file():
        if out.is_dir() and any(p.name.startswith("round_") for p in out.iterdir()):
            raise ConfigError(f"{out} holds rounds but no run.json; use another --output-dir")
        return
    recorded = flat(read_json(path).get("config") or {})
    current = flat(settings)
    changed = [f"{key}: {recorded.get(key)!r} -> {current.get(key)!r}" for key in sorted(set(recorded) | set(current))
               if key.split(".")[0] not in _NOT_COMPARED and recorded.get(key) != current.get(key)]
    if changed:
        raise ConfigError(f"{out} holds an iterate run with other settings ({'; '.join(changed[:6])}"
                          f"{'; ...' if len(changed) > 6 else ''}); use another --output-dir, or the same settings "
                          "to continue it")


def flat(values: Any, prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}; lists of mappings by index."""
    if isinstance(values, dict):
        out: dict[str, Any] = {}
        for key, value in values.items():
            out.update(flat(value, f"{prefix}{key}."))
        return out or {prefix.rstrip("."): {}}
    if isinstance(values, list) and any(isinstance(v, dict) for v in values):
        out = {}
        for i, value in enumerate(values):
            out.update(flat(value, f"{prefix}{i}."))
        return out
    return {prefix.rstrip("."): values}


def _round_prompts(rows: list[dict], k: int, cfg: IterateConfig) -> list[dict]:
    """Every row, or `prompts_per_round` of them: round k takes the k-th slice of one seeded order (wrapping
    around once the rows run out), so rounds see fresh prompts while there are any."""
    from align.seeds import derive_seed

    n = cfg.prompts_per_round
    if n is None or n >= len(rows):
        return rows
    order = list(range(len(rows)))
    random.Random(derive_seed(cfg.seed, "iterate-prompts")).shuffle(order)
    start = (k - 1) * n
    return [rows[order[(start + j) % len(order)]] for j in range(n)]


def _run_round(cfg: IterateConfig, k: int, policy: str, prompts: list[dict], data_root: str, builder_class,
               console, show: bool) -> dict[str, Any]:
    from align.data.io import read_dataset_json
    from align.files import atomic_write_text
    from align.resolve import build_dataclass
    from align.seeds import derive_seed
    from align.train.dpo.run import run_dpo
    from align.train.dpo.settings import AlignDPOConfig
    from align.train.skeleton import loadable
    from data_builders.base import run_build
    from data_builders.sampling import sample_dataset

    folder = round_dir(cfg.output_dir, k)
    folder.mkdir(parents=True, exist_ok=True)
    seconds: dict[str, float] = {}
    reference = policy if cfg.reference == "previous" else cfg.model

    def step(name: str):
        return _Step(name, seconds, console, show, k)

    samples, pairs = folder / "samples", folder / "pairs"
    with step("sample"):
        if read_dataset_json(samples) is None:
            sampler = builder_class(build_dataclass(builder_class.config_cls, {**cfg.pairs, "model": policy},
                                                    source="pairs"))
            sample_dataset(sampler, prompts, samples, data_root, seed=derive_seed(cfg.seed, "iterate-sample", k),
                           label=f"round {k}: sampling", progress=show)
    with step("pairs"):
        if read_dataset_json(pairs) is None:
            values = {**cfg.pairs, "input": str(samples), "out": str(pairs), "image_root": data_root,
                      "seed": derive_seed(cfg.seed, "iterate-pairs", k) % 2**31}
            builder = builder_class(build_dataclass(builder_class.config_cls, values, source="pairs"))
            try:
                run_build(builder, command=f"align iterate (round {k})", progress=show)
            except DataError as exc:
                if "made no pairs" in str(exc):
                    raise DataError(samples, f"round {k} made no pairs from the policy's responses: every sample "
                                    f"scored alike or needed no correction ({exc.problem})") from None
                raise
    info = read_dataset_json(pairs) or {}
    start = policy
    if cfg.sft_first is not None:
        from align.train.sft.run import run_sft
        from align.train.sft.settings import AlignSFTConfig

        with step("sft"):
            sft_data = folder / "sft_data"
            if read_dataset_json(sft_data) is None:
                chosen_sft_dataset([pairs], sft_data, image_root=data_root)
            values = cfg.sft_values( policy, str(sft_data), str(folder / "sft"))
            start = loadable(run_sft(build_dataclass(AlignSFTConfig, values, source="sft_first"), resume=True,
                                     progress=show))
        if cfg.reference == "previous":
            reference = start
    with step("dpo"):
        values = cfg.dpo_values(start, str(pairs), str(folder / "model"), None if reference == start else reference,
                                image_root=data_root)
        trained = run_dpo(build_dataclass(AlignDPOConfig, values, source="dpo"), resume=True, progress=show)
    new_policy = loadable(Path(trained))
    metrics: dict[str, dict[str, Any]] = {}
    if cfg.eval:
        with step("eval"):
            for entry in cfg.eval:
                metrics[entry["benchmark"]] = _evaluate(entry, new_policy, folder / "eval", show)
    record = {"round": k, "policy": new_policy, "started_from": policy, "reference": reference,
              "prompts": len(prompts), "pairs": (info.get("counts") or {}).get("rows"), "metrics": metrics,
              "seconds": seconds}
    atomic_write_text(folder / ROUND_RECORD, json.dumps(record, indent=1) + "\n")
    return record


def chosen_sft_dataset(pairs_folders: Sequence[Path], out: Path, image_root: str | None = None) -> Path:
    """The chosen side of every pair in `pairs_folders` as SFT conversations, one dataset folder with the images
    embedded (ids prefixed by the round folder when there are several; image paths, where the pairs kept them,
    resolve under `image_root`)."""
    from align.data.io import read_records, write_records

    rows = []
    for folder in pairs_folders:
        prefix = f"{Path(folder).parent.name}-" if len(pairs_folders) > 1 else ""
        rows += [{"id": prefix + str(r["id"]), "images": r.get("images") or [],
                  "messages": [*r["prompt"], *r["chosen"]]} for r in read_records(folder, image_root=image_root)]
    return write_records(out, rows, kind="sft", images="embed", image_root=image_root, check_images=False)


def _evaluate(entry: dict[str, Any], model: str, folder: Path, show: bool) -> dict[str, Any]:
    from align.eval.run import evaluate_benchmark
    from align.eval.runner import GenerationSettings
    from align.files import read_json

    bench = entry["benchmark"]
    generation = GenerationSettings(model=model, image_root=entry.get("images"),
                                    batch_size=int(entry.get("batch_size", 16)),
                                    max_new_tokens=int(entry.get("max_new_tokens", 128)), prompt=entry.get("prompt"),
                                    suffix=str(entry.get("suffix", "")), mode=str(entry.get("mode", "generate")))
    options = [f"{key}={value}" for key, value in (entry.get("options") or {}).items()]
    path = evaluate_benchmark(bench, questions=entry["questions"], out=folder / bench, generation=generation,
                              overrides=options, show=False, overwrite=True)
    metrics = read_json(path).get("metrics") or {}
    return {name: value for name, value in metrics.items() if isinstance(value, (int, float))}


def _read_record(folder: Path) -> dict[str, Any] | None:
    from align.files import read_json

    path = folder / ROUND_RECORD
    return read_json(path) if path.is_file() else None


def _say(console, show: bool, text: str) -> None:
    if show:
        if console is None:
            from rich.console import Console

            console = Console()
        console.print(text)


class _Step:
    """Times one step of a round into `seconds[name]` and says when it is done."""

    def __init__(self, name: str, seconds: dict[str, float], console, show: bool, k: int):
        self.name, self.seconds, self.console, self.show, self.k = name, seconds, console, show, k

    def __enter__(self) -> _Step:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc) -> bool:
        if exc[0] is None:
            self.seconds[self.name] = round(time.perf_counter() - self.start, 1)
            _say(self.console, self.show, f"  round {self.k} {self.name}: {self.seconds[self.name]} s")
        return False


def print_rounds(records: list[dict[str, Any]], console=None) -> None:
    """One row per round: pairs, seconds, and each benchmark's scalar metrics (the first six of each)."""
    from rich.console import Console
    from rich.table import Table

    console = console or Console()
    columns = []
    for record in records:
        for bench, metrics in record.get("metrics", {}).items():
            for name in list(metrics)[:6]:
                if (bench, name) not in columns:
                    columns.append((bench, name))
    table = Table(title="align iterate")
    for header in ("round", "pairs", "seconds", *(f"{b} {m}" for b, m in columns)):
        table.add_column(header, justify="right")
    for record in records:
        cells = [str(record["round"]), str(record.get("pairs")), f"{sum(record.get('seconds', {}).values()):.0f}"]
        for bench, name in columns:
            value = record.get("metrics", {}).get(bench, {}).get(name)
            cells.append("" if value is None else f"{value:.4f}" if isinstance(value, float) else str(value))
        table.add_row(*cells)
    console.print(table)
