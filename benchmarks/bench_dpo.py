"""`align dpo` step time and peak memory against TRL's DPOTrainer: the shared layouts one by one, the variants
against align `dpo`, and cached against live reference log-probs, on one ~20M-parameter LLaVA
(`align models tiny --family llava --size base`) at each image grid of `--grids`.

    python benchmarks/bench_dpo.py [--grids 64/8 224/14] [--steps 8] [--warmup 2] [--batch 4] [--repeats 2]
                                   [--train projector+llm] [--threads 1] [--runs trl plain vision ...]

Runs (align's shared layouts, `align.models.layout`, added one at a time):
- trl: TRL's DPOTrainer with its own vision collator;
- plain: align dpo with shared_image_encoding, prefix_sharing and padding_free off;
- vision: + shared_image_encoding (each image encoded once per step for policy and reference);
- prefix: + prefix_sharing (each pair one sequence behind its shared prompt and image);
- packed: + padding_free (align dpo's default);
- ddpo, hsa, mdpo, cached: the variants and the cached reference, with align's defaults.
A grid W/P is images of W px in P px patches: 64/8 is 64 image tokens, 224/14 is 256 (LLaVA's CLIP at 224 px).

Every run trains the same parts (`--train`, default projector+llm; TRL's model gets the same trainable parts; the
reference is a separate frozen copy) on the same shapes-world halva pairs, seed and batch, in a process of its own,
so that its peak memory is its own:
- step time: median wall time of a training step after `--warmup` steps (forward of policy and reference,
  backward, AdamW), from a Trainer callback; the Trainer fetches each batch before the step begins, so the
  collator's time (encoding, image loading, mdpo's crops) is measured apart, as the median per batch;
- peak memory: on CUDA torch.cuda.max_memory_allocated; on a CPU the process's peak resident set (ru_maxrss)
  minus its resident set just before the models were loaded (the libraries and the data are left out).
- tokens per pair: the language model's token slots per pair in a step (rows x width of what it runs, padding
  included), beside the pair's real tokens (its chosen and rejected rows unshared);
- vision / LM ms: forward time per step in the vision tower and in the language model (policy and reference
  together; backward, loss and optimizer are the rest of the step).
The cached run reads reference log-probs that an earlier process computed (`precompute_ref_log_probs`) and loads
no reference model. Each run is repeated `--repeats` times, the order reversed on every other pass (so slow drift
of the machine cancels), and its fastest median and smallest peak are kept. The table prints each run's ratio to
the run it is compared with (throughput: pairs per second; tokens/s: the pairs' real tokens, counted unshared, per
second), and the target.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = ("trl", "plain", "vision", "prefix", "packed", "ddpo", "hsa", "mdpo", "cached")
# The layout switches of each align run (the variants and the cached run take align's defaults, all on).
SWITCHES = ("shared_image_encoding", "prefix_sharing", "padding_free")
LAYOUT_RUNS = {"plain": 0, "vision": 1, "prefix": 2, "packed": 3}  # how many of SWITCHES are on
# run -> (compared with, target ratio of step time, target ratio of peak memory or None)
TARGETS = {
    "plain": ("trl", 1.02, 1.05),
    "vision": ("trl", None, None),
    "prefix": ("trl", None, None),
    "packed": ("trl", 0.5, 0.8),  # the goal at 224 px: >= 2x TRL's throughput, <= 0.8x its memory
    "ddpo": ("packed", 1.05, None),
    "hsa": ("packed", 1.05, None),
    "mdpo": ("packed", 1.45, None),
    "cached": ("packed", 1 / 1.3, 0.75),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="Measured steps per run.")
    parser.add_argument("--repeats", type=int, default=2, help="Passes over the runs; the best of each is kept.")
    parser.add_argument("--grids", nargs="*", default=["64/8", "224/14"],
                        help="Image grids, each W/P: W px images in P px patches.")
    parser.add_argument("--train", default="projector+llm", help="Trainable parts of every run (align's --train).")
    parser.add_argument("--warmup", type=int, default=2, help="Steps left out of the median.")
    parser.add_argument("--batch", type=int, default=4, help="Pairs per step.")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", nargs="*", default=list(RUNS), choices=RUNS)
    parser.add_argument("--one", help=argparse.SUPPRESS)  # internal: run one configuration, print JSON
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        print("RESULT " + json.dumps(_run_one(args.one, Path(args.workdir), args)))
        return
    tables = {}
    for grid in args.grids:
        with tempfile.TemporaryDirectory() as tmp:
            work = Path(tmp)
            _prepare(work, grid)
            tables[grid] = _measure(work, grid, args)
    for grid, results in tables.items():
        _print_table(grid, results)


def _measure(work: Path, grid: str, args) -> dict[str, dict]:
    results: dict[str, dict] = {}
    runs = list(args.runs)
    if "cached" in runs:  # fill the cache first, in a process of its own (not measured)
        _spawn("fill-cache", work, args)
    for k in range(args.repeats):
        for run in runs if k % 2 == 0 else runs[::-1]:
            r = _spawn(run, work, args)
            print(f"{grid} pass {k + 1} {run:7} {r['step_s'] * 1000:8.1f} ms/step  collate {r['collate_s'] * 1000:6.1f} "
                  f"ms  peak {r['peak_mb']:8.1f} MB  tokens/pair {r['slots_per_pair']:6.1f} of "
                  f"{r['real_per_pair']:6.1f}  vision {r['vision_s'] * 1000:7.1f} ms  LM {r['lm_s'] * 1000:7.1f} ms  "
                  f"({r['memory']}, {r['params']:,} parameters, {r['trainable']:,} trained)", flush=True)
            best = results.setdefault(run, r)
            for key in ("step_s", "collate_s", "peak_mb", "vision_s", "lm_s"):
                best[key] = min(best[key], r[key])
    return results


def _print_table(grid: str, results: dict[str, dict]) -> None:
    print(f"\ngrid {grid} (W px images in P px patches)")
    print(f"{'run':7} {'vs':6} {'throughput':>10} {'step ratio':>10} {'target':>8} {'memory ratio':>12} {'target':>8} "
          f"{'ms/step':>8} {'tokens/s':>8} {'peak MB':>8} {'tok/pair':>8} {'real/pair':>9} {'vision ms':>9} "
          f"{'LM ms':>8} {'collate':>8}")
    for run, r in results.items():
        base, step_target, mem_target = TARGETS.get(run, (None, None, None))
        ratios = ["", "", "", "", ""]
        if base in results:
            step = r["step_s"] / results[base]["step_s"]
            mem = r["peak_mb"] / results[base]["peak_mb"]
            ratios = [f"{1 / step:.2f}x", f"{step:.3f}", f"<= {step_target:.2f}" if step_target else "-",
                      f"{mem:.3f}", f"<= {mem_target:.2f}" if mem_target else "-"]
        print(f"{run:7} {base or '':6} {ratios[0]:>10} {ratios[1]:>10} {ratios[2]:>8} {ratios[3]:>12} {ratios[4]:>8} "
              f"{r['step_s'] * 1000:8.1f} {r['pairs'] * r['real_per_pair'] / r['step_s']:8.1f} {r['peak_mb']:8.1f} "
              f"{r['slots_per_pair']:8.1f} {r['real_per_pair']:9.1f} {r['vision_s'] * 1000:9.1f} "
              f"{r['lm_s'] * 1000:8.1f} {r['collate_s'] * 1000:8.1f}")


def _spawn(run: str, work: Path, args) -> dict:
    cmd = [sys.executable, __file__, "--one", run, "--workdir", str(work), "--steps", str(args.steps),
           "--warmup", str(args.warmup), "--batch", str(args.batch), "--threads", str(args.threads),
           "--train", args.train]
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": str(args.threads)}
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if done.returncode != 0 or not lines:
        sys.exit(f"run {run} failed:\n{done.stderr[-3000:]}")
    return json.loads(lines[-1][len("RESULT "):])


def _prepare(work: Path, grid: str) -> None:
    """The ~20M LLaVA at `grid` (W/P), a shapes world and halva pairs with HSA scores (pairs.jsonl)."""
    from align.cli.main import main as cli
    from align.data.io import read_records, write_jsonl
    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.models.tiny import build_tiny

    image_size, patch_size = (int(v) for v in grid.split("/"))
    build_tiny("llava", work / "model", seed=0, size="base", image_size=image_size, patch_size=patch_size)
    generate_shapes_world(ShapesConfig(n=200, seed=0, image_size=64), work / "world")
    try:
        cli(["build-pairs", "halva", "--input", str(work / "world" / "sources.jsonl"), "--out",
             str(work / "pairs"), "vocabulary=shapes", "images=copy"])
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
    rows = [dict(r) for r in read_records(work / "pairs")]
    for i, row in enumerate(rows):
        row["rejected_score"] = 0.5 + 0.25 * (i % 4)
    write_jsonl(work / "pairs" / "pairs.jsonl", rows)


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _run_one(run: str, work: Path, args) -> dict:
    import resource

    import torch
    from transformers import TrainerCallback, set_seed
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    cuda = torch.cuda.is_available()
    set_seed(0)

    class StepTimer(TrainerCallback):
        def __init__(self):
            self.times, self.start = [], 0.0

        def on_step_begin(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.start = time.perf_counter()

        def on_step_end(self, *_, **__):
            if cuda:
                torch.cuda.synchronize()
            self.times.append(time.perf_counter() - self.start)

    timer = StepTimer()

    class TimedCollator:
        """Times the collator; counts the language model's token slots and the real tokens of each batch."""

        def __init__(self, collate):
            self.collate, self.times, self.slots, self.real = collate, [], [], []

        def __call__(self, features):
            start = time.perf_counter()
            batch = self.collate(features)
            self.times.append(time.perf_counter() - start)
            layout = batch.get("layout")
            shape = layout.sources.shape if layout is not None and layout.packed else batch["input_ids"].shape
            self.slots.append(shape[0] * shape[1] / len(features))
            self.real.append(float(batch["attention_mask"].sum()) / len(features))
            return batch

    common = dict(per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup, learning_rate=1e-5,
                  save_strategy="no", report_to="none", logging_steps=1000, disable_tqdm=True, bf16=False,
                  gradient_checkpointing=False, max_length=2048, seed=0, use_cpu=not cuda)
    base_rss = _rss_mb()
    if run == "trl":
        trainer = _trl_trainer(work, common, args.train)
    else:
        trainer = _align_trainer(run, work, common, args.train)
    if run == "fill-cache":
        return {"filled": trainer.ref_cache_status}
    trainer.add_callback(timer)
    trainer.data_collator = collator = TimedCollator(trainer.data_collator)
    forward = ForwardTimer(cuda)
    for model in (trainer.model, getattr(trainer, "ref_model", None)):
        if model is not None:
            forward.attach(model)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    measured = timer.times[args.warmup:]
    if cuda:
        peak, memory = torch.cuda.max_memory_allocated() / 2**20, "CUDA max allocated"
    else:
        peak, memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss, "CPU peak RSS growth"
    steps = len(timer.times)
    return {"step_s": statistics.median(measured), "collate_s": statistics.median(collator.times[args.warmup:]),
            "peak_mb": peak, "memory": memory, "pairs": args.batch,
            "params": sum(p.numel() for p in trainer.model.parameters()),
            "trainable": sum(p.numel() for p in trainer.model.parameters() if p.requires_grad),
            "steps": len(measured), "slots_per_pair": statistics.mean(collator.slots[:steps]),
            "real_per_pair": statistics.mean(collator.real[:steps]),
            "vision_s": statistics.median(forward.per_step("vision", steps)[args.warmup:]),
            "lm_s": statistics.median(forward.per_step("lm", steps)[args.warmup:])}


