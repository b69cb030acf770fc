"""`align quickstart`: every arrow of the toolkit on a generated shapes world, on a CPU, in minutes.

world (co-occurrence prior) -> noisy SFT captions -> tiny LLaVA -> align sft -> pairs -> align dpo (several
losses) and the honest control (SFT on the chosen side) -> align eval (ShapesCHAIR captions, ShapesPOPE by
yes/no likelihood) for every model -> a table and a PNG. With `onpolicy`, a second contrast: pairs of the SFT
model's own samples ranked by a claim checker (RLAIF-V style), against its own control (SFT on the best sample).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import statistics
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from align.progress import ProgressBoard

# The figures the comparison shows, in order: (key, what it measures, lower is better?)
HEADLINE = (
    ("partner_halluc", "absent planted partner mentioned (share of bait classes, eval captions)", True),
    ("chair_i", "CHAIR_i: hallucinated share of object mentions", True),
    ("chair_s", "CHAIR_s: captions with a hallucinated object", True),
    ("recall", "present classes mentioned", False),
    ("color_chair", "wrong colour claims", True),
    ("len", "caption length (tokens)", False),
    ("pope_f1", "ShapesPOPE F1 (yes/no likelihood)", False),
    ("pope_adv_f1", "ShapesPOPE adversarial F1", False),
)

# Preference methods the quickstart can train: name -> `align dpo` variant. "dpo+sft" is DPO plus a weighted
# NLL of the chosen response (the stic variant's loss), which keeps plain DPO from shortening captions.
METHODS = {"dpo": "dpo", "dpo+sft": "stic", "mdpo": "mdpo", "ddpo": "ddpo"}


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    seed: int = 0
    seeds: int = 1
    fast: bool = False
    # Many images, each seen about twice in SFT: with 600 images seen 14 times each the model learned to tell
    # the train images apart instead of reading shapes (CHAIR_i 0.86 on held-out images).
    n_images: int = 4000
    eval_fraction: float = 0.05  # 200 held-out images
    # The world a 1M-parameter model can perceive in minutes (README, "What was tried"): shapes centred in the
    # 3x3 grid cells, one 32 px image patch each, the 8 planted classes each in its own colour.
    image_size: int = 96
    placement: str = "grid"
    classes: str = "planted"
    palette: str = "by-class"
    max_objects: int = 4
    cooccurrence: float = 0.8
    sft_noise: float = 0.6  # P(caption adds the absent partner) for images with an anchor and no partner
    model_size: str = "grid"
    # The vision tower stays at its random init, as LLaVA keeps CLIP frozen: trained along, it drifted toward
    # colour and lost shape (linear probe of class 0.93 -> 0.66) and captions got worse.
    train: str = "projector+llm"
    sft_steps: int = 700
    sft_batch: int = 32
    sft_lr: float = 1e-3
    n_pairs: int = 600
    pair_mix: tuple[float, float, float] = (0.5, 0.25, 0.25)
    methods: tuple[str, ...] = ("mdpo",)  # dpo+sft did as well (partner 0.19 against 0.16, one seed) but 90 s more
    dpo_lr: float = 1e-4
    dpo_beta: float = 0.1
    dpo_epochs: int = 3
    dpo_batch: int = 16
    dpo_sft_coef: float = 0.05  # dpo+sft: weight of the summed chosen log-prob (the stic variant)
    # On-policy rounds (`align iterate`): the current model captions fresh train images, the world's exact
    # corrector fixes or removes each wrong claim (OPA-DPO's expert), and DPO trains on (correction, own caption).
    onpolicy: bool = True
    # One round by default: on seed 0 a second round undid the first (partner_halluc 0.023 -> 0.116, ShapesPOPE F1
    # 0.677 -> 0.418); `--rounds N` runs more.
    rounds: int = 1
    # Fresh prompts per round, in a seeded order: caption requests and the world's yes/no existence questions
    # about train images (align.quickstart.data.onpolicy_prompts), about one of each.
    round_prompts: int = 800
    round_samples: int = 2  # responses sampled per prompt; each one the corrector changes makes a pair
    round_temperature: float = 0.7
    round_method: str = "dpo+sft"  # the chosen-NLL term keeps captions long (ddpo alone: recall 0.88 -> 0.39)
    round_epochs: int = 3  # 2 epochs on 600 prompts left more partner hallucination (0.21 against 0.09, seed 0)
    max_new_tokens: int = 160  # the longest exact caption is ~120 tokens; 80 cut 45% of them short
    threads: int = 0  # 0: the cores other processes leave free, measured at the start of each step (align.cpu)

    def __post_init__(self) -> None:
        from align.errors import ConfigError

        unknown = [m for m in (*self.methods, self.round_method) if m not in METHODS]
        if unknown or not self.methods:
            raise ConfigError(f"quickstart methods must be some of {', '.join(METHODS)}; got "
                              f"{', '.join(unknown) if unknown else 'none'}")

    @classmethod
    def fast_settings(cls, **kw) -> QuickstartConfig:
        """The test-suite size: a smaller world, fewer steps and pairs, one method, one short on-policy round."""
        settings = dict(fast=True, n_images=600, eval_fraction=0.1, sft_steps=150, n_pairs=160, methods=("mdpo",),
                        dpo_epochs=2, rounds=1, round_prompts=80, max_new_tokens=128)
        return cls(**{**settings, **kw})


def run_quickstart(cfg: QuickstartConfig, console=None) -> dict[str, Any]:
    """Run the pipeline for `cfg.seeds` seeds; write results.json, results.md and results.png under `cfg.out`."""
    import torch
    from rich.console import Console

    # Bound to the real stdout now: the steps redirect sys.stdout to their log file while they run.
    console = console or Console(file=sys.stdout)
    _quiet_libraries()
    torch.set_flush_denormal(True)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    per_seed = []
    with ProgressBoard(console) as board:
        board.start_overall("quickstart", estimated_seconds(cfg)["total"] * cfg.seeds)
        for k in range(cfg.seeds):
            seed = cfg.seed + k
            console.rule(f"seed {seed}")
            per_seed.append(run_one_seed(replace(cfg, seed=seed), out / f"seed{seed}", console, board))
    summary = summarize(per_seed)
    summary["seconds"] = round(time.perf_counter() - started, 1)
    summary["config"] = {k: v for k, v in cfg.__dict__.items()}
    _write(out / "results.json", json.dumps(summary, indent=1) + "\n")
    _write(out / "results.md", results_markdown(summary))
    from align.eval.report import draw_bars

    rows = summary["rows"]
    draw_bars({name: {m: v["mean"] for m, v in row.items()} for name, row in rows.items()},
              [m for m, _, _ in HEADLINE if m != "len"], out / "results.png",
              title=f"align quickstart: {cfg.seeds} seed(s)")
    print_summary(summary, console)
    return summary


def run_one_seed(cfg: QuickstartConfig, out: Path, console, board: ProgressBoard | None = None
                 ) -> dict[str, dict[str, float]]:
    from align.data.io import write_jsonl
    from align.data.shapes import generate_shapes_world
    from align.models.tiny import build_tiny
    from align.quickstart.data import chosen_sft_records, noisy_sft_records, preference_pairs

    world = out / "world"
    check_settings(cfg, out)
    cost = estimated_seconds(cfg)
    timer = _Timer(console, out / "log.txt", board, cfg.threads)
    with timer("world", cost["world"]):
        if not (world / "dataset.json").is_file():
            generate_shapes_world(world_config(cfg), world)
    data = world  # data files live in the world folder, so their image paths resolve
    sft_records, changed = noisy_sft_records(world, cfg.sft_noise, cfg.seed)
    write_jsonl(data / "quickstart_sft.jsonl", sft_records)
    console.print(f"  SFT data: {len(sft_records)} conversations, {changed} captions add an absent partner")
    base = out / "base"
    if not (base / "config.json").is_file():
        build_tiny("llava", base, seed=cfg.seed, size=cfg.model_size)
    sft = out / "sft"
    with timer(f"sft ({cfg.sft_steps} steps x {cfg.sft_batch})", cost["sft"]):
        _sft(base, data / "quickstart_sft.jsonl", sft, cfg.sft_steps, cfg.sft_batch, cfg.sft_lr, cfg, warmup=0.05)
    pairs = preference_pairs(world, cfg.n_pairs, cfg.seed, cfg.pair_mix)
    write_jsonl(data / "quickstart_pairs.jsonl", pairs)
    write_jsonl(data / "quickstart_chosen.jsonl", chosen_sft_records(pairs))
    steps = math.ceil(len(pairs) / cfg.dpo_batch) * cfg.dpo_epochs
    models = {"sft": sft}
    for method in cfg.methods:
        with timer(f"dpo {method} ({steps} steps)", cost[f"dpo {method}"]):
            models[method] = _dpo(method, sft, data / "quickstart_pairs.jsonl", out / f"dpo-{method}", cfg)
    with timer(f"control: sft on chosen ({steps} steps)", cost["control"]):
        models["sft-chosen"] = _sft(sft, data / "quickstart_chosen.jsonl", out / "sft-chosen", steps,
                                    cfg.dpo_batch, cfg.dpo_lr, cfg)
    if cfg.onpolicy:
        models.update(_onpolicy_rounds(cfg, world, sft, out, timer, cost))
    results = {}
    for name, path in models.items():
        with timer(f"eval {name}", cost["eval"]):
            results[name] = evaluate_model(path, world, out / "eval" / name, cfg)
        if name == f"round-{cfg.rounds}":
            results["final"] = results[name]  # the last round, under the name results.json promises
    _write(out / "results.json", json.dumps(results, indent=1) + "\n")
    return results


# Seconds per unit of work of each step, measured for the default run alone on a 2-core CPU (README: world 3 s
# for 4000 images, SFT 180 s for 700 x 32 rows, mdpo 94 s for 3 epochs of 600 pairs, the round's sampling 35 s for
# 800 prompts x 2 and its dpo+sft 71 s for 3 epochs of 774 pairs, five evaluations 42 s). They only weigh the steps
# against each other: the overall bar's time left comes from the pace of this run.
SECONDS_PER = {"image": 0.0009, "sft_row": 0.0085, "pair": 0.051, "round_pair": 0.030, "sample": 0.044, "eval": 8.4}


def estimated_seconds(cfg: QuickstartConfig) -> dict[str, float]:
    """Estimated seconds of each step of one seed, on the machine the constants were measured on; "eval" is
    one model's evaluation, "total" the whole seed."""
    epochs_rows = math.ceil(cfg.n_pairs / cfg.dpo_batch) * cfg.dpo_epochs * cfg.dpo_batch
    cost = {"world": cfg.n_images * SECONDS_PER["image"], "sft": cfg.sft_steps * cfg.sft_batch * SECONDS_PER["sft_row"],
            "control": epochs_rows * SECONDS_PER["sft_row"]}
    for method in cfg.methods:
        cost[f"dpo {method}"] = epochs_rows * SECONDS_PER["pair"]
    n_models = 2 + len(cfg.methods)
    if cfg.onpolicy:
        # A round: sampling (about half the prompts are captions; short answers cost little), then DPO on about one
        # pair per prompt (a guess, refined by the pace of the run); the control trains as many SFT rows.
        rows = math.ceil(cfg.round_prompts / cfg.dpo_batch) * cfg.round_epochs * cfg.dpo_batch
        cost["round"] = (0.5 * cfg.round_prompts * cfg.round_samples * SECONDS_PER["sample"]
                         + rows * SECONDS_PER["round_pair"])
        cost["round control"] = cfg.rounds * rows * SECONDS_PER["sft_row"]
        n_models += cfg.rounds + 1
    cost["eval"] = SECONDS_PER["eval"] * (cfg.n_images * cfg.eval_fraction / 200)  # per model
    rounds_after_first = cost.get("round", 0.0) * (cfg.rounds - 1)  # "round" is one round's cost
    cost["total"] = sum(cost.values()) + cost["eval"] * (n_models - 1) + rounds_after_first
    return cost


