"""`align dpo` step time and peak memory against TRL's DPOTrainer, the variants against align `dpo`, and cached
against live reference log-probs, on one ~20M-parameter LLaVA (`align models tiny --family llava --size base`).

    python benchmarks/bench_dpo.py [--steps 8] [--warmup 2] [--batch 4] [--repeats 2] [--train all]
                                   [--threads 1] [--runs trl dpo ...]

Every run trains the same parts (`--train`, default all, as TRL does; the reference is a separate frozen copy) on
the same shapes-world halva pairs, seed and batch, in a process of its own, so that its peak memory is its own:
- step time: median wall time of a training step after `--warmup` steps (forward of policy and reference,
  backward, AdamW), from a Trainer callback; the Trainer fetches each batch before the step begins, so the
  collator's time (encoding, image loading, mdpo's crops) is measured apart, as the median per batch;
- peak memory: on CUDA torch.cuda.max_memory_allocated; on a CPU the process's peak resident set (ru_maxrss)
  minus its resident set just before the models were loaded (the libraries and the data are left out).
The cached run reads reference log-probs that an earlier process computed (`precompute_ref_log_probs`) and loads
no reference model. Each run is repeated `--repeats` times, the order reversed on every other pass (so slow drift
of the machine cancels), and its fastest median and smallest peak are kept. The table prints each run's ratio to
the run it is compared with, and the target. With `--train` other than all, TRL (which trains everything) is left
out.
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

RUNS = ("trl", "dpo", "ddpo", "hsa", "mdpo", "cached")
# run -> (compared with, target ratio of step time, target ratio of peak memory or None)
TARGETS = {
    "dpo": ("trl", 1.02, 1.05),
    "ddpo": ("dpo", 1.05, None),
    "hsa": ("dpo", 1.05, None),
    "mdpo": ("dpo", 1.45, None),
    "cached": ("dpo", 1 / 1.3, 0.75),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="Measured steps per run.")
    parser.add_argument("--repeats", type=int, default=2, help="Passes over the runs; the best of each is kept.")
    parser.add_argument("--train", default="all", help="Trainable parts of the align runs (align's --train).")
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
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        _prepare(work)
        results: dict[str, dict] = {}
        runs = [r for r in args.runs if r != "trl" or args.train == "all"]
        if "cached" in runs:  # fill the cache first, in a process of its own (not measured)
            _spawn("fill-cache", work, args)
        for k in range(args.repeats):
            for run in runs if k % 2 == 0 else runs[::-1]:
                r = _spawn(run, work, args)
                print(f"pass {k + 1} {run:7} {r['step_s'] * 1000:8.1f} ms/step  collate {r['collate_s'] * 1000:6.1f} ms  "
                      f"peak {r['peak_mb']:8.1f} MB  "
                      f"({r['memory']}, {r['params']:,} parameters, train={args.train if run != 'trl' else 'all'})",
                      flush=True)
                best = results.setdefault(run, r)
                for key in ("step_s", "collate_s", "peak_mb"):
                    best[key] = min(best[key], r[key])
    print()
    print(f"{'run':7} {'vs':5} {'step ratio':>10} {'target':>8} {'memory ratio':>13} {'target':>8} "
          f"{'ms/step':>8} {'collate ms':>10} {'peak MB':>8}")
    for run, (base, step_target, mem_target) in TARGETS.items():
        if run not in results or base not in results:
            continue
        step = results[run]["step_s"] / results[base]["step_s"]
        mem = results[run]["peak_mb"] / results[base]["peak_mb"]
        step_goal = f"<= {step_target:.2f}"
        mem_goal = f"<= {mem_target:.2f}" if mem_target else "-"
        r = results[run]
        print(f"{run:7} {base:5} {step:10.3f} {step_goal:>8} {mem:13.3f} {mem_goal:>8} {r['step_s'] * 1000:8.1f} "
              f"{r['collate_s'] * 1000:10.1f} {r['peak_mb']:8.1f}")
    for run in [r for r in results if r not in TARGETS]:
        r = results[run]
        print(f"{run:7} {'':5} {'':>10} {'':>8} {'':>13} {'':>8} {r['step_s'] * 1000:8.1f} "
              f"{r['collate_s'] * 1000:10.1f} {r['peak_mb']:8.1f}")


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


def _prepare(work: Path) -> None:
    """The ~20M LLaVA, a shapes world and halva pairs with HSA scores (pairs.jsonl)."""
    from align.cli.main import main as cli
    from align.data.io import read_records, write_jsonl
    from align.data.shapes import ShapesConfig, generate_shapes_world
    from align.models.tiny import build_tiny

    build_tiny("llava", work / "model", seed=0, size="base")
    generate_shapes_world(ShapesConfig(n=200, seed=0, image_size=64), work / "world")
    try:
        cli(["build-pairs", "halva", "--input", str(work / "world" / "sources.jsonl"), "--out",
             str(work / "pairs"), "vocabulary=shapes"])
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
        def __init__(self, collate):
            self.collate, self.times = collate, []

        def __call__(self, features):
            start = time.perf_counter()
            batch = self.collate(features)
            self.times.append(time.perf_counter() - start)
            return batch

    common = dict(per_device_train_batch_size=args.batch, max_steps=args.steps + args.warmup, learning_rate=1e-5,
                  save_strategy="no", report_to="none", logging_steps=1000, disable_tqdm=True, bf16=False,
                  gradient_checkpointing=False, max_length=1024, seed=0, use_cpu=not cuda)
    base_rss = _rss_mb()
    if run == "trl":
        trainer = _trl_trainer(work, common)
    else:
        trainer = _align_trainer(run, work, common, args.train)
    if run == "fill-cache":
        return {"filled": trainer.ref_cache_status}
    trainer.add_callback(timer)
    trainer.data_collator = collator = TimedCollator(trainer.data_collator)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    trainer.train()
    measured = timer.times[args.warmup:]
    if cuda:
        peak, memory = torch.cuda.max_memory_allocated() / 2**20, "CUDA max allocated"
    else:
        peak, memory = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 - base_rss, "CPU peak RSS growth"
    return {"step_s": statistics.median(measured), "collate_s": statistics.median(collator.times[args.warmup:]),
            "peak_mb": peak, "memory": memory,
            "params": sum(p.numel() for p in trainer.model.parameters()), "steps": len(measured)}


def _trl_trainer(work: Path, common: dict):
    """TRL's DPOTrainer with its own vision collator, on the same rows (images loaded as PIL)."""
    import datasets
    from trl import DPOConfig, DPOTrainer

    from align.data.collate import load_record_media
    from align.data.io import read_records
    from align.models.load import load_model_and_processor

    records = read_records(work / "pairs" / "pairs.jsonl")
    rows = {"images": [], "prompt": [], "chosen": [], "rejected": []}
    for record, (origin, row) in zip(records, records.origins, strict=True):
        images, _ = load_record_media(record["images"], records.base_dir, None, origin, row)
        rows["images"].append(images)
        for key in ("prompt", "chosen", "rejected"):
            rows[key].append(record[key])
    model, processor = load_model_and_processor(work / "model", dtype="float32")
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
    from align.train.dpo.ref_cache import RefCache, cache_settings, data_fingerprint, default_directory
    from align.train.dpo.settings import AlignDPOConfig
    from align.train.dpo.trainer import AlignDPOTrainer
    from align.train.dpo.variants import get_variant

    cached = run in ("cached", "fill-cache")
    variant_name = "dpo" if cached else run
    variant = get_variant(variant_name)
    data_path = work / "pairs" / "pairs.jsonl"
    cfg = AlignDPOConfig(output_dir=str(work / f"out-{run}"), variant=variant_name, train=train,
                         precompute_ref_log_probs=cached, **common)
    from align.models.freeze import apply_train_policy

    model, processor = load_model_and_processor(work / "model", dtype="float32")
    model = apply_train_policy(model, "llava", train)
    data = load_preference_data(data_path, processor, "llava", max_length=cfg.max_length, **variant.data_options(cfg))
    ref = None
    if not cached:
        ref = load_model_and_processor(work / "model", dtype="float32")[0].requires_grad_(False).eval()
    cache = RefCache(default_directory(data_path), data_fingerprint(data_path, data, processor),
                     cache_settings(cfg, variant)) if cached else None
    collator = PreferenceCollator(ConversationEncoder(processor, "llava"), data,
                                  **variant.collator_options(cfg, processor, "llava"))
    return AlignDPOTrainer(model=model, ref_model=ref, args=cfg,
                           train_dataset=datasets.Dataset.from_dict({"row": list(range(len(data)))}),
                           data_collator=collator, processing_class=processor, family="llava", ref_cache=cache)


if __name__ == "__main__":
    main()
