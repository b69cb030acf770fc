"""Activation memory: what one training step keeps for backward, estimated from the config's sizes.

Per transformer layer and per token, the elements kept for backward with fused attention (sdpa / flash: the
a x s x s score matrix is never stored) and no dropout (every model the planner ships has dropout 0 in training):

    attention   h (norm output, the q/k/v projections' input) + h + 2 h_kv (q, k, v) + h (o_proj's input)
    norms       2 h (the two norms' inputs)
    MLP         h (its input) + 4 I (gated: gate and up outputs, the activation's output, the product: SwiGLU)
                              or 2 I (plain: fc1's output, the activation's output)

With h_kv = h, a plain MLP of I = 4h and 16-bit elements that is 32 h bytes, Korthikanti et al.'s 34 h
("Reducing Activation Recomputation in Large Transformer Models", 2022, table 2) without its two 1-byte dropout
masks and its 5 a s / h attention-score term (both absent with fused attention and dropout 0).

Per sequence, a stack of L such layers over s tokens keeps L x s x elements x bytes; with gradient checkpointing
(one checkpoint per layer) it keeps each layer's input, L x s x h x bytes, plus one layer's full activations
while that layer is recomputed in backward (the largest among the model's stacks).

Which stacks keep activations: the language model's, whenever anything trains (the loss is at its top, so every
gradient passes through it); the vision tower's only from its lowest trained layer up (a frozen tower below a
trained projector runs without keeping anything). Connectors (a projector, a 32-query Q-Former, a 64-latent
resampler) keep little next to these and are not counted. IDEFICS' gated cross-attention blocks count as
decoder layers.

The output head: families whose log-probs come from full logits (`Family.fused_lm_head` false: BLIP-2,
InstructBLIP, Chameleon, Kosmos-2) keep s x V logits in 16-bit plus their float32 log-softmax; the others go
through TRL's fused head, which projects tiles of tokens and keeps no [s, V] tensor.

This is an estimate: allocator fragmentation, temporary buffers, communication buckets and the CUDA context are
not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

# Dynamic-resolution vision towers (Qwen2-VL) have no fixed image size: the planner assumes a 448 x 448 image.
DYNAMIC_IMAGE_SIDE = 448
# Activations whose MLP is gated (SwiGLU: gate, up and down projections); the others are plain two-layer MLPs.
GATED_ACTIVATIONS = ("silu", "swish")


@dataclass(frozen=True)
class LayerShape:
    hidden: int
    intermediate: int
    kv_hidden: int
    gated: bool

    @property
    def elements_per_token(self) -> int:
        """Elements one layer keeps for backward per token (module docstring)."""
        attention = self.hidden + (self.hidden + 2 * self.kv_hidden) + self.hidden
        norms = 2 * self.hidden
        mlp = self.hidden + (4 if self.gated else 2) * self.intermediate
        return attention + norms + mlp


@dataclass(frozen=True)
class Stack:
    """`layers` transformer layers of one shape over `tokens` tokens of one sequence, keeping activations."""

    name: str
    layers: int
    tokens: int
    shape: LayerShape

    def full(self) -> int:
        """Elements kept per sequence without checkpointing."""
        return self.layers * self.tokens * self.shape.elements_per_token

    def inputs(self) -> int:
        """Elements kept per sequence with one checkpoint per layer: each layer's input."""
        return self.layers * self.tokens * self.shape.hidden

    def one_layer(self) -> int:
        """Elements one layer keeps per sequence while it is recomputed in backward."""
        return self.tokens * self.shape.elements_per_token if self.layers else 0


@dataclass(frozen=True)
class Pass:
    """One forward whose activations backward needs: `rows` sequences per sample (DPO: chosen and rejected)
    through `stacks`, and `logits` elements per sequence (s x V) when the head materialises full logits."""

    name: str
    rows: int
    stacks: tuple[Stack, ...]
    logits: int = 0