def world_config(cfg: QuickstartConfig):
    """The shapes world of one seed (recipes/shapes/variants/quickstart.yaml for seed 0)."""
    from align.data.shapes import ShapesConfig

    return ShapesConfig(n=cfg.n_images, seed=cfg.seed, image_size=max(cfg.image_size, 64), max_objects=cfg.max_objects,
                        cooccurrence=cfg.cooccurrence, eval_fraction=cfg.eval_fraction, placement=cfg.placement,
                        classes=cfg.classes, palette=cfg.palette)


# Settings that do not change what a seed's folder holds: where it goes, how many seeds, threads, and which
# preference methods (each trains in a folder of its own from the shared SFT model).
_SETTINGS_NOT_RECORDED = ("out", "seeds", "threads", "methods")


def check_settings(cfg: QuickstartConfig, out: Path) -> None:
    """A rerun reuses finished steps, so a seed folder records the settings it was made with and refuses to be
    reused under others (it would mix, say, an old world with a new model)."""
    from dataclasses import asdict

    from align.errors import ConfigError

    settings = json.loads(json.dumps({k: v for k, v in asdict(cfg).items() if k not in _SETTINGS_NOT_RECORDED}))
    path = out / "settings.json"
    if path.is_file():
        recorded = json.loads(path.read_text(encoding="utf-8"))
        changed = [f"{k}: {recorded.get(k)!r} -> {v!r}" for k, v in settings.items() if recorded.get(k) != v]
        if changed:
            raise ConfigError(f"{out} holds a quickstart run made with other settings ({'; '.join(changed)}); "
                              "use another --out or delete it")
        return
    if out.is_dir() and any(out.iterdir()):
        raise ConfigError(f"{out} is not empty and records no quickstart settings; use another --out")
    out.mkdir(parents=True, exist_ok=True)
    _write(path, json.dumps(settings, indent=1) + "\n")


