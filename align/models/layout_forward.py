"""Model calls in a shared layout (`align.models.layout`), and one vision encoding per image per step.

`add_layout_forward(model, family)` patches `model.forward` (after the log-prob head is added) to take a
`layout=` keyword. With a packed layout the call runs on the packed rows [R, W] instead of the unshared batch
[N, T]: per-token inputs are gathered into their slots, the images are those of the layout's image rows, the
position ids are each token's unshared positions (1-D, or the family's M-RoPE positions), the attention mask is
the layout's 4-D mask, and next-token labels come from each slot's successor. What comes back is in the unshared
layout: `log_probs` and the other per-token fields [N, T-1] (fused head), or `logits` [N, T, V].

`share_vision_encoder(model, family)` lets a layout's `vision_memo` serve the family's vision encoder: an input
seen before in the same step (the reference scoring the images the policy just encoded, mdpo's corrupted image
under both models) returns the output already computed. It is right only while nothing in the encoder trains and
the models' encoders hold the same weights, which the trainer checks before switching it on.
"""

from __future__ import annotations

import contextlib
import contextvars
import types
from typing import Any

import torch

from align.models.families import get_family
from align.models.layout import SharedLayout, attention_allowed

# Image inputs, one entry (or a run of patch rows) per image: reordered by `select_images`, never packed per token.
IMAGE_KEYS = frozenset({"pixel_values", "image_sizes", "image_grid_thw"})
# Per-token fields of a fused-head output, each [rows, positions].
PER_TOKEN_FIELDS = ("log_probs", "entropy", "log_sum_sq_probs", "mean_logits", "is_top1")
# Call flags that never change a vision encoder's output: the decoder's cache switch reaches the encoder through
# **kwargs from some callers only (a model's forward passes its own through, a blank image under ZeRO-3 does not, a
# reference model's config may set it), and a memo keyed on it would miss where the same image was encoded.
_IGNORED_KWARGS = frozenset({"use_cache"})
# The vision memo of the model call in progress (None: encode as usual).
_ACTIVE_MEMO: contextvars.ContextVar[list | None] = contextvars.ContextVar("align_vision_memo", default=None)


def add_layout_forward(model, family: str) -> None:
    """Patch `model.forward` to accept `layout=` (a `SharedLayout`, or None for the usual call)."""
    inner = model.forward
    fam = get_family(family)

    def forward(self, *args, layout: SharedLayout | None = None, **kwargs):
        if layout is None:
            return inner(*args, **kwargs)
        with _memo(layout):
            if not layout.packed:
                return inner(*args, **kwargs)
            if args:
                raise TypeError("a call in a shared layout takes keyword arguments only")
            return _packed_call(self, inner, fam, layout, kwargs)

    model.forward = types.MethodType(forward, model)


@contextlib.contextmanager
def _memo(layout: SharedLayout):
    token = _ACTIVE_MEMO.set(layout.vision_memo if layout.share_vision else None)
    try:
        yield
    finally:
        _ACTIVE_MEMO.reset(token)


def vision_encoder(model, family: str):
    """The family's vision encoder module of an unwrapped model, or None when the family names none."""
    path = get_family(family).vision_encoder
    return None if path is None else model.get_submodule(path)


def share_vision_encoder(model, family: str) -> bool:
    """Let the active layout's memo serve the family's vision encoder of `model`; False when it has none.

    A module is memoised whole (its output for the same inputs). A layer list (`Family.vision_layers_only`) is
    memoised as a chain: the first layer looks its input up and, on a hit, returns the last layer's stored output,
    which the other layers pass through; so only the chain's input and output are kept, and modules around it (a
    trainable merger after Qwen2-VL's blocks) run as usual."""
    module = vision_encoder(model, family)
    if module is None:
        return False
    if getattr(module, "_align_memo", False):
        return True
    if get_family(family).vision_layers_only:
        _memoise_chain(list(module))
    else:
        _memoise(module)
    module._align_memo = True
    return True


def _memoise(module) -> None:
    original = module.forward

    def forward(*args, **kwargs):
        memo = _ACTIVE_MEMO.get()
        if memo is None:
            return original(*args, **kwargs)
        key = (args, _relevant(kwargs))
        for seen, output in memo:
            if _same(seen, key):
                return _shallow_copy(output)
        output = original(*args, **kwargs)
        memo.append((key, output))
        return _shallow_copy(output)

    module.forward = forward


