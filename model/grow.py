"""Growing a trained model into a larger one that computes the same function, so that training continues
from what the small model knows with more capacity (`python -m model.train --init-from CKPT --grow
d_ff=2048,n_decoder_layers=4`).

The layers are pre-norm (x + f(LN(x))), so a residual branch whose last matrix is zero adds nothing:
- a wider feed-forward keeps the old units and adds new ones whose `down` columns are zero;
- a new layer (appended on top of the old ones) starts with zero output projections in its attention and
  zero `down` in its feed-forward: an identity until training moves those matrices.
Everything else new (the new units' `up` rows, the new layers' other matrices) keeps the random
initialisation of a fresh model, so gradients reach the zero matrices from the first step.
"""

from __future__ import annotations

from dataclasses import replace

import torch

from model.checkpoint import model_weights
from model.transformer import Transformer, TransformerConfig

GROWABLE = ("d_ff", "n_encoder_layers", "n_decoder_layers")
# The matrices whose output is added to the residual stream, per layer kind.
RESIDUAL_OUTPUTS = {
    "encoder": ("self_attn.out_proj", "ffn.down"),
    "decoder": ("self_attn.out_proj", "cross_attn.out_proj", "ffn.down"),
}


def parse_growth(text: str, source: TransformerConfig) -> TransformerConfig:
    """"d_ff=2048,n_decoder_layers=4" → the source config with those sizes, each at least the source's."""
    sizes = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        name = name.strip()
        if name not in GROWABLE:
            raise ValueError(f"--grow {item!r}: only {', '.join(GROWABLE)} can grow")
        sizes[name] = int(value)
        if sizes[name] < getattr(source, name):
            raise ValueError(f"--grow {item!r}: smaller than the checkpoint's {getattr(source, name)}")
    return replace(source, **sizes)


def grown_weights(weights: dict[str, torch.Tensor], source: TransformerConfig, target: TransformerConfig,
                  seed: int = 0) -> dict[str, torch.Tensor]:
    """The source model's weights in a `target`-sized model that computes the same function."""
    torch.manual_seed(seed)
    grown = model_weights(Transformer(target))  # without the tied copies of the embedding
    for name, tensor in weights.items():
        if name not in grown:
            raise ValueError(f"{name} has no place in the grown model")
        slot = grown[name][tuple(slice(0, size) for size in tensor.shape)]
        if slot.shape != tensor.shape:
            raise ValueError(f"{name}: {tuple(tensor.shape)} does not fit {tuple(grown[name].shape)}")
        slot.copy_(tensor)
    for stack, old_layers, new_layers in (("encoder", source.n_encoder_layers, target.n_encoder_layers),
                                          ("decoder", source.n_decoder_layers, target.n_decoder_layers)):
        for layer in range(new_layers):
            new_layer = layer >= old_layers
            for branch in RESIDUAL_OUTPUTS[stack]:
                prefix = f"{stack}.layers.{layer}.{branch}"
                if new_layer:
                    grown[f"{prefix}.weight"].zero_()
                    grown[f"{prefix}.bias"].zero_()
                elif branch == "ffn.down":
                    grown[f"{prefix}.weight"][:, source.d_ff:].zero_()  # the new units' contributions
    return grown
