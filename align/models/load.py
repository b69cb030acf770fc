"""Load any supported VLM and its processor, from a local folder or a hub id, with the per-family fixes."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from align.errors import ModelError

_DTYPES = {"auto": "auto", "float32": "float32", "fp32": "float32", "bfloat16": "bfloat16", "bf16": "bfloat16",
           "float16": "float16", "fp16": "float16"}


def torch_dtype(dtype: str | Any):
    import torch

    if not isinstance(dtype, str):
        return dtype
    name = _DTYPES.get(dtype.lower())
    if name is None:
        raise ModelError(f"unknown dtype '{dtype}'; known: {', '.join(sorted(_DTYPES))}")
    return name if name == "auto" else getattr(torch, name)


def _check_local(path_or_id: str | Path) -> None:
    """A string that can only be a local path (absolute, ./, ../, or deeper than owner/name) must exist."""
    text = str(path_or_id)
    looks_local = isinstance(path_or_id, Path) or text.startswith(("/", "./", "../", "~")) or text.count("/") > 1
    if looks_local and not Path(text).expanduser().exists():
        raise ModelError(f"cannot load a model config from '{text}': no such folder")


def load_config(path_or_id: str | Path, trust_remote_code: bool = False):
    from transformers import AutoConfig

    _check_local(path_or_id)
    try:
        return AutoConfig.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load a model config from '{path_or_id}': {first}") from None


def load_processor(path_or_id: str | Path, family: str | None = None, trust_remote_code: bool = False):
    """AutoProcessor plus the fixes a family needs (chat template re-attached, processor bugs patched)."""
    from transformers import AutoProcessor

    from align.models.families import family_of, get_family

    if family is None:
        family = family_of(load_config(path_or_id, trust_remote_code))
    try:
        processor = AutoProcessor.from_pretrained(str(path_or_id), trust_remote_code=trust_remote_code)
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load the processor from '{path_or_id}': {first}") from None
    _reattach_chat_template(processor, path_or_id)
    spec = get_family(family)
    if spec.fix_processor is not None:
        spec.fix_processor(processor)
    return processor


def _reattach_chat_template(processor, path_or_id: str | Path) -> None:
    # BLIP-2, InstructBLIP, IDEFICS, Chameleon, Fuyu and Kosmos-2 processors swallow `chat_template` on reload
    # although save_pretrained wrote chat_template.jinja.
    if getattr(processor, "chat_template", None):
        return
    local = Path(str(path_or_id)) / "chat_template.jinja"
    if local.is_file():
        processor.chat_template = local.read_text(encoding="utf-8")
        tokenizer = getattr(processor, "tokenizer", None)
        if tokenizer is not None and not getattr(tokenizer, "chat_template", None):
            tokenizer.chat_template = processor.chat_template


def load_model_and_processor(
    path_or_id: str | Path,
    dtype: str | Any = "auto",
    attn_implementation: str | None = None,
    trust_remote_code: bool = False,
    **model_kwargs: Any,
):
    """(model, processor) for any family in `align.models.families.FAMILIES`.

    `dtype`: "auto" (as saved), "float32", "bfloat16", "float16" or a torch dtype. `attn_implementation`:
    "eager", "sdpa", "flash_attention_2" or None (transformers' default).
    """
    from align.models.families import family_of, get_family

    config = load_config(path_or_id, trust_remote_code)
    family = family_of(config)
    spec = get_family(family)
    kwargs = dict(model_kwargs)
    if attn_implementation is not None:
        kwargs["attn_implementation"] = attn_implementation
    try:
        model = spec.auto_class().from_pretrained(
            str(path_or_id), dtype=torch_dtype(dtype), trust_remote_code=trust_remote_code, **kwargs
        )
    except (OSError, ValueError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ModelError(f"cannot load model weights from '{path_or_id}': {first}") from None
    if spec.fix_model is not None:
        spec.fix_model(model)
    processor = load_processor(path_or_id, family, trust_remote_code)
    return model, processor


@contextmanager
def zero3_off() -> Iterator[None]:
    """Inside, models load whole. transformers partitions every model loaded while a ZeRO-3 config is active (a
    process-wide reference set when training arguments are built), so a merge on one rank would see empty shards:
    `The size of tensor a (0) must match the size of tensor b (64)`."""
    from transformers.integrations import deepspeed as hf_deepspeed

    active = hf_deepspeed._hf_deepspeed_config_weak_ref
    hf_deepspeed.unset_hf_deepspeed_config()
    try:
        yield
    finally:
        hf_deepspeed._hf_deepspeed_config_weak_ref = active