def iterate_config(cfg: QuickstartConfig, world: Path, sft: Path, out: Path, rounds: int):
    """The `align iterate` run of the on-policy rounds (its first `rounds` rounds)."""
    from align.iterate.settings import IterateConfig

    pairs = {"method": "correct", "corrector": "align.data.shapes_corrector:completing_corrector",
             "samples": cfg.round_samples, "temperature": cfg.round_temperature, "max_new_tokens": cfg.max_new_tokens,
             "batch_size": 64}
    return IterateConfig(model=str(sft), data=str(world / "quickstart_prompts.jsonl"), output_dir=str(out),
                         rounds=rounds, prompts_per_round=cfg.round_prompts, seed=cfg.seed, pairs=pairs,
                         dpo={**_dpo_settings(cfg.round_method, cfg), "num_train_epochs": cfg.round_epochs})


def _onpolicy_rounds(cfg: QuickstartConfig, world: Path, sft: Path, out: Path, timer,
                     cost: dict[str, float]) -> dict[str, Path]:
    """OPA-DPO style rounds with `align iterate`; then the control: SFT from the SFT model on the corrections of
    every round (the chosen sides), as many steps at the same learning rate as the rounds' DPO took together."""
    from dataclasses import replace as copy

    from align.data.io import write_jsonl
    from align.iterate.rounds import chosen_sft_dataset, round_dir, run_iterate
    from align.quickstart.data import onpolicy_prompts

    write_jsonl(world / "quickstart_prompts.jsonl", onpolicy_prompts(world))
    folder = out / "iterate"
    settings = iterate_config(cfg, world, sft, folder, cfg.rounds)
    models, steps = {}, 0
    for k in range(1, cfg.rounds + 1):
        with timer(f"round {k}: sample, correct, {cfg.round_method}", cost["round"]):
            record = run_iterate(copy(settings, rounds=k), show=False)[-1]
        models[f"round-{k}"] = Path(record["policy"])
        steps += json.loads((round_dir(folder, k) / "model" / "run.json").read_text())["global_step"]
    control_data = out / "onpolicy-corrections"
    if not (control_data / "dataset.json").is_file():
        chosen_sft_dataset([round_dir(folder, k) / "pairs" for k in range(1, cfg.rounds + 1)], control_data)
    with timer(f"control: sft on the corrections ({steps} steps)", cost["round control"]):
        models["final-control"] = _sft(sft, control_data, out / "onpolicy-sft-corrections", steps, cfg.dpo_batch,
                                       cfg.dpo_lr, cfg)
    return models


