"""Image corruptions: each check measures a statistic or a pixel value that a wrong implementation would miss.

Noise is checked on its measured mean and variance against the schedule worked out by hand; crops, jitter factors
and blur sigmas on their recorded values and on what the pixels show; every record is checked to reproduce its
image. Sizes are small (64 px or 336 px, a handful of images) so the whole file runs in a few seconds.
"""

from __future__ import annotations

import colorsys
import math

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision.transforms import Resize
from torchvision.transforms.v2 import functional as TF

from align.data.image_corruptions import (
    CLIP_MEAN,
    CLIP_STD,
    IMAGE_CORRUPTIONS,
    alphas_cumprod,
    apply_corruption,
    blur,
    color_jitter,
    diffusion_noise,
    downscale,
    float_to_pil,
    float_to_uint8,
    gaussian_noise,
    pil_to_float,
    pil_to_uint8,
    random_resized_crop,
    sample_crop_box,
    sigmoid_beta_schedule,
    standard_normal_like,
    uint8_to_float,
)
from align.errors import ConfigError

# Every corruption with the parameters a test run needs (t and std have no default).
PARAMS = {
    "gaussian_noise": {"std": 0.1},
    "diffusion_noise": {"t": 500},
    "random_resized_crop": {},
    "color_jitter": {},
    "downscale": {},
    "blur": {},
}
RANDOM = [name for name in PARAMS if name != "downscale"]  # downscale draws nothing


