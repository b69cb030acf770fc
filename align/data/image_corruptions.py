"""Image corruptions for the preference-pair builders: seeded, batched, and recorded.

Tensor functions work on float batches `[B, C, H, W]` with values in [0, 1]. Each random one takes a
`torch.Generator` (or one generator per sample, so a sample's result depends only on its own seed) and never
touches the global RNG, so the same seed gives the same pixels:

    gaussian_noise(x, std, generator)                      x + std * eps, unclipped
    sigmoid_beta_schedule(), alphas_cumprod()              the POVID/BPO schedule (T=1000, sigmoid betas)
    diffusion_noise(x, t, generator)                       sqrt(abar_t) x + sqrt(1 - abar_t) eps, unclipped
    random_resized_crop(x, generator, scale, ratio)        mDPO's m': 1-20% of the area, resized to the input size
    color_jitter(x, generator, brightness, hue)            STIC: ColorJitter(brightness=0.5, hue=0.3)
    downscale(x, size=20)                                  STIC: Resize(20), shorter side 20 px, left small
    blur(x, generator, kernel_size, sigma)                 Gaussian blur, sigma drawn per sample from a range

Builders call `apply_corruption(name, pil_images, seed, **params)`, which returns the corrupted PIL images and,
per image, the exact parameters used (crop box, jitter factors, t and abar_t, the image's own seed) for the row's
`meta`. Images of different sizes may share one call; each image gets its own generator, so its result does not
depend on the other images in the call, their order of sizes, or the batch size.

Value range of the diffusion noise (decided: x0 in [0, 1], as POVID's code does):
- POVID (`llava/train/train_dpo_inherent.py`) defines `pil_to_tensor` as `transforms.ToTensor()`, i.e. float in
  [0, 1], noises that at t=500, turns it back into a PIL image with `ToPILImage` (x255 and a uint8 cast with no
  clamp, so out-of-range values wrap around) and only then runs the CLIP processor, so the noise is added at the
  image's own resolution, as apply_corruption does. The spec's "0-255" is not what the code does: on 0-255 a
  unit-variance eps would be invisible (std 0.5 of a grey level at t=500), where on [0, 1] it is heavy noise
  (std 0.505 against a 0.863x signal). We round and clamp to [0, 1] instead of wrapping around.
- BPO (`data_generation/run_llava_image_weakening.py`) passes `add_diffusion_noise` (same schedule) the
  processor's CLIP-normalised `pixel_values` ((x - mean) / std per channel, about [-1.8, 2.2]) with
  noise_step=900 and feeds the result to the model unclipped. To match it exactly, call `diffusion_noise` on
  those pixel_values. `apply_corruption("diffusion_noise", ..., space="clip")` approximates it on PIL images:
  normalise with the CLIP mean/std, noise, de-normalise, clamp; that shrinks the image towards the CLIP mean
  (not towards black) and scales eps by the CLIP std, but adds the noise at the image's own resolution before
  the processor resizes it, and clamps.
- [-1, 1] (the DDPM convention) is what neither paper uses; pass `2 * x - 1` yourself if you want it.
`diffusion_noise` itself is unit-agnostic: eps has unit variance in the units of the x you give it, so
Var(x_t - sqrt(abar_t) x0) = 1 - abar_t in those units. t is a 0-based index into the schedule, as POVID's code
indexes `alphas_bar_sqrt[t]` (abar_t is the product of t + 1 factors).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, NamedTuple

import numpy as np
import torch
from PIL import Image
from torchvision.transforms.v2 import functional as F

from align.errors import ConfigError
from align.seeds import derive_seed

Generators = torch.Generator | Sequence[torch.Generator]

# OpenAI CLIP's processor normalisation (LLaVA-1.5's vision tower), for BPO's noise space.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


# ----------------------------------------------------------------------------------------------------------------
# PIL <-> tensor


def pil_to_uint8(images: Sequence[Image.Image]) -> torch.Tensor:
    """[B, 3, H, W] uint8 from same-size PIL images (converted to RGB; an alpha channel is dropped).

    The result is a channels-last view of the stacked [B, H, W, 3] pixels: no transpose is paid here, and
    elementwise ops keep that layout, so `uint8_to_pil` gets it back without one either.
    """
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"pil_to_uint8 needs images of one size, got {sorted(sizes)}; group them by size first")
    arrays = [np.asarray(im if im.mode == "RGB" else im.convert("RGB")) for im in images]
    return torch.from_numpy(np.stack(arrays)).permute(0, 3, 1, 2)  # [B, H, W, 3] -> [B, 3, H, W] view


def uint8_to_float(u: torch.Tensor) -> torch.Tensor:
    """uint8 0..255 -> float32 in [0, 1]; keeps the memory layout. Division (not x(1/255)) keeps k/255 exact."""
    return u.to(torch.float32).div_(255)


def float_to_uint8(x: torch.Tensor) -> torch.Tensor:
    """float in [0, 1] -> uint8: round to the nearest level and clamp (no wrap-around, unlike ToPILImage)."""
    return x.mul(255).round_().clamp_(0, 255).to(torch.uint8)


def uint8_to_pil(u: torch.Tensor) -> list[Image.Image]:
    """[B, C, H, W] uint8, C = 1 or 3 -> B PIL images (mode L or RGB)."""
    if u.ndim != 4 or u.shape[1] not in (1, 3):
        raise ValueError(f"expected [B, 1 or 3, H, W], got {list(u.shape)}")
    arrays = u.permute(0, 2, 3, 1).contiguous().numpy()  # [B, H, W, C]; free when u is channels-last
    return [Image.fromarray(a[..., 0] if a.shape[-1] == 1 else a) for a in arrays]


def pil_to_float(images: Sequence[Image.Image]) -> torch.Tensor:
    """Same-size PIL images -> [B, 3, H, W] float32 in [0, 1]; equals uint8_to_float(pil_to_uint8(images)).

    Channels-last in memory, like pil_to_uint8. Each image goes uint8 -> float/255 in one pass into its row of
    the batch while it is in cache, about 1.5x faster at 336 px than stacking the uint8 images first.
    """
    sizes = {im.size for im in images}
    if len(sizes) != 1:
        raise ValueError(f"pil_to_float needs images of one size, got {sorted(sizes)}; group them by size first")
    width, height = images[0].size
    batch = torch.empty((len(images), height, width, 3), dtype=torch.float32)  # [B, H, W, 3]
    for row, im in zip(batch, images, strict=True):
        pixels = torch.from_numpy(np.array(im if im.mode == "RGB" else im.convert("RGB")))  # [H, W, 3] uint8
        torch.div(pixels, 255, out=row)
    return batch.permute(0, 3, 1, 2)


def float_to_pil(x: torch.Tensor) -> list[Image.Image]:
    """[B, C, H, W] float (clamped to [0, 1]) -> B PIL images."""
    # One image at a time: its four passes (x255, round, clamp, cast) then stay in cache, about 2x faster at
    # 336 px than four passes over a whole batch.
    return [uint8_to_pil(float_to_uint8(sample.unsqueeze(0)))[0] for sample in x]


# ----------------------------------------------------------------------------------------------------------------
# Random draws: only ever from the generator passed in


def _check_batch(x: torch.Tensor) -> tuple[int, int, int, int]:
    if not isinstance(x, torch.Tensor) or x.ndim != 4 or not x.is_floating_point():
        shape = list(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"expected a float image batch [B, C, H, W], got {shape}")
    return tuple(x.shape)


def _per_sample(generator: Generators | None, batch: int, what: str) -> list[torch.Generator]:
    """One generator per sample: the shared one repeated (draws then follow sample order), or the given list."""
    if generator is None:
        raise ValueError(f"{what} draws random parameters: pass a torch.Generator")
    if isinstance(generator, torch.Generator):
        return [generator] * batch
    generators = list(generator)
    if len(generators) != batch:
        raise ValueError(f"{what}: got {len(generators)} generators for a batch of {batch}")
    return generators


def _uniform(generator: torch.Generator, low: float, high: float) -> float:
    return low + (high - low) * torch.rand(1, generator=generator, dtype=torch.float64).item()


def _randint(generator: torch.Generator, high: int) -> int:
    """Uniform in [0, high)."""
    return int(torch.randint(0, high, (1,), generator=generator).item())


def standard_normal_like(x: torch.Tensor, generator: Generators, std: float = 1.0) -> torch.Tensor:
    """eps ~ N(0, std^2) with x's shape [B, C, H, W], dtype and device (std scales the draw at no extra cost).

    Drawn in [B, H, W, C] order (pixel-major, as images are stored) and returned as a [B, C, H, W] view, so one
    seed gives the same noise whatever x's memory layout. With one generator per sample, sample i's noise comes
    from generator i alone, and the samples are drawn on torch.get_num_threads() threads: drawing is the
    costliest step of the noise corruptions and torch runs each generator's draw on one core.
    """
    b, c, h, w = _check_batch(x)
    eps = torch.empty((b, h, w, c), dtype=x.dtype, device=x.device)  # [B, H, W, C]
    if isinstance(generator, torch.Generator):
        eps.normal_(0.0, std, generator=generator)  # one generator: one call, necessarily serial
    else:
        generators = _per_sample(generator, b, "noise")
        # Each [H, W, C] row is contiguous, so normal_ stays vectorised; the result does not depend on threads.
        _each(lambda i: eps[i].normal_(0.0, std, generator=generators[i]), b)
    return eps.permute(0, 3, 1, 2)


def _each(fn: Callable[[int], object], n: int) -> None:
    """fn(0) .. fn(n - 1) on up to torch.get_num_threads() threads (torch ops release the GIL)."""
    workers = min(torch.get_num_threads(), n)
    if workers <= 1:
        for i in range(n):
            fn(i)
        return
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(fn, range(n)))  # list() re-raises a worker's exception here


# ----------------------------------------------------------------------------------------------------------------
# Noise


def gaussian_noise(x: torch.Tensor, std: float, generator: Generators) -> torch.Tensor:
    """x + std * eps, unclipped ([B, C, H, W]; std in x's units, so 0.1 is 10% of the [0, 1] range)."""
    if not std >= 0:
        raise ValueError(f"std must be >= 0, got {std}")
    return _like_layout(standard_normal_like(x, generator, float(std)).add_(x), x)


def _like_layout(out: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """out (computed in the noise's [B, H, W, C] memory order) in x's layout: a copy only for NCHW-contiguous x."""
    return out.contiguous() if x.is_contiguous() and not out.is_contiguous() else out


def sigmoid_beta_schedule(num_steps: int = 1000, beta_start: float = 1e-5, beta_end: float = 5e-3) -> torch.Tensor:
    """[num_steps] float64 betas: sigmoid(linspace(-6, 6)) * (beta_end - beta_start) + beta_start (POVID, BPO).

    beta_start/beta_end are the asymptotes: beta[0] is about 2.2e-5 and beta[-1] about 4.99e-3.
    """
    if num_steps < 1:
        raise ValueError(f"num_steps must be >= 1, got {num_steps}")
    ramp = torch.linspace(-6.0, 6.0, num_steps, dtype=torch.float64)
    return torch.sigmoid(ramp) * (beta_end - beta_start) + beta_start


def alphas_cumprod(num_steps: int = 1000, beta_start: float = 1e-5, beta_end: float = 5e-3) -> torch.Tensor:
    """[num_steps] float64 abar_t = prod_{s <= t} (1 - beta_s); abar[500] ~ 0.7448, abar[900] ~ 0.1331."""
    return torch.cumprod(1.0 - sigmoid_beta_schedule(num_steps, beta_start, beta_end), dim=0)


def diffusion_noise(x: torch.Tensor, t: int, generator: Generators, num_steps: int = 1000) -> torch.Tensor:
    """The forward-diffusion sample x_t = sqrt(abar_t) x + sqrt(1 - abar_t) eps, unclipped, [B, C, H, W].

    eps has unit variance in x's own units (see the module docstring: POVID gives x in [0, 1] at t=500, BPO the
    CLIP-normalised pixel_values at t=900). t indexes the schedule from 0, as POVID's code does.
    """
    if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < num_steps:
        raise ValueError(f"t must be an int step in [0, {num_steps}), got {t!r}")
    abar = float(alphas_cumprod(num_steps)[t])
    # sqrt(1 - abar) eps is drawn directly, so x_t costs one pass over the batch after the draw.
    out = standard_normal_like(x, generator, math.sqrt(1.0 - abar)).add_(x, alpha=math.sqrt(abar))
    return _like_layout(out, x)


# ----------------------------------------------------------------------------------------------------------------
# mDPO: random resized crop


class CropBox(NamedTuple):
    """A crop in input pixels, as torchvision's RandomResizedCrop.get_params gives it (top, left, height, width)."""

    top: int
    left: int
    height: int
    width: int
    fallback: bool = False  # True when 10 draws did not fit and the box was clamped into the image


def _check_interval(name: str, value: Sequence[float], low: float, high: float) -> tuple[float, float]:
    lo, hi = (float(v) for v in value)
    if not low <= lo <= hi <= high:
        raise ValueError(f"{name} must be (min, max) with {low} <= min <= max <= {high}, got {tuple(value)}")
    return lo, hi


def sample_crop_box(height: int, width: int, generator: torch.Generator,
                    scale: Sequence[float] = (0.01, 0.2), ratio: Sequence[float] = (3 / 4, 4 / 3)) -> CropBox:
    """A box covering `scale` of the area with aspect ratio (w/h) in `ratio`, drawn as torchvision v2 does.

    Same draws and rounding as RandomResizedCrop (area uniform in scale, log-ratio uniform, up to 10 tries, then
    top/left uniform). Where all 10 tries overflow the image (very elongated or tiny images), torchvision falls
    back to a central crop of up to the whole image, which is no corruption at all; we instead clamp the last
    try's box into the image, keeping its area where the image allows, and mark it `fallback`.
    """
    s_lo, s_hi = _check_interval("scale", scale, 0.0, 1.0)
    r_lo, r_hi = _check_interval("ratio", ratio, 1e-6, math.inf)
    area = height * width
    log_lo, log_hi = math.log(r_lo), math.log(r_hi)
    for _ in range(10):
        target = area * _uniform(generator, s_lo, s_hi)
        aspect = math.exp(_uniform(generator, log_lo, log_hi))
        w = round(math.sqrt(target * aspect))
        h = round(math.sqrt(target / aspect))
        if 0 < w <= width and 0 < h <= height:
            return CropBox(_randint(generator, height - h + 1), _randint(generator, width - w + 1), h, w)
    if w > width:
        w, h = width, round(target / width)
    if h > height:
        h, w = height, round(target / height)
    h, w = min(max(h, 1), height), min(max(w, 1), width)
    return CropBox(_randint(generator, height - h + 1), _randint(generator, width - w + 1), h, w, True)


def crop_and_resize(x: torch.Tensor, boxes: Sequence[CropBox]) -> torch.Tensor:
    """Crop box i from sample i and resize it (bilinear, antialiased) back to [H, W]: [B, C, H, W] -> same."""
    _, _, height, width = _check_batch(x)
    # Boxes differ in size, so this loops; every crop is enlarged, where antialiasing changes nothing.
    return torch.stack([F.resized_crop(sample, box.top, box.left, box.height, box.width, [height, width],
                                       antialias=True) for sample, box in zip(x, boxes, strict=True)])


def random_resized_crop(x: torch.Tensor, generator: Generators, scale: Sequence[float] = (0.01, 0.2),
                        ratio: Sequence[float] = (3 / 4, 4 / 3)) -> torch.Tensor:
    """mDPO's corrupted image m': a random 1-20%-area crop per sample, resized to the input size [B, C, H, W].

    mDPO applies `v2.RandomResizedCrop(size=(H, W), scale=(0.01, 0.2))` to the processor's tensor; the area
    fraction does not depend on resolution, so cropping the raw image keeps its meaning.
    """
    b, _, height, width = _check_batch(x)
    boxes = [sample_crop_box(height, width, g, scale, ratio) for g in _per_sample(generator, b, "random_resized_crop")]
    return crop_and_resize(x, boxes)


# ----------------------------------------------------------------------------------------------------------------
# STIC: colour jitter and downscale


class JitterParams(NamedTuple):
    brightness_factor: float | None  # multiplies every pixel (then clamp to [0, 1]); None: not applied
    hue_factor: float | None  # shift of the HSV hue, in turns; None: not applied
    order: tuple[str, ...]  # the order the two ops run in, as ColorJitter permutes them


def sample_jitter(generator: torch.Generator, brightness: float = 0.5, hue: float = 0.3) -> JitterParams:
    """ColorJitter(brightness, hue)'s parameters: factor in [max(0, 1 - b), 1 + b], hue in [-h, h], random order.

    Drawn in torchvision's order (permutation, brightness, hue); 0 switches an op off, as ColorJitter does.
    """
    if not brightness >= 0:
        raise ValueError(f"brightness must be >= 0, got {brightness}")
    if not 0 <= hue <= 0.5:
        raise ValueError(f"hue must be in [0, 0.5], got {hue}")
    order = [("brightness", "hue")[i] for i in torch.randperm(2, generator=generator).tolist()]
    b = _uniform(generator, max(0.0, 1.0 - brightness), 1.0 + brightness) if brightness > 0 else None
    h = _uniform(generator, -hue, hue) if hue > 0 else None
    enabled = {"brightness": b is not None, "hue": h is not None}
    return JitterParams(b, h, tuple(op for op in order if enabled[op]))


def apply_jitter(image: torch.Tensor, params: JitterParams) -> torch.Tensor:
    """One [C, H, W] image (C = 3) through the drawn brightness and hue changes, with torchvision's kernels."""
    for op in params.order:
        if op == "brightness":
            image = F.adjust_brightness(image, params.brightness_factor)
        else:
            image = F.adjust_hue(image, params.hue_factor)
    return image


def color_jitter(x: torch.Tensor, generator: Generators, brightness: float = 0.5, hue: float = 0.3) -> torch.Tensor:
    """STIC's `ColorJitter(brightness=0.5, hue=0.3)`, parameters drawn per sample: [B, 3, H, W] -> same."""
    b, *_ = _check_batch(x)
    params = [sample_jitter(g, brightness, hue) for g in _per_sample(generator, b, "color_jitter")]
    # torchvision's kernels take one factor per call, so this loops over samples.
    return torch.stack([apply_jitter(sample, p) for sample, p in zip(x, params, strict=True)])


def downscale(x: torch.Tensor, size: int = 20, restore_size: bool = False) -> torch.Tensor:
    """STIC's `Resize(size=20)`: shorter side to `size`, longer side int(size * long / short), bilinear+antialias.

    Left small by default ([B, C, h, w]): STIC hands the 20-px PIL image to LLaVA's `process_images`, which
    resizes it to the model's resolution, so the model's processor should do the upscaling here too.
    `restore_size=True` resizes back to [H, W] (bilinear) for callers that need the input size, such as a
    tensor batch or an image-conditioned loss that stacks the corrupted image with the clean one.
    """
    _, _, height, width = _check_batch(x)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise ValueError(f"size must be a positive int, got {size!r}")
    small = F.resize(x, [size], antialias=True)
    return F.resize(small, [height, width], antialias=True) if restore_size else small


# ----------------------------------------------------------------------------------------------------------------
# Blur


def _fit_kernel(kernel_size: int, height: int, width: int) -> int:
    """The odd kernel size actually used: reflect padding needs kernel_size // 2 < the image's shorter side."""
    if isinstance(kernel_size, bool) or not isinstance(kernel_size, int) or kernel_size < 1 or kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be an odd positive int, got {kernel_size!r}")
    return min(kernel_size, 2 * min(height, width) - 1)


def sample_blur_sigma(generator: torch.Generator | None, sigma: float | Sequence[float]) -> float:
    """A fixed sigma as is, or one uniform in the (min, max) range (needs the generator)."""
    if isinstance(sigma, (int, float)):
        if not sigma > 0:
            raise ValueError(f"sigma must be > 0, got {sigma}")
        return float(sigma)
    lo, hi = _check_interval("sigma", sigma, 1e-6, math.inf)
    if generator is None:
        raise ValueError("blur with a sigma range draws sigma per sample: pass a torch.Generator")
    return _uniform(generator, lo, hi)


def blur(x: torch.Tensor, generator: Generators | None = None, kernel_size: int = 15,
         sigma: float | Sequence[float] = (1.0, 2.5)) -> torch.Tensor:
    """Gaussian blur [B, C, H, W] -> same: one batched call for a fixed sigma, else sigma drawn per sample.

    No paper here fixes a blur; the defaults go from mild to strong at 336 px, with the kernel (15) covering at
    least +-2.8 sigma. The kernel shrinks on images too small for it (reflect padding).
    """
    b, _, height, width = _check_batch(x)
    k = _fit_kernel(kernel_size, height, width)
    if isinstance(sigma, (int, float)):
        s = sample_blur_sigma(None, sigma)
        return F.gaussian_blur(x, [k, k], [s, s])
    generators = _per_sample(generator, b, "blur with a sigma range")
    sigmas = [sample_blur_sigma(g, sigma) for g in generators]
    return torch.stack([F.gaussian_blur(sample, [k, k], [s, s]) for sample, s in zip(x, sigmas, strict=True)])


# ----------------------------------------------------------------------------------------------------------------
# Registry: entry(x [B, 3, H, W] in [0, 1], generators (one per sample), **params) -> (out, one record per sample)


def _gaussian_entry(x: torch.Tensor, generators: list[torch.Generator], *, std: float):
    return gaussian_noise(x, std, generators), [{"std": float(std)} for _ in generators]


def _diffusion_entry(x: torch.Tensor, generators: list[torch.Generator], *, t: int, space: str = "unit",
                     num_steps: int = 1000):
    if space == "unit":  # POVID: noise the [0, 1] image
        out = diffusion_noise(x, t, generators, num_steps)
    elif space == "clip":  # BPO, approximately: noise in CLIP-normalised units, back to [0, 1]
        mean = x.new_tensor(CLIP_MEAN).view(1, 3, 1, 1)
        std = x.new_tensor(CLIP_STD).view(1, 3, 1, 1)
        out = diffusion_noise((x - mean) / std, t, generators, num_steps).mul_(std).add_(mean)
    else:
        raise ValueError(f"space must be 'unit' (POVID) or 'clip' (BPO), got {space!r}")
    abar = float(alphas_cumprod(num_steps)[t])
    return out, [{"t": t, "num_steps": num_steps, "alpha_bar": abar, "space": space} for _ in generators]


def _crop_entry(x: torch.Tensor, generators: list[torch.Generator], *, scale: Sequence[float] = (0.01, 0.2),
                ratio: Sequence[float] = (3 / 4, 4 / 3)):
    _, _, height, width = x.shape
    boxes = [sample_crop_box(height, width, g, scale, ratio) for g in generators]
    records = [{"box": [b.left, b.top, b.left + b.width, b.top + b.height],  # [x0, y0, x1, y1], input pixels
                "area_fraction": b.height * b.width / (height * width), "fallback": b.fallback} for b in boxes]
    return crop_and_resize(x, boxes), records


def _jitter_entry(x: torch.Tensor, generators: list[torch.Generator], *, brightness: float = 0.5,
                  hue: float = 0.3):
    params = [sample_jitter(g, brightness, hue) for g in generators]
    out = torch.stack([apply_jitter(sample, p) for sample, p in zip(x, params, strict=True)])
    return out, [{"brightness_factor": p.brightness_factor, "hue_factor": p.hue_factor, "order": list(p.order)}
                 for p in params]


def _downscale_entry(x: torch.Tensor, generators: list[torch.Generator], *, size: int = 20,
                     restore_size: bool = False):
    out = downscale(x, size, restore_size)
    record = {"size": [out.shape[-1], out.shape[-2]], "input_size": [x.shape[-1], x.shape[-2]],  # [w, h]
              "restore_size": bool(restore_size)}
    return out, [dict(record) for _ in generators]


def _blur_entry(x: torch.Tensor, generators: list[torch.Generator], *, kernel_size: int = 15,
                sigma: float | Sequence[float] = (1.0, 2.5)):
    _, _, height, width = x.shape
    k = _fit_kernel(kernel_size, height, width)
    sigmas = [sample_blur_sigma(g, sigma) for g in generators]
    out = torch.stack([F.gaussian_blur(sample, [k, k], [s, s]) for sample, s in zip(x, sigmas, strict=True)])
    return out, [{"kernel_size": k, "sigma": s} for s in sigmas]


IMAGE_CORRUPTIONS: dict[str, Callable[..., tuple[torch.Tensor, list[dict]]]] = {
    "gaussian_noise": _gaussian_entry,  # std required
    "diffusion_noise": _diffusion_entry,  # t required: POVID t=500 (space "unit"), BPO t=900 (space "clip")
    "random_resized_crop": _crop_entry,  # mDPO: scale (0.01, 0.2), ratio (3/4, 4/3)
    "color_jitter": _jitter_entry,  # STIC: brightness 0.5, hue 0.3
    "downscale": _downscale_entry,  # STIC: size 20, left small
    "blur": _blur_entry,
}


def _entry_params(entry: Callable) -> tuple[set[str], set[str]]:
    """(all parameter names, required ones) of a registry entry, past its (x, generators)."""
    params = list(inspect.signature(entry).parameters.values())[2:]
    return {p.name for p in params}, {p.name for p in params if p.default is inspect.Parameter.empty}


def _image_seeds(seed: int | Sequence[int], n: int) -> list[int]:
    if isinstance(seed, (int, np.integer)) and not isinstance(seed, bool):
        return [derive_seed("image-corruption", int(seed), i) for i in range(n)]
    seeds = list(seed)
    if len(seeds) != n or not all(isinstance(s, (int, np.integer)) and not isinstance(s, bool) for s in seeds):
        raise ValueError(f"seed must be an int or one int per image ({n}), got {seed!r}")
    return [int(s) for s in seeds]


def _size_batches(images: Sequence[Image.Image], batch_size: int) -> list[list[int]]:
    """Indices grouped by image size (first appearance first), cut into batches of at most batch_size."""
    groups: dict[tuple[int, int], list[int]] = {}
    for i, im in enumerate(images):
        groups.setdefault(im.size, []).append(i)
    return [idx[start:start + batch_size] for idx in groups.values() for start in range(0, len(idx), batch_size)]


def apply_corruption(name: str, images: Sequence[Image.Image], seed: int | Sequence[int], *,
                     batch_size: int = 8, **params: Any) -> tuple[list[Image.Image], list[dict]]:
    """Corrupt PIL images with IMAGE_CORRUPTIONS[name]; returns (RGB images, one record per image).

    `seed` is either an int (image i then gets its own seed derived from (seed, i)) or one int per image (a
    builder passes each row's seed; give a video's frames the same seed for the same crop/jitter on every
    frame). Each image has its own generator, so its result depends only on its seed, the image and `params`,
    never on the other images, their sizes or `batch_size`. Every record holds the corruption name, the image's
    seed and the parameters used, so `name`, the seed and the record reproduce the image.

    `batch_size` only trades speed for memory: 8 images of 336 px (11 MB of float pixels) keep the elementwise
    passes mostly in cache; at 336 px, one thread, diffusion noise ran ~400 images/s in batches of 4-8 against
    ~330 in batches of 32 and ~290 in batches of 64.
    """
    if name not in IMAGE_CORRUPTIONS:
        raise ConfigError(f"unknown image corruption '{name}'; known: {', '.join(sorted(IMAGE_CORRUPTIONS))}")
    entry = IMAGE_CORRUPTIONS[name]
    allowed, required = _entry_params(entry)
    unknown, missing = sorted(set(params) - allowed), sorted(required - set(params))
    if unknown:
        raise ConfigError(f"image corruption '{name}' has no parameter {', '.join(map(repr, unknown))}; "
                          f"valid: {', '.join(sorted(allowed))}")
    if missing:
        raise ConfigError(f"image corruption '{name}' needs {', '.join(map(repr, missing))}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    seeds = _image_seeds(seed, len(images))
    rgb = [im if im.mode == "RGB" else im.convert("RGB") for im in images]
    corrupted: list[Image.Image | None] = [None] * len(rgb)
    records: list[dict | None] = [None] * len(rgb)
    for idx in _size_batches(rgb, batch_size):
        x = pil_to_float([rgb[i] for i in idx])  # [b, 3, H, W] in [0, 1], channels-last
        generators = [torch.Generator().manual_seed(seeds[i]) for i in idx]
        try:
            out, recs = entry(x, generators, **params)
        except ValueError as err:
            raise ConfigError(f"image corruption '{name}': {err}") from None
        for i, im, rec in zip(idx, float_to_pil(out), recs, strict=True):
            corrupted[i] = im
            records[i] = {"corruption": name, "seed": seeds[i], **rec}
    return corrupted, records