def _common_args(cfg: QuickstartConfig) -> dict[str, Any]:
    return dict(max_length=512, save_strategy="no", report_to="none", disable_tqdm=True, seed=cfg.seed,
                logging_steps=25, train=cfg.train, max_grad_norm=1.0)


def _sft(model: Path, data: Path, out: Path, steps: int, batch: int, lr: float, cfg: QuickstartConfig,
         warmup: float = 0.0, **extra: Any) -> Path:
    from align.train.sft.run import run_sft
    from align.train.sft.settings import AlignSFTConfig

    if (out / "run.json").is_file() and json.loads((out / "run.json").read_text()).get("complete"):
        return out
    # flat_batches: each batch's rows packed without padding (the same batches and losses, 1.95x faster here).
    config = AlignSFTConfig(model=str(model), data=str(data), output_dir=str(out), max_steps=steps,
                            per_device_train_batch_size=batch, learning_rate=lr, lr_scheduler_type="cosine",
                            warmup_steps=warmup, flat_batches=True,
                            **{**_common_args(cfg), **extra})  # `extra` may set `train`
    run_sft(config)
    return out


def _dpo_settings(method: str, cfg: QuickstartConfig) -> dict[str, Any]:
    """`align dpo` settings of a quickstart method (the offline pairs' and the rounds')."""
    extra = {"stic_sft_coef": cfg.dpo_sft_coef} if method == "dpo+sft" else {}
    if METHODS[method] == "ddpo":
        extra = {"ddpo_gamma": 3.0}  # RLHF-V's dataclass default
    return dict(variant=METHODS[method], learning_rate=cfg.dpo_lr, beta=cfg.dpo_beta, num_train_epochs=cfg.dpo_epochs,
                per_device_train_batch_size=cfg.dpo_batch, lr_scheduler_type="cosine", precompute_ref_log_probs=True,
                **extra, **_common_args(cfg))


