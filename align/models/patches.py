"""Workarounds for transformers bugs, applied to loaded processors (real checkpoints and tiny ones alike).

Each patch changes one instance (never a transformers class), is idempotent, leaves what `save_pretrained` writes
unchanged, and skips itself when the bug it works around is absent.
"""

from __future__ import annotations

import functools
from typing import Any


def patch_fuyu_processor(processor: Any) -> Any:
    """Make a Fuyu processor run with the PIL-backend image processor; returns `processor`.

    Bug (transformers 5.x, seen in 5.24): `FuyuProcessor._process_images` always asks the image processor for torch
    tensors and passes them to `image_processor.patchify_image`. `FuyuImageProcessorPil.patchify_image` is written
    for numpy (`array.transpose(0, 1, 3, 2, 4)`), so on a tensor it raises "TypeError: transpose() takes 2
    positional arguments but 5 were given". AutoProcessor uses the PIL backend when torchvision is missing or when
    asked for it (`backend="pil"`); the torchvision `FuyuImageProcessor` is not affected.

    Fix: while the processor prepares images, the PIL image processor's `patchify_image` goes through numpy and back
    and returns [1, n_patches, 3*ph*pw] like the torchvision backend.
    When it is no longer needed: `FuyuImageProcessorPil().patchify_image(torch.zeros(1, 3, 30, 30))` runs. The probe
    `_patchify_accepts_tensors` checks exactly that, so the patch is then skipped; delete it once the pinned
    transformers passes the probe.
    """
    image_processor = getattr(processor, "image_processor", None)
    if image_processor is None or not hasattr(processor, "_process_images"):
        return processor
    current = processor.__dict__.get("_process_images")
    if isinstance(current, functools.partial) and current.func is _process_images_via_numpy:
        return processor  # already patched
    if _patchify_accepts_tensors(image_processor):
        return processor  # torchvision backend, or a transformers release with the bug fixed
    # An instance attribute: ProcessorMixin.to_dict saves only __init__ arguments and sub-processors, so it is not
    # written out; a partial of module-level functions (not a closure) keeps the processor picklable.
    processor._process_images = functools.partial(_process_images_via_numpy, processor)
    return processor


def _process_images_via_numpy(processor, images, **kwargs):
    image_processor = processor.image_processor
    # Only for the duration of the call: at rest the image processor's __dict__ (which it serializes) is untouched.
    image_processor.patchify_image = functools.partial(_patchify_via_numpy, image_processor)
    try:
        return type(processor)._process_images(processor, images, **kwargs)
    finally:
        del image_processor.patchify_image


def _patchify_via_numpy(image_processor, image, patch_size=None):
    import numpy as np
    import torch

    patchify = type(image_processor).patchify_image
    if not torch.is_tensor(image):
        return patchify(image_processor, image, patch_size=patch_size)
    # [B, C, H, W] or [C, H, W] -> numpy [B, n, C*ph*pw] (or [n, C*ph*pw] when B == 1)
    patches = patchify(image_processor, image.detach().cpu().numpy(), patch_size=patch_size)
    patches = torch.from_numpy(np.ascontiguousarray(patches)).to(device=image.device, dtype=image.dtype)
    return patches if patches.dim() == 3 else patches.unsqueeze(0)  # [B, n_patches, C*ph*pw]


def _patchify_accepts_tensors(image_processor) -> bool:
    import torch

    size = image_processor.patch_size
    height, width = (size["height"], size["width"]) if isinstance(size, dict) else (size.height, size.width)
    try:
        image_processor.patchify_image(torch.zeros(1, 3, height, width))
    except (TypeError, AttributeError):
        return False
    return True


def patch_kosmos2_generation(model: Any) -> Any:
    """Give padded rows the right positions when a Kosmos-2 model generates a batch; returns `model`.

    Bug (transformers 5.24): Kosmos-2's text decoder uses absolute sinusoidal positions, computed from the ids
    (padding skipped, fairseq-style) in the prompt but as `padding_idx + 1 + cache_length` for each new token, and
    `Kosmos2TextForCausalLM.prepare_inputs_for_generation` throws away any `position_ids`. `cache_length` counts
    the padding, so in a padded batch every generated token of a shorter row sits as many positions too far as the
    row has pads: batched greedy output differs from the same prompt generated alone. Training and the prompt pass
    are not affected.

    Fix: after the model prepares its inputs, position_ids come from the attention mask ([B, T_total]: pads at
    `padding_idx`, whose embedding is zero; tokens at padding_idx + 1, + 2, ...), cut to the tokens of this step.
    No longer needed when a padded batch generates the same tokens as its rows one at a time (the tiny-model test
    in tests/integration/test_tiny_encoders.py checks that; drop the patch and watch it).
    """
    text_model = getattr(model, "text_model", model)
    if not hasattr(text_model, "prepare_inputs_for_generation"):
        return model
    current = text_model.__dict__.get("prepare_inputs_for_generation")
    if isinstance(current, functools.partial) and current.func is _kosmos2_inputs_with_positions:
        return model  # already patched
    # An instance attribute (not saved with the weights); a partial keeps the model picklable and deep-copyable.
    text_model.prepare_inputs_for_generation = functools.partial(_kosmos2_inputs_with_positions, text_model)
    return model


def _kosmos2_inputs_with_positions(text_model, input_ids, *args, attention_mask=None, **kwargs):
    inputs = type(text_model).prepare_inputs_for_generation(text_model, input_ids, *args,
                                                            attention_mask=attention_mask, **kwargs)
    step_ids = inputs.get("input_ids")
    if attention_mask is None or attention_mask.dim() != 2 or step_ids is None:
        return inputs
    padding_idx = text_model.config.pad_token_id
    mask = attention_mask.long()
    positions = mask.cumsum(-1) * mask + padding_idx  # [B, T_total], the prompt pass's own numbering
    inputs["position_ids"] = positions[:, -step_ids.shape[1]:]  # [B, tokens fed this step]
    return inputs