class ForwardTimer:
    """Forward time of the vision tower and the language model of each model call, summed per training step (a
    step's calls are found by the step callback's order: the Trainer runs them between its step hooks)."""

    def __init__(self, cuda: bool):
        self.cuda, self.calls = cuda, {"vision": [], "lm": []}
        self.step_marks: list[int] = []

    def attach(self, model) -> None:
        inner = model.get_base_model() if hasattr(model, "get_base_model") else model
        core = inner.model
        for name, module in (("vision", core.vision_tower), ("lm", core.language_model)):
            module.register_forward_pre_hook(self._start(name))
            module.register_forward_hook(self._stop(name))

    def _sync(self):
        if self.cuda:
            import torch

            torch.cuda.synchronize()

    def _start(self, name):
        def hook(*_):
            self._sync()
            self._t0 = time.perf_counter()
        return hook

    def _stop(self, name):
        def hook(*_):
            self._sync()
            self.calls[name].append(time.perf_counter() - self._t0)
        return hook

    def per_step(self, name: str, steps: int) -> list[float]:
        """The calls split evenly into `steps` steps (every step makes the same calls)."""
        calls = self.calls[name]
        per = max(1, len(calls) // steps)
        return [sum(calls[i * per:(i + 1) * per]) for i in range(steps)] or [0.0]


def _trl_trainer(work: Path, common: dict, train: str):
    """TRL's DPOTrainer with its own vision collator, on the same rows (images loaded as PIL), training the parts
    `train` names (align's policy applied to the model TRL gets)."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from align.data.collate import load_record_media
    from align.data.io import read_records
    from align.models.freeze import apply_train_policy
    from align.models.load import load_model_and_processor

    records = read_records(work / "pairs" / "pairs.jsonl")
    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for record, (origin, row) in zip(records, records.origins, strict=True):
        images, _ = load_record_media(record["images"], records.base_dir, None, origin, row)
        rows["images"].append(images)
        for key in ("prompt", "chosen", "rejected"):
            rows[key].append(record[key])
    model, processor = load_model_and_processor(work / "model", dtype="float32")
    model = apply_train_policy(model, "llava", train)
    ref = load_model_and_processor(work / "model", dtype="float32")[0].requires_grad_(False).eval()
    args = DPOConfig(output_dir=str(work / "out-trl"), **common)
    return DPOTrainer(model=model, ref_model=ref, args=args, train_dataset=datasets.Dataset.from_dict(rows),
                      processing_class=processor)


def _align_trainer(run: str, work: Path, common: dict, train: str):
    """AlignDPOTrainer built as `align dpo` builds it (run_dpo), variant `run` (cached/fill-cache: dpo, cached)."""
    import datasets

    from align.data.collate import ConversationEncoder
    from align.models.load import load_model_and_processor
    from align.train.dpo.data import PreferenceCollator, load_preference_data
    from align.train.dpo.layouts import resolve_layouts
    from align.train.dpo.ref_cache import RefCache, cache_settings, data_fingerprint, default_directory
    from align.train.dpo.settings import AlignDPOConfig
    from align.train.dpo.trainer import AlignDPOTrainer
    from align.train.dpo.variants import get_variant

    cached = run in ("cached", "fill-cache")
    variant_name = "dpo" if cached or run in LAYOUT_RUNS else run
    variant = get_variant(variant_name)
    data_path = work / "pairs" / "pairs.jsonl"
    switches = {name: k < LAYOUT_RUNS.get(run, len(SWITCHES)) for k, name in enumerate(SWITCHES)}
    cfg = AlignDPOConfig(output_dir=str(work / f"out-{run}"), variant=variant_name, train=train,
                         precompute_ref_log_probs=cached, **switches, **common)
    from align.models.freeze import apply_train_policy

    model, processor = load_model_and_processor(work / "model", dtype="float32")
    model = apply_train_policy(model, "llava", train)
    data = load_preference_data(data_path, processor, "llava", max_length=cfg.max_length, **variant.data_options(cfg))
    ref = None
    if not cached:
        ref = load_model_and_processor(work / "model", dtype="float32")[0].requires_grad_(False).eval()
    cache = RefCache(default_directory(data_path), data_fingerprint(data_path, data, processor),
                     cache_settings(cfg, variant)) if cached else None
    layouts, _ = resolve_layouts(cfg, "llava", variant, model)
    collator = PreferenceCollator(ConversationEncoder(processor, "llava"), data,
                                  **variant.collator_options(cfg, processor, "llava"), layouts=layouts)
    return AlignDPOTrainer(model=model, ref_model=ref, args=cfg,
                           train_dataset=datasets.Dataset.from_dict({"row": list(range(len(data)))}),
                           data_collator=collator, processing_class=processor, family="llava", ref_cache=cache)


if __name__ == "__main__":
    main()