def _memoise_chain(layers: list) -> None:
    """Layers called in turn, each on the previous one's output (one hidden-states tensor in, one out)."""
    state: dict[str, Any] = {"skipping": False, "key": None}  # key: the chain input being computed
    last = len(layers) - 1

    def wrap(i: int, layer) -> None:
        original = layer.forward

        def forward(hidden_states, *args, **kwargs):
            memo = _ACTIVE_MEMO.get()
            if memo is None:
                return original(hidden_states, *args, **kwargs)
            if i == 0:
                key = ("layers", hidden_states, args, _relevant(kwargs))
                hit = next((output for seen, output in memo if _same(seen, key)), None)
                if hit is not None:
                    state["skipping"] = i != last
                    return hit
                state["key"] = key
            elif state["skipping"]:
                state["skipping"] = i != last
                return hidden_states  # the chain's stored output, passed through
            output = original(hidden_states, *args, **kwargs)
            if i == last:
                memo.append((state["key"], output))
            return output

        layer.forward = forward

    for i, layer in enumerate(layers):
        wrap(i, layer)


def _shallow_copy(output):
    """A new output object holding the same tensors: callers replace fields of what the encoder returns (Qwen2-VL
    splits `pooler_output` in place), which must not reach the memo."""
    if isinstance(output, dict):  # transformers' ModelOutput
        return type(output)(**output)
    return output


def _relevant(kwargs: dict) -> dict:
    return {k: v for k, v in kwargs.items() if k not in _IGNORED_KWARGS}


def _same(a: Any, b: Any) -> bool:
    """Equal call arguments: tensors by shape, dtype and value; containers element by element."""
    if a is b:
        return True
    if isinstance(a, torch.Tensor) or isinstance(b, torch.Tensor):
        return (isinstance(a, torch.Tensor) and isinstance(b, torch.Tensor) and a.shape == b.shape
                and a.dtype == b.dtype and a.device == b.device and bool(torch.equal(a, b)))
    if isinstance(a, (tuple, list)) and isinstance(b, (tuple, list)):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    return a == b


def _packed_call(model, inner, fam, layout: SharedLayout, kwargs: dict):
    input_ids = kwargs.pop("input_ids")  # [N, T]
    layout.to(input_ids.device)
    attention_mask = kwargs.pop("attention_mask")  # [N, T]
    labels = kwargs.pop("labels", None)
    kwargs.pop("position_ids", None)
    n, width = input_ids.shape
    sources = layout.sources  # [R, W]
    pad = sources < 0
    index = sources.clamp(min=0)

    def pack(values: torch.Tensor, fill) -> torch.Tensor:  # [N, T] -> [R, W]
        return values.reshape(-1)[index].masked_fill(pad, fill)

    pad_id = model.config.get_text_config().pad_token_id
    call = {"input_ids": pack(input_ids, 0 if pad_id is None else pad_id)}
    if fam.mrope:
        positions, _ = model.model.get_rope_index(  # [3, N, T]
            input_ids, image_grid_thw=kwargs.get("image_grid_thw"), video_grid_thw=kwargs.get("video_grid_thw"),
            attention_mask=attention_mask, mm_token_type_ids=kwargs.get("mm_token_type_ids"))
        call["position_ids"] = positions.reshape(positions.shape[0], -1)[:, index].masked_fill(pad, 0)  # [3, R, W]
    else:
        call["position_ids"] = (index % width).masked_fill(pad, 0)  # [R, W]: each token's unshared position
    for key, value in kwargs.items():
        if key in IMAGE_KEYS:
            continue  # select_images below
        if isinstance(value, torch.Tensor) and value.shape == input_ids.shape:
            call[key] = pack(value, 0)  # other per-token inputs (mm_token_type_ids, ...)
        elif key not in call:
            call[key] = value
    call.update(select_images(kwargs, layout.image_rows, layout.images_per_row))
    call["attention_mask"] = _mask(model, layout)
    fused = kwargs.get("fused_lm_head", False)
    if labels is not None:
        if not fused:
            raise ValueError("labels in a shared layout need fused_lm_head=True (the per-token log-prob head)")
        successors = layout.successors
        call["shift_labels"] = labels.reshape(-1)[successors.clamp(min=0)].masked_fill(successors < 0, -100)
    out = inner(**call)  # the caller's `_memo` is active
    locations = layout.locations  # [N, T]
    if not fused:
        logits = out.logits  # [R, W, V]
        out["logits"] = logits.reshape(-1, logits.shape[-1])[locations]  # [N, T, V]
        return out
    # Fused head: per-slot fields [R, W], slot predicting its successor -> unshared [N, T-1].
    mask = labels[:, 1:] != -100  # [N, T-1]
    there = locations[:, :-1]
    values = {}
    for name in PER_TOKEN_FIELDS:
        value = getattr(out, name, None)
        if value is not None:
            gathered = value.reshape(-1)[there]
            values[name] = gathered & mask if gathered.dtype == torch.bool else gathered * mask
    loss = -values["log_probs"].sum() / mask.sum().clamp(min=1)
    return type(out)(loss=loss, label_mask=mask, aux_loss=getattr(out, "aux_loss", None), **values)


