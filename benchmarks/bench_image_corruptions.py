"""Image-corruption throughput at 336x336: the tensor op, the PIL conversions around it, and the whole call.

    python benchmarks/bench_image_corruptions.py [--size 336] [--batch 32] [--repeats 5] [--threads 1 0]

For each thread count (0 = torch's default, the number of cores) and each corruption, prints images per second
(median of `repeats` timed batches, after one warm-up) for:
  tensor op      the tensor function on a float batch, one generator per image (as apply_corruption draws)
  PIL->tensor    pil_to_float on the batch's PIL images
  tensor->PIL    float_to_pil on the op's output (for downscale: the 20-px images)
  apply          apply_corruption end to end (conversions, generators, records): a builder's real rate
The issue's target is >= 300 diffusion-noised images/s at 336x336 on a 2-core CPU; `apply` is the number to read.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable


def main() -> None:
    import numpy as np
    import torch
    from PIL import Image

    from data_builders.corrupt import image as ic

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=336)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="*", default=[1, 0], help="0 = torch's default")
    args = parser.parse_args()
    default_threads = torch.get_num_threads()

    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8))
              for _ in range(args.batch)]
    x = ic.pil_to_float(images)  # [B, 3, S, S] in [0, 1], channels-last as apply_corruption builds it

    def gens() -> list[torch.Generator]:
        return [torch.Generator().manual_seed(i) for i in range(args.batch)]

    mean, std = torch.tensor(ic.CLIP_MEAN).view(1, 3, 1, 1), torch.tensor(ic.CLIP_STD).view(1, 3, 1, 1)

    def clip_space_noise() -> torch.Tensor:  # what apply_corruption(space="clip") runs: BPO's units and back
        return ic.diffusion_noise((x - mean) / std, 900, gens()).mul_(std).add_(mean)

    # name -> (tensor op on x, apply_corruption params)
    cases: dict[str, tuple[Callable[[], torch.Tensor], dict]] = {
        "diffusion_noise t=500": (lambda: ic.diffusion_noise(x, 500, gens()), {"t": 500}),
        "diffusion_noise t=900 clip": (clip_space_noise, {"t": 900, "space": "clip"}),
        "gaussian_noise std=0.1": (lambda: ic.gaussian_noise(x, 0.1, gens()), {"std": 0.1}),
        "random_resized_crop": (lambda: ic.random_resized_crop(x, gens()), {}),
        "color_jitter": (lambda: ic.color_jitter(x, gens()), {}),
        "downscale 20": (lambda: ic.downscale(x, 20), {}),
        "blur k15 sigma 1-2.5": (lambda: ic.blur(x, gens()), {}),
    }

    print(f"torch {torch.__version__}, {os.cpu_count()} CPUs, torch default threads {default_threads}; "
          f"{args.batch} images of {args.size}x{args.size}, images/s (median of {args.repeats})")
    header = f"{'threads':>7} {'corruption':28} {'tensor op':>10} {'PIL->tensor':>12} {'tensor->PIL':>12} {'apply':>8}"
    for threads in args.threads:
        torch.set_num_threads(threads or default_threads)
        print()
        print(header)
        to_tensor = _rate(lambda: ic.pil_to_float(images), args.batch, args.repeats)
        single = _rate(lambda: ic.diffusion_noise(x, 500, torch.Generator().manual_seed(0)), args.batch,
                       args.repeats)
        for label, (op, params) in cases.items():
            name = label.split()[0]
            out = op()
            row = (_rate(op, args.batch, args.repeats), to_tensor,
                   _rate(lambda out=out: ic.float_to_pil(out), args.batch, args.repeats),
                   _rate(lambda name=name, params=params: ic.apply_corruption(name, images, 0, **params),
                         args.batch, args.repeats))
            print(f"{torch.get_num_threads():>7} {label:28} " + " ".join(
                f"{value:>{width}.0f}" for value, width in zip(row, (10, 12, 12, 8), strict=True)))
        print(f"{torch.get_num_threads():>7} {'(diffusion, one generator)':28} {single:>10.0f}")
    torch.set_num_threads(default_threads)


def _rate(fn: Callable[[], object], batch: int, repeats: int) -> float:
    """Images per second: batch / median seconds per call, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return batch / statistics.median(times)


if __name__ == "__main__":
    main()
