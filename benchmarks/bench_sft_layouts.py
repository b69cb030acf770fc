"""SFT batch layouts on the quickstart's model and data mix (captions and short answers): padded random batches,
`flat_batches` (the same batches packed without padding) and length-grouped batches, each in its own process.

    python benchmarks/bench_sft_layouts.py [--steps 100] [--batch 32] [--threads 2] [--images 4000]

Prints, per layout, the seconds of the training steps (the Trainer's train_runtime: collation, forward, backward,
AdamW) and of the whole run (row checks and model loading included), the tokens computed per step (padded width x
rows, or packs x width) against the real tokens, and the speed-up over padded batches.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import tempfile
import time
from pathlib import Path

LAYOUTS = {"padded": {}, "flat_batches": {"flat_batches": True},
           "group_by_length": {"train_sampling_strategy": "group_by_length"}}


def _run(work: str, layout: str, steps: int, batch: int, threads: int, queue) -> None:
    import torch

    from align.train.sft.run import run_sft
    from align.train.sft.settings import AlignSFTConfig

    torch.set_num_threads(threads)
    torch.set_flush_denormal(True)
    out = Path(work) / f"sft-{layout}"
    start = time.perf_counter()
    run_sft(AlignSFTConfig(model=str(Path(work) / "model"), data=str(Path(work) / "world" / "quickstart_sft.jsonl"),
                           output_dir=str(out), max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-3,
                           save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=10_000,
                           train="projector+llm", max_length=512, seed=0, **LAYOUTS[layout]), progress=False)
    total = time.perf_counter() - start
    record = json.loads((out / "run.json").read_text())
    queue.put((record["metrics"]["train_runtime"], total))


def _tokens(work: Path, batch: int, steps: int) -> dict[str, tuple[float, float]]:
    """Per layout: (tokens computed per step, real tokens per step), over the first `steps` random batches."""
    import torch

    from align.models.layout import pack_rows
    from align.models.load import load_model_and_processor
    from align.train.sft.data import load_sft_data

    processor = load_model_and_processor(work / "model", dtype="float32")[1]
    lengths = [s.length for s in load_sft_data(work / "world" / "quickstart_sft.jsonl", processor, "llava",
                                                progress=False).spans]
    order = torch.randperm(len(lengths), generator=torch.Generator().manual_seed(0)).tolist()
    padded = flat = real = 0
    for k in range(steps):
        rows = [lengths[i] for i in order[k * batch % len(order):][:batch]]
        padded += max(rows) * len(rows)
        flat += max(rows) * len(pack_rows(rows))
        real += sum(rows)
    return {"padded": (padded / steps, real / steps), "flat_batches": (flat / steps, real / steps)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--images", type=int, default=4000)
    args = parser.parse_args()

    from align.data.io import write_jsonl
    from align.data.shapes import generate_shapes_world
    from align.models.tiny import build_tiny
    from align.quickstart.data import noisy_sft_records
    from align.quickstart.pipeline import QuickstartConfig, world_config

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = QuickstartConfig(n_images=args.images)
        generate_shapes_world(world_config(cfg), work / "world")
        write_jsonl(work / "world" / "quickstart_sft.jsonl", noisy_sft_records(work / "world", cfg.sft_noise, 0)[0])
        build_tiny("llava", work / "model", seed=0, size=cfg.model_size)
        tokens = _tokens(work, args.batch, args.steps)
        print(f"SFT of the quickstart model: {args.steps} steps x {args.batch} rows, {args.threads} thread(s)")
        print(f"{'layout':>16} {'train s':>8} {'total s':>8} {'speed-up':>9} {'tokens/step':>12} {'real':>6}")
        base = None
        for layout in LAYOUTS:
            queue = multiprocessing.get_context("spawn").Queue()
            proc = multiprocessing.get_context("spawn").Process(
                target=_run, args=(tmp, layout, args.steps, args.batch, args.threads, queue))
            proc.start()
            train, total = queue.get()
            proc.join()
            base = base or train
            computed, real = tokens.get(layout, (float("nan"), float("nan")))
            print(f"{layout:>16} {train:>8.1f} {total:>8.1f} {base / train:>8.2f}x {computed:>12.0f} {real:>6.0f}")


if __name__ == "__main__":
    main()