def _dpo(method: str, model: Path, data: Path, out: Path, cfg: QuickstartConfig) -> Path:
    from align.train.dpo.run import run_dpo
    from align.train.dpo.settings import AlignDPOConfig

    if (out / "run.json").is_file() and json.loads((out / "run.json").read_text()).get("complete"):
        return out
    run_dpo(AlignDPOConfig(model=str(model), data=str(data), output_dir=str(out), **_dpo_settings(method, cfg)))
    return out


def evaluate_model(model: Path, world: Path, out: Path, cfg: QuickstartConfig) -> dict[str, float]:
    """ShapesCHAIR on greedy captions of every eval image and ShapesPOPE by yes/no likelihood."""
    from align.data.shapes import POPE_SUFFIX
    from align.eval.runner import GenerationSettings, generate_answers
    from align.eval.shapes import evaluate_chair, evaluate_pope

    captions = generate_answers(world / "chair_questions.jsonl", out / "captions.jsonl",
                                GenerationSettings(model=str(model), batch_size=64,
                                                   max_new_tokens=cfg.max_new_tokens))
    chair = evaluate_chair(captions, world / "chair_questions.jsonl", sources=str(world / "sources.jsonl"),
                           world=str(world / "world.json"))
    answers = generate_answers(world / "pope_all.jsonl", out / "pope.jsonl",
                               GenerationSettings(model=str(model), batch_size=64, mode="likelihood",
                                                  suffix=POPE_SUFFIX))
    pope = evaluate_pope(answers, world / "pope_all.jsonl")
    m = chair.metrics
    return {"partner_halluc": m["cog"], "chair_i": m["chair_i"], "chair_s": m["chair_s"], "recall": m["recall"],
            "color_chair": m["color_chair"], "len": m["len"], "pope_f1": pope.metrics["f1"],
            "pope_adv_f1": pope.groups.get("adversarial", {}).get("f1", float("nan"))}