def textured(width: int = 64, height: int = 48, seed: int = 0, mode: str = "RGB") -> Image.Image:
    """A smooth gradient plus random texture, so crops, blur and noise all change it visibly."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:height, 0:width]
    base = np.stack([xx / width, yy / height, (xx + yy) / (width + height)], axis=-1) * 200
    pixels = np.clip(base + rng.integers(0, 56, size=(height, width, 3)), 0, 255).astype(np.uint8)
    return Image.fromarray(pixels).convert(mode)


def flat(rgb: tuple[int, int, int], size: tuple[int, int] = (32, 24)) -> Image.Image:
    return Image.new("RGB", size, rgb)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image, dtype=np.int16)


# ---------------------------------------------------------------------------------------------------------------
# Schedule and diffusion noise


def test_schedule_matches_a_hand_computation_of_the_first_betas():
    # beta_i = 1e-5 + (5e-3 - 1e-5) * sigmoid(-6 + 12 i / 999): sigmoid(-6) = 0.0024726, so beta_0 = 2.2338e-5.
    def beta(i):
        return 1e-5 + (5e-3 - 1e-5) / (1 + math.exp(6 - 12 * i / 999))

    betas = sigmoid_beta_schedule()
    assert betas.shape == (1000,) and betas.dtype == torch.float64
    assert betas[0].item() == pytest.approx(2.2338e-5, rel=1e-4)
    for i in range(3):
        assert betas[i].item() == pytest.approx(beta(i), rel=1e-12)
    assert betas[-1].item() == pytest.approx(beta(999), rel=1e-12)
    abar = alphas_cumprod()
    assert abar[0].item() == pytest.approx(1 - beta(0), rel=1e-12)
    assert abar[2].item() == pytest.approx((1 - beta(0)) * (1 - beta(1)) * (1 - beta(2)), rel=1e-12)
    assert torch.all(abar[1:] < abar[:-1])
    # POVID/BPO's own float32 computation gives abar[500] = 0.744799, abar[900] = 0.133143.
    assert abar[500].item() == pytest.approx(0.744799, abs=2e-6)
    assert abar[900].item() == pytest.approx(0.133143, abs=2e-6)


@pytest.mark.parametrize("t", [500, 900])
def test_diffusion_noise_has_variance_one_minus_abar_and_keeps_sqrt_abar_of_x0(t):
    x0 = pil_to_float([textured(64, 64, seed=s) for s in range(4)])  # [4, 3, 64, 64] in [0, 1]
    abar = alphas_cumprod()[t].item()
    xt = diffusion_noise(x0, t, torch.Generator().manual_seed(t))
    assert xt.shape == x0.shape
    residual = (xt - math.sqrt(abar) * x0).double().flatten()  # should be sqrt(1 - abar) * eps
    n = residual.numel()
    assert abs(residual.mean().item()) < 5 * math.sqrt((1 - abar) / n)
    assert residual.var().item() == pytest.approx(1 - abar, rel=5 * math.sqrt(2 / n))
    # The residual carries no x0: a wrong signal scale (abar instead of sqrt(abar)) would correlate with it.
    corr = torch.corrcoef(torch.stack([residual, x0.double().flatten()]))[0, 1].item()
    assert abs(corr) < 0.03
    assert xt.min() < 0 and xt.max() > 1  # unclipped


def test_diffusion_noise_is_the_closed_form_at_step_t_counted_from_zero():
    """Same draw, so exact: t indexes abar from 0 as POVID's `alphas_bar_sqrt[t]` (abar[499] would differ by
    1.9e-3, too little for the variance test above to see)."""
    x0 = pil_to_float([textured(32, 32)])
    eps = standard_normal_like(x0, torch.Generator().manual_seed(1))
    for t in (0, 500, 900, 999):
        abar = alphas_cumprod()[t].item()
        xt = diffusion_noise(x0, t, torch.Generator().manual_seed(1))
        assert torch.allclose(xt, math.sqrt(abar) * x0 + math.sqrt(1 - abar) * eps, atol=1e-6)


def test_diffusion_noise_through_pil_is_in_unit_range_units():
    """apply_corruption noises x0 in [0, 1] (POVID's ToTensor): at t=50 eps*sqrt(1 - abar) is 9.4 grey levels.

    On a 0-255 scale the same eps would be 0.04 levels and vanish in rounding.
    """
    grey = flat((128, 128, 128), (96, 96))
    (out,), (record,) = apply_corruption("diffusion_noise", [grey], seed=3, t=50)
    abar = record["alpha_bar"]
    assert abar == pytest.approx(alphas_cumprod()[50].item(), rel=1e-12)
    residual = pixels(out).astype(np.float64) - 128 * math.sqrt(abar)
    expected_std = 255 * math.sqrt(1 - abar)
    assert expected_std == pytest.approx(9.44, abs=0.01)
    assert residual.std() == pytest.approx(expected_std, rel=0.05)
    assert abs(residual.mean()) < 0.5


def test_diffusion_noise_clip_space_is_bpos_normalised_noise():
    """space='clip' noises (x - mean) / std, the CLIP processor's units, and maps back; the record's seed
    reproduces it exactly."""
    image = textured(40, 40)
    (out,), (record,) = apply_corruption("diffusion_noise", [image], seed=7, t=900, space="clip")
    assert record["space"] == "clip" and record["t"] == 900
    mean = torch.tensor(CLIP_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD).view(1, 3, 1, 1)
    x = pil_to_float([image])
    noised = diffusion_noise((x - mean) / std, 900, [torch.Generator().manual_seed(record["seed"])])
    expected = float_to_pil(noised * std + mean)[0]
    assert np.abs(pixels(out) - pixels(expected)).max() <= 1


def test_diffusion_noise_rejects_steps_outside_the_schedule():
    x = torch.zeros(1, 3, 4, 4)
    for bad in (-1, 1000, 2.5):
        with pytest.raises(ValueError, match="t must be"):
            diffusion_noise(x, bad, torch.Generator())
    with pytest.raises(ConfigError, match="t must be"):
        apply_corruption("diffusion_noise", [flat((0, 0, 0))], seed=0, t=1000)


def test_gaussian_noise_has_the_asked_std():
    x = torch.full((2, 3, 128, 128), 0.5)
    out = gaussian_noise(x, 0.1, torch.Generator().manual_seed(0))
    noise = (out - x).double()
    n = noise.numel()
    assert abs(noise.mean().item()) < 5 * 0.1 / math.sqrt(n)
    assert noise.std().item() == pytest.approx(0.1, rel=5 / math.sqrt(2 * n))
    assert torch.equal(gaussian_noise(x, 0.0, torch.Generator()), x)


# ---------------------------------------------------------------------------------------------------------------
# mDPO crop


def test_crop_boxes_cover_1_to_20_percent_with_the_asked_aspect():
    g = torch.Generator().manual_seed(0)
    boxes = [sample_crop_box(336, 336, g) for _ in range(2000)]
    fractions = np.array([b.height * b.width / 336**2 for b in boxes])
    # Rounding w and h to whole pixels moves the area by at most ~3% at 1% of 336x336.
    assert fractions.min() >= 0.01 * 0.97 and fractions.max() <= 0.2 * 1.01
    assert fractions.min() < 0.015 and fractions.max() > 0.19  # the whole range is used
    assert fractions.mean() == pytest.approx(0.105, abs=0.004)  # the area is uniform on [0.01, 0.2]
    aspects = np.array([b.width / b.height for b in boxes])
    assert aspects.min() > 0.75 * 0.9 and aspects.max() < 4 / 3 * 1.1
    assert all(b.top >= 0 and b.left >= 0 and b.top + b.height <= 336 and b.left + b.width <= 336 for b in boxes)
    assert not any(b.fallback for b in boxes)
    lefts = np.array([b.left for b in boxes])
    assert lefts.min() < 10 and lefts.max() > 250  # positions spread over the image


def test_crop_keeps_the_recorded_box_at_the_input_size():
    images = [textured(336, 336, seed=1), textured(200, 120, seed=2), textured(336, 336, seed=3)]
    out, records = apply_corruption("random_resized_crop", images, seed=11)
    for image, corrupted, record in zip(images, out, records, strict=True):
        assert corrupted.size == image.size
        x0, y0, x1, y1 = record["box"]
        area = (x1 - x0) * (y1 - y0) / (image.width * image.height)
        assert record["area_fraction"] == pytest.approx(area)
        assert 0.009 <= area <= 0.205 and not record["fallback"]
        assert 0 <= x0 < x1 <= image.width and 0 <= y0 < y1 <= image.height
        # The pixels are that box, enlarged: recompute from the record alone.
        expected = TF.resized_crop(pil_to_float([image]), y0, x0, y1 - y0, x1 - x0, [image.height, image.width],
                                   antialias=True)
        assert np.abs(pixels(corrupted) - pixels(float_to_pil(expected)[0])).max() <= 1


def test_crop_on_an_image_too_thin_for_any_draw_falls_back_inside_the_scale():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        box = sample_crop_box(4, 2000, g)  # height 4: every draw of h >= 8 overflows
        assert box.fallback and box.height == 4
        assert 0.01 * 0.97 <= box.height * box.width / 8000 <= 0.2 * 1.01
        assert box.left + box.width <= 2000


def test_tensor_crop_loops_one_box_per_sample():
    x = pil_to_float([textured(64, 64, seed=s) for s in range(3)])
    out = random_resized_crop(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    assert not torch.equal(out[0], out[1])


# ---------------------------------------------------------------------------------------------------------------
# STIC: colour jitter and downscale


def test_jitter_factors_lie_in_range_and_spread():
    out, records = apply_corruption("color_jitter", [flat((102, 102, 102))] * 64, seed=0)
    brightness = np.array([r["brightness_factor"] for r in records])
    hue = np.array([r["hue_factor"] for r in records])
    assert brightness.min() >= 0.5 and brightness.max() <= 1.5
    assert hue.min() >= -0.3 and hue.max() <= 0.3
    assert brightness.min() < 0.65 and brightness.max() > 1.35 and hue.min() < -0.2 and hue.max() > 0.2
    assert {tuple(r["order"]) for r in records} == {("brightness", "hue"), ("hue", "brightness")}
    # A flat grey has no hue, so the pixel is exactly 102 * brightness_factor.
    for image, factor in zip(out, brightness, strict=True):
        assert np.abs(pixels(image) - round(102 * factor)).max() <= 1


def test_jitter_shifts_hue_by_the_recorded_factor():
    # Dark red (0.6, 0, 0): hue 0, value 0.6; x1.5 stays below 1, so neither op clips and order does not matter.
    out, records = apply_corruption("color_jitter", [flat((153, 0, 0))] * 16, seed=5)
    for image, record in zip(out, records, strict=True):
        r, g, b = (pixels(image)[0, 0] / 255).tolist()
        h, _, v = colorsys.rgb_to_hsv(r, g, b)
        shift = (h - record["hue_factor"] + 0.5) % 1 - 0.5  # circular difference
        assert abs(shift) < 0.01
        assert v == pytest.approx(0.6 * record["brightness_factor"], abs=1.5 / 255)


def test_tensor_jitter_with_no_brightness_and_no_hue_is_identity():
    x = pil_to_float([textured()])
    assert torch.allclose(color_jitter(x, torch.Generator(), brightness=0.0, hue=0.0), x)


@pytest.mark.parametrize("size", [(336, 336), (640, 480), (300, 500), (21, 90)])
def test_downscale_makes_the_shorter_side_20_as_torchvision_resize(size):
    image = textured(*size)
    (small,), (record,) = apply_corruption("downscale", [image], seed=0)
    assert min(small.size) == 20
    assert small.size == Resize(20)(image).size  # STIC's transform, on the PIL image
    assert record["size"] == list(small.size) and record["input_size"] == list(size)
    # An area-average: the mean colour survives.
    assert np.abs(pixels(small).mean((0, 1)) - pixels(image).mean((0, 1))).max() < 3
    (restored,), _ = apply_corruption("downscale", [image], seed=0, restore_size=True)
    assert restored.size == image.size


def test_downscale_tensor_shape():
    assert downscale(torch.rand(2, 3, 60, 90)).shape == (2, 3, 20, 30)
    assert downscale(torch.rand(2, 3, 60, 90), restore_size=True).shape == (2, 3, 60, 90)


# ---------------------------------------------------------------------------------------------------------------
# Blur


def high_frequency_energy(x: torch.Tensor) -> float:
    """Mean squared response to a discrete Laplacian, [B, C, H, W] -> scalar."""
    lap = 4 * x[..., 1:-1, 1:-1] - x[..., :-2, 1:-1] - x[..., 2:, 1:-1] - x[..., 1:-1, :-2] - x[..., 1:-1, 2:]
    return lap.pow(2).mean().item()


def test_blur_removes_high_frequencies_more_with_larger_sigma():
    x = pil_to_float([textured(96, 96, seed=s) for s in range(2)])
    before = high_frequency_energy(x)
    mild = blur(x, kernel_size=15, sigma=1.0)
    strong = blur(x, kernel_size=15, sigma=2.5)
    assert high_frequency_energy(mild) < before / 5
    assert high_frequency_energy(strong) < high_frequency_energy(mild) / 3
    assert torch.allclose(strong.mean((2, 3)), x.mean((2, 3)), atol=0.01)  # low frequencies stay


def test_blur_records_its_sigma_and_reproduces_from_it():
    images = [textured(64, 64, seed=s) for s in range(8)] + [textured(5, 6)]
    out, records = apply_corruption("blur", images, seed=1, sigma=(1.0, 2.5))
    sigmas = [r["sigma"] for r in records]
    assert all(1.0 <= s <= 2.5 for s in sigmas) and max(sigmas) - min(sigmas) > 0.3
    assert records[-1]["kernel_size"] == 9  # shrunk to fit a 5-px side
    for image, corrupted, record in zip(images, out, records, strict=True):
        k, s = record["kernel_size"], record["sigma"]
        expected = float_to_pil(TF.gaussian_blur(pil_to_float([image]), [k, k], [s, s]))[0]
        assert np.array_equal(pixels(corrupted), pixels(expected))


# ---------------------------------------------------------------------------------------------------------------
# Reproducibility, mixed sizes, registry


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_same_seed_same_pixels_different_seed_different_pixels(name):
    images = [textured(64, 48, seed=s) for s in range(3)]
    first, rec1 = apply_corruption(name, images, seed=42, **PARAMS[name])
    again, rec2 = apply_corruption(name, images, seed=42, **PARAMS[name])
    assert [im.tobytes() for im in first] == [im.tobytes() for im in again] and rec1 == rec2
    if name in RANDOM:
        other, _ = apply_corruption(name, images, seed=43, **PARAMS[name])
        assert all(a.tobytes() != b.tobytes() for a, b in zip(first, other, strict=True))


@pytest.mark.parametrize("name", RANDOM)
def test_an_image_depends_only_on_its_own_seed(name):
    """Each image has its own generator: batch size, the other images and the thread count change nothing."""
    images = [textured(64, 48, seed=s) for s in range(5)]
    together, records = apply_corruption(name, images, seed=9, **PARAMS[name])
    one_by_one, _ = apply_corruption(name, images, seed=9, batch_size=1, **PARAMS[name])
    alone, alone_record = apply_corruption(name, images[3:4], seed=[records[3]["seed"]], **PARAMS[name])
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threaded, _ = apply_corruption(name, images, seed=9, **PARAMS[name])
    finally:
        torch.set_num_threads(threads)
    assert [im.tobytes() for im in together] == [im.tobytes() for im in one_by_one]
    assert [im.tobytes() for im in together] == [im.tobytes() for im in threaded]
    assert alone[0].tobytes() == together[3].tobytes() and alone_record[0] == records[3]
    assert len({r["seed"] for r in records}) == len(images)


@pytest.mark.parametrize("name", sorted(PARAMS))
def test_mixed_sizes_and_modes_in_one_call(name):
    images = [textured(64, 48), textured(30, 50), textured(64, 48, seed=1), textured(20, 20, mode="L"),
              textured(30, 50, mode="RGBA")]
    out, records = apply_corruption(name, images, seed=0, **PARAMS[name])
    assert len(out) == len(records) == len(images)
    for image, corrupted, record in zip(images, out, records, strict=True):
        assert corrupted.mode == "RGB" and record["corruption"] == name
        if name == "downscale":
            assert min(corrupted.size) == 20
        else:
            assert corrupted.size == image.size


def test_no_global_random_state_is_used():
    torch.manual_seed(123)
    state = torch.get_rng_state()
    for name, params in PARAMS.items():
        apply_corruption(name, [textured()], seed=0, **params)
    x = torch.rand(2, 3, 16, 16, generator=torch.Generator())
    g = torch.Generator()
    gaussian_noise(x, 0.1, g), diffusion_noise(x, 10, g), random_resized_crop(x, g), color_jitter(x, g)
    blur(x, g, kernel_size=5), downscale(x, 8)
    assert torch.equal(torch.get_rng_state(), state)


def test_tensor_functions_take_one_generator_per_sample():
    x = pil_to_float([textured(32, 32, seed=s) for s in range(3)])
    gens = [torch.Generator().manual_seed(s) for s in (5, 6, 7)]
    batched = diffusion_noise(x, 500, gens)
    alone = diffusion_noise(x[1:2].contiguous(), 500, [torch.Generator().manual_seed(6)])
    assert torch.equal(batched[1:2], alone)
    # The noise does not depend on x's memory layout either.
    assert torch.equal(diffusion_noise(x.contiguous(), 500, torch.Generator().manual_seed(0)),
                       diffusion_noise(x, 500, torch.Generator().manual_seed(0)))
    with pytest.raises(ValueError, match="3 generators for a batch of 2"):
        diffusion_noise(x[:2], 500, gens)


def test_unknown_names_and_parameters_are_config_errors():
    with pytest.raises(ConfigError) as err:
        apply_corruption("jpeg", [flat((0, 0, 0))], seed=0)
    for known in IMAGE_CORRUPTIONS:
        assert known in str(err.value)
    with pytest.raises(ConfigError, match="no parameter 'sigma'.*valid: .*std"):
        apply_corruption("gaussian_noise", [flat((0, 0, 0))], seed=0, std=0.1, sigma=1.0)
    with pytest.raises(ConfigError, match="needs 't'"):
        apply_corruption("diffusion_noise", [flat((0, 0, 0))], seed=0)
    with pytest.raises(ConfigError, match="space must be"):
        apply_corruption("diffusion_noise", [flat((0, 0, 0))], seed=0, t=5, space="0-255")
    with pytest.raises(ConfigError, match="scale must be"):
        apply_corruption("random_resized_crop", [flat((0, 0, 0))], seed=0, scale=(0.3, 0.2))
    assert apply_corruption("blur", [], seed=0) == ([], [])


def test_conversions_round_trip_and_clamp_without_wrapping():
    images = [textured(33, 17, seed=s) for s in range(2)]
    x = pil_to_float(images)
    assert x.shape == (2, 3, 17, 33) and x.dtype == torch.float32
    assert torch.equal(x, uint8_to_float(pil_to_uint8(images)))
    assert [im.tobytes() for im in float_to_pil(x)] == [im.tobytes() for im in images]
    assert float_to_uint8(torch.tensor([-0.5, 0.5 / 255, 1.0, 1.7])).tolist() == [0, 0, 255, 255]
    with pytest.raises(ValueError, match="one size"):
        pil_to_float([textured(10, 10), textured(11, 10)])
