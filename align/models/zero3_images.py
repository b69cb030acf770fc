"""Batches without images under ZeRO-3: every rank must run the same modules in the same order.

ZeRO-3 keeps a shard of every parameter on each rank and gathers a module's weights (a collective over all ranks)
when the module runs, and reduce-scatters its gradients in backward. A rank whose micro-batch has no image skips
the vision tower and projector while another rank runs them: the ranks then call different collectives, which on
gloo fails with "Received data size doesn't match expected size" and on NCCL hangs until the timeout. So, on a rank
whose forward has no image, the model encodes a blank image where it would encode real ones (after the token
embeddings and before the decoder, as LLaVA's and Qwen2-VL's forwards do) and adds 0 x its features to the
decoder's input embeddings: the same modules run, in the same order, forward and backward on every rank, and the
result is unchanged (the projector's gradient from it is exactly 0).
"""

from __future__ import annotations

import contextvars

import torch

from align.errors import ConfigError
from align.models.families import get_family

# Set by the multimodal model's pre-hook for a forward without images; read (and cleared) by the decoder's.
_NEEDS_BLANK: contextvars.ContextVar = contextvars.ContextVar("align_needs_blank_image", default=False)
IMAGE_INPUTS = ("pixel_values", "pixel_values_videos")


def zero3_partitioned_run() -> bool:
    """Whether parameters are partitioned over several ranks (ZeRO-3 under a launcher)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    from align.distributed import rank_and_world

    return bool(is_deepspeed_zero3_enabled()) and rank_and_world()[1] > 1


def encode_images_on_every_rank(model, processor, family: str) -> bool:
    """Install the blank-image encoding on `model` (an unwrapped transformers model, before PEFT or DeepSpeed wrap
    it); False when the family is not covered (`Family.blank_image_features`)."""
    if not get_family(family).blank_image_features:
        return False
    inner = getattr(model, "model", model)  # LlavaModel, Qwen2VLModel: embeddings, get_image_features, decoder
    if getattr(inner, "_align_blank_image", False):
        return True
    blank = _blank_image_inputs(processor)
    language_model = inner.language_model

    def arm(module, args, kwargs):
        tokens = kwargs.get("input_ids") if kwargs.get("input_ids") is not None else kwargs.get("inputs_embeds")
        no_images = all(kwargs.get(key) is None for key in IMAGE_INPUTS)
        # Decoding steps (one new token, the cache holding the rest) never encode images on any rank.
        _NEEDS_BLANK.set(no_images and tokens is not None and tokens.shape[1] > 1)

    def add_blank_features(module, args, kwargs):
        """Before the decoder runs (registered before DeepSpeed's hooks, so before it records and gathers the
        decoder): encode the blank image and add 0 x its features to the decoder's input embeddings. A rank with
        images ran the vision tower and projector between the embeddings and the decoder; so does this one, forward
        (DeepSpeed checks that every rank ran the same modules in the same order) and backward, where the
        projector's gradient comes before the embeddings' on both."""
        if not _NEEDS_BLANK.get():
            return None
        _NEEDS_BLANK.set(False)
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            return None
        dtype = next(p.dtype for p in inner.parameters() if p.dtype.is_floating_point)
        inputs = {k: v.to(embeds.device, dtype=dtype if v.dtype.is_floating_point else v.dtype)
                  for k, v in blank.items()}
        embeds = embeds + 0.0 * _total(inner.get_image_features(**inputs)).to(embeds.dtype)
        return args, {**kwargs, "inputs_embeds": embeds}

    inner.register_forward_pre_hook(arm, with_kwargs=True)
    language_model.register_forward_pre_hook(add_blank_features, with_kwargs=True)
    inner._align_blank_image = True
    return True


def refuse_uncovered_image_mix(data, family: str) -> None:
    """Under partitioned ZeRO-3, a ConfigError when the family encodes no blank image
    (`Family.blank_image_features`) and `data` (checked records: `.records`, `.origins`) mixes rows with and
    without images: a rank could meet a micro-batch without one while another encodes images, which gloo turns
    into an error deep in DeepSpeed and NCCL into a hang until its timeout."""
    if not zero3_partitioned_run() or get_family(family).blank_image_features:
        return
    without = [i for i, record in enumerate(data.records) if not record.get("images")]
    if without and len(without) < len(data.records):
        path, row = data.origins[without[0]]
        raise ConfigError(
            f"{path}, row {row}: no image, beside rows with images ({len(without)} of {len(data.records)} have "
            f"none); under ZeRO-3 on several ranks the {family} family cannot train both (a rank without an image "
            f"would skip the vision tower's collectives while another runs them, and hang): use ZeRO-2, or train the "
            f"rows without images in a run of their own")


def _blank_image_inputs(processor) -> dict:
    """The image processor's tensors for one mid-grey image (pixel_values, and image_sizes / image_grid_thw where
    the family has them)."""
    from PIL import Image

    image_processor = getattr(processor, "image_processor", processor)
    out = image_processor(images=[Image.new("RGB", (64, 64), (128, 128, 128))], return_tensors="pt")
    return {k: v for k, v in out.items() if isinstance(v, torch.Tensor)}


def _total(features) -> torch.Tensor:
    """Sum of every floating tensor in what get_image_features returned (a tensor, a tuple/list, a ModelOutput)."""
    if isinstance(features, torch.Tensor):
        return features.float().sum()
    values = features.values() if hasattr(features, "values") else features
    tensors = [_total(v) for v in values if isinstance(v, torch.Tensor | list | tuple) or hasattr(v, "values")]
    tensors = [t for t in tensors if t is not None]
    return torch.stack(tensors).sum() if tensors else None
