"""Per tiny family: parameter count, build time, and forward+backward time at batch 4 on one CPU thread.

    python benchmarks/tiny_models.py [--families llava qwen2_vl ...] [--repeats 10]

Prints a table; numbers are wall-clock medians on whatever machine runs it.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path


def main() -> None:
    import torch
    from PIL import Image

    from align.models.families import get_family
    from align.models.inputs import encode
    from align.models.load import load_model_and_processor
    from align.models.tiny import TINY_BUILDERS, build_tiny

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--families", nargs="*", default=sorted(TINY_BUILDERS))
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    hf_logging.set_verbosity_error()

    prompt = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Describe the image."}]}]
    images = [[Image.new("RGB", (40, 30), c)] for c in ("red", "blue", "green", "gray")]
    print(f"{'family':18} {'params':>10} {'build s':>8} {'fwd+bwd ms (b=4)':>17} {'generate 8 tok ms':>18}")
    with tempfile.TemporaryDirectory() as tmp:
        for family in args.families:
            start = time.perf_counter()
            path = build_tiny(family, Path(tmp) / family)
            build_s = time.perf_counter() - start
            model, processor = load_model_and_processor(path, dtype="float32")
            get_family(family)
            n_params = sum(p.numel() for p in model.parameters())
            batch = encode(processor, family, [prompt] * 4, images)
            labels = batch["input_ids"].clone()
            labels[batch["attention_mask"] == 0] = -100
            model.train()
            times = []
            for _ in range(args.repeats + 1):
                t0 = time.perf_counter()
                model(**batch, labels=labels).loss.backward()
                times.append(time.perf_counter() - t0)
            step_ms = statistics.median(times[1:]) * 1000
            model.eval()
            gen_batch = encode(processor, family, [prompt] * 2, images[:2])
            with torch.no_grad():
                t0 = time.perf_counter()
                model.generate(**gen_batch, max_new_tokens=8, min_new_tokens=8, do_sample=False)
                gen_ms = (time.perf_counter() - t0) * 1000
            print(f"{family:18} {n_params:>10,} {build_s:>8.2f} {step_ms:>17.1f} {gen_ms:>18.1f}")


if __name__ == "__main__":
    main()
