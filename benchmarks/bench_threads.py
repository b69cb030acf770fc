"""Seconds per SFT step of the quickstart's model at 1 and 2 torch threads and at the quickstart's automatic
setting (align.cpu: the cores other processes leave free), alone on the CPU and beside one busy single-threaded
process (a shared machine).

    python benchmarks/bench_threads.py [--steps 30] [--batch 32]
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from pathlib import Path


def _busy() -> None:
    while True:
        pass


def _sft_step_times(work: Path, threads: int, steps: int, batch: int) -> list[float]:
    import torch
    from transformers import TrainerCallback

    from align.train.sft.run import run_sft
    from align.train.sft.settings import AlignSFTConfig

    torch.set_num_threads(threads)
    times: list[float] = []

    class Clock(TrainerCallback):
        def on_step_begin(self, args, state, control, **kwargs):
            self.start = time.perf_counter()

        def on_step_end(self, args, state, control, **kwargs):
            times.append(time.perf_counter() - self.start)

    import align.train.sft as sft_module

    original = sft_module.AlignSFTTrainer.__init__

    def with_clock(self, *a, **kw):
        original(self, *a, **kw)
        self.add_callback(Clock())

    sft_module.AlignSFTTrainer.__init__ = with_clock
    try:
        out = work / f"sft-{threads}-{time.time_ns()}"
        run_sft(AlignSFTConfig(model=str(work / "model"), data=str(work / "world" / "sft.jsonl"), output_dir=str(out),
                               max_steps=steps, per_device_train_batch_size=batch, learning_rate=1e-3,
                               save_strategy="no", report_to="none", disable_tqdm=True, logging_steps=1000,
                               train="projector+llm", max_length=512), progress=False)
    finally:
        sft_module.AlignSFTTrainer.__init__ = original
    return times[3:]  # the first steps warm up


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--batch", type=int, default=32)
    args = parser.parse_args()
    import torch

    from align.data.shapes import generate_shapes_world
    from align.models.tiny import build_tiny
    from align.quickstart.pipeline import QuickstartConfig, world_config

    torch.set_flush_denormal(True)
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        cfg = QuickstartConfig(n_images=400)
        generate_shapes_world(world_config(cfg), work / "world")
        build_tiny("llava", work / "model", seed=0, size=cfg.model_size)
        print(f"SFT step of the quickstart model (batch {args.batch}), median seconds over {args.steps - 3} steps")
        print(f"{'threads':>8} {'alone':>8} {'beside a busy process':>22}")
        from align.cpu import thread_count

        for threads in (1, 2, 0):
            label = str(threads) if threads else "auto"
            alone_threads = thread_count(threads)
            alone = statistics.median(_sft_step_times(work, alone_threads, args.steps, args.batch))
            busy = multiprocessing.Process(target=_busy, daemon=True)
            busy.start()
            time.sleep(1.0)
            try:
                shared_threads = thread_count(threads)  # auto: what the quickstart picks before a step
                shared = statistics.median(_sft_step_times(work, shared_threads, args.steps, args.batch))
            finally:
                busy.terminate()
                busy.join()
            print(f"{label:>8} {alone:>8.3f} {shared:>22.3f}   (threads used: {alone_threads} alone, "
                  f"{shared_threads} shared)")


if __name__ == "__main__":
    main()