def summarize(per_seed: list[dict[str, dict[str, float]]]) -> dict[str, Any]:
    """{"rows": {model: {metric: {"mean", "std", "values"}}}, "seeds": n}."""
    rows: dict[str, dict[str, dict[str, Any]]] = {}
    for name in per_seed[0]:
        rows[name] = {}
        for metric, _, _ in HEADLINE:
            values = [seed[name][metric] for seed in per_seed if name in seed]
            rows[name][metric] = {"mean": statistics.fmean(values),
                                  "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
    return {"seeds": len(per_seed), "rows": rows}


def results_markdown(summary: dict[str, Any]) -> str:
    metrics = [m for m, _, _ in HEADLINE]
    lines = ["| model | " + " | ".join(metrics) + " |", "|---" * (len(metrics) + 1) + "|"]
    for name, row in summary["rows"].items():
        cells = [_fmt(row[m], summary["seeds"]) for m in metrics]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _fmt(value: dict[str, Any], seeds: int) -> str:
    return f"{value['mean']:.3f}" + (f" ± {value['std']:.3f}" if seeds > 1 else "")


def print_summary(summary: dict[str, Any], console) -> None:
    from rich.table import Table

    table = Table(title=f"align quickstart ({summary['seeds']} seed(s), {summary['seconds']} s)")
    table.add_column("model")
    for metric, _, lower in HEADLINE:
        table.add_column(metric + (" ↓" if lower else " ↑"), justify="right")
    for name, row in summary["rows"].items():
        table.add_row(name, *(_fmt(row[m], summary["seeds"]) for m, _, _ in HEADLINE))
    console.print(table)
    for metric, meaning, _ in HEADLINE:
        console.print(f"  {metric}: {meaning}")


def _quiet_libraries() -> None:
    """The quickstart draws its own progress: no weight-loading bars or library warnings on the console (the
    per-step log dicts go to each seed's log.txt)."""
    import logging
    import warnings

    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    logging.getLogger("DeepSpeed").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=UserWarning)


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class _Timer:
    """`with timer("what", seconds):` one step of the run: sets the thread count (`threads`, or the free cores
    now when 0), prints what runs and how long it took, counts as
    `seconds` of estimated work on the progress board's overall bar, and sends the libraries' own output (per-step
    log dicts, warnings) to `log` instead of the console. Off a terminal, the overall estimate is printed after
    each step."""

    def __init__(self, console, log: Path | None = None, board: ProgressBoard | None = None, threads: int = 0):
        self.console, self.log, self.board, self.threads = console, log, board, threads

    def skip(self, seconds: float) -> None:
        """Steps that will not run (no on-policy pairs): their estimated work counts as done."""
        if self.board is not None:
            with self.board.stage(seconds):
                pass

    @contextlib.contextmanager
    def __call__(self, what: str, seconds: float = 0.0) -> Iterator[None]:
        import torch

        from align.cpu import thread_count

        threads = thread_count(self.threads)  # before each step: a CPU shared since the last one gets fewer
        torch.set_num_threads(threads)
        start = time.perf_counter()
        self.console.print(f"[bold]{what}[/bold] ({threads} thread{'s' if threads > 1 else ''}) ...")
        with contextlib.ExitStack() as stack:
            if self.board is not None:
                stack.enter_context(self.board.stage(seconds))
            if self.log is not None:
                sink = stack.enter_context(open(self.log, "a", encoding="utf-8"))
                sink.write(f"\n==> {what}\n")
                stack.enter_context(contextlib.redirect_stdout(sink))
                stack.enter_context(contextlib.redirect_stderr(sink))
            yield
        self.console.print(f"  {what}: {time.perf_counter() - start:.1f} s")
        if self.board is not None and not self.board.live:
            self.console.print(f"  {self.board.overall_line()}", highlight=False)