def per_sample_bytes(passes: list[Pass], element: int, checkpointing: bool) -> dict[str, int]:
    """Activation bytes per sample (one micro-batch item), by part: {"language_model", "vision", "logits",
    "recompute", "total"}; everything scales linearly with the micro-batch."""
    out = {"language_model": 0, "vision": 0, "logits": 0, "recompute": 0}
    for p in passes:
        for stack in p.stacks:
            kept = stack.inputs() if checkpointing else stack.full()
            out["vision" if stack.name == "vision" else "language_model"] += p.rows * kept * element
        # Logits in the model's precision plus the float32 log-softmax that backward reads.
        out["logits"] += p.rows * p.logits * (element + 4)
    if checkpointing:  # the layer being recomputed, one pass's rows at a time
        out["recompute"] = max((p.rows * s.one_layer() * element for p in passes for s in p.stacks), default=0)
    out["total"] = sum(out.values())
    return out


def kv_cache_bytes(layers: int, kv_hidden: int, tokens: int, element: int) -> int:
    """Generation's key/value cache for one sequence of `tokens` tokens: 2 (k, v) x L x h_kv x s x bytes."""
    return 2 * layers * kv_hidden * tokens * element


# ------------------------------------------------------------------------------------------- reading configs


def _first(config, names: tuple[str, ...], default=None):
    for name in names:
        value = getattr(config, name, None)
        if value is not None:
            return value
    return default


def layer_shape(config, vision: bool = False) -> LayerShape:
    """The layer sizes of a text or vision config, under the names the families use (Kosmos-2: embed_dim,
    ffn_dim; OPT: ffn_dim; Qwen2-VL's vision: embed_dim and mlp_ratio, its hidden_size being the merger's
    output)."""
    width_names = ("embed_dim", "hidden_size") if vision else ("hidden_size", "embed_dim", "d_model")
    hidden = int(_first(config, width_names))
    heads = int(_first(config, ("num_attention_heads", "attention_heads", "num_heads"), 1))
    head_dim = int(getattr(config, "head_dim", None) or hidden // heads)
    kv_heads = int(_first(config, ("num_key_value_heads",), heads))
    intermediate = _first(config, ("intermediate_size", "ffn_dim"))
    if intermediate is None:
        intermediate = int(_first(config, ("mlp_ratio",), 4) * hidden)
    act = str(_first(config, ("hidden_act", "activation_function"), "gelu"))
    return LayerShape(hidden, int(intermediate), kv_heads * head_dim, act in GATED_ACTIVATIONS)


def num_layers(config) -> int:
    return int(_first(config, ("num_hidden_layers", "layers", "depth", "num_layers")))


def text_stack(config, tokens: int) -> Stack:
    """The language model's layers; IDEFICS adds a gated cross-attention block every cross_layer_interval."""
    text = config.get_text_config()
    layers = num_layers(text)
    interval = getattr(config, "cross_layer_interval", None)
    if interval:
        layers += layers // int(interval)
    return Stack("language_model", layers, tokens, layer_shape(text))


def vision_tokens(config) -> int:
    """Patches the vision tower sees per sample: one image, and LLaVA-NeXT's base view plus its largest tiling
    (the pinpoint grid with the most tiles)."""
    vision = getattr(config, "vision_config", None)
    if vision is None:
        return 0
    patch = int(_first(vision, ("patch_size", "spatial_patch_size"), 14))
    side = int(getattr(vision, "image_size", None) or DYNAMIC_IMAGE_SIDE)
    views = 1
    pinpoints = getattr(config, "image_grid_pinpoints", None)
    if pinpoints:
        views += max((h // side) * (w // side) for h, w in pinpoints)
    return views * (side // patch) ** 2


def vision_stack(config, layers_kept: int) -> Stack | None:
    vision = getattr(config, "vision_config", None)
    if vision is None or layers_kept <= 0:
        return None
    return Stack("vision", layers_kept, vision_tokens(config), layer_shape(vision, vision=True))


def vocab_size(config) -> int:
    text = config.get_text_config()
    return int(text.vocab_size) + int(getattr(config, "additional_vocab_size", 0) or 0)