def _mask(model, layout: SharedLayout):
    """The layout's 4-D attention mask [R, 1, W, W] in the form the model's attention takes: dense (sdpa: bool,
    eager: additive) or FlexAttention's block mask."""
    implementation = model.config.get_text_config()._attn_implementation
    if implementation == "flex_attention":
        return _block_mask(layout)
    allowed = attention_allowed(layout.sequence_ids, layout.branch_ids)[:, None]  # [R, 1, W, W]
    if implementation == "sdpa":
        return allowed
    if implementation == "eager":
        dtype = model.get_input_embeddings().weight.dtype
        return torch.zeros(allowed.shape, dtype=dtype, device=allowed.device).masked_fill(
            ~allowed, torch.finfo(dtype).min)
    raise ValueError(f"shared layouts need sdpa, eager or flex_attention attention, not {implementation}; set "
                     "prefix_sharing=false and padding_free=false")


def _block_mask(layout: SharedLayout):
    """FlexAttention's block-sparse form of `attention_allowed`: blocks no query of which sees any key are
    skipped, so packed rows cost what their sequences do (torch runs its backward on CUDA only)."""
    from torch.nn.attention.flex_attention import create_block_mask

    seq, branch = layout.sequence_ids, layout.branch_ids  # [R, W]

    def mask_mod(b, h, q, kv):
        visible = (seq[b, q] == seq[b, kv]) & (seq[b, kv] >= 0) & (kv <= q) & \
            ((branch[b, kv] == branch[b, q]) | (branch[b, kv] == 0))
        return visible | ((seq[b, q] < 0) & (q == kv))

    rows, width = seq.shape
    return create_block_mask(mask_mod, B=rows, H=None, Q_LEN=width, KV_LEN=width, device=seq.device)


def select_images(inputs: dict, image_rows: list[int], images_per_row: list[int]) -> dict:
    """The image tensors of `inputs` for the images of `image_rows` (unshared row indices, in order).

    Still images only: `pixel_values` and `image_sizes` hold one entry per image; with `image_grid_thw`
    (Qwen2-VL), `pixel_values` holds the t*h*w patch rows of each image in turn."""
    if "pixel_values" not in inputs or inputs["pixel_values"] is None:
        return {}
    starts = [sum(images_per_row[:r]) for r in range(len(images_per_row))]
    order = [starts[r] + i for r in image_rows for i in range(images_per_row[r])]
    pixels = inputs["pixel_values"]
    out: dict[str, torch.Tensor] = {}
    grid = inputs.get("image_grid_thw")
    if grid is not None:
        counts = grid.prod(dim=-1).tolist()  # patch rows per image
        first = [sum(counts[:i]) for i in range(len(counts))]
        rows = [first[i] + k for i in order for k in range(counts[i])]
        out["pixel_values"] = pixels[torch.tensor(rows, dtype=torch.long, device=pixels.device)]
        out["image_grid_thw"] = grid[order]
    else:
        if len(pixels) != sum(images_per_row):
            raise ValueError(f"pixel_values holds {len(pixels)} entries for {sum(images_per_row)} images")
        out["pixel_values"] = pixels[order]
        if inputs.get("image_sizes") is not None:
            out["image_sizes"] = inputs["image_sizes"][order]
    return out
