"""A trained model directory: config.json + model.safetensors + spm.model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file

from model.tokenizer import Tokenizer
from model.transformer import Transformer, TransformerConfig

# The encoder and decoder hold the shared embedding too; it is stored once as `embedding.weight`.
TIED_KEYS = ("encoder.embedding.weight", "decoder.embedding.weight")


def model_weights(model: Transformer) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().contiguous() for k, v in model.state_dict().items() if k not in TIED_KEYS}


def load_config(directory: Path) -> dict:
    return json.loads((Path(directory) / "config.json").read_text())


def load_model(directory: Path | str) -> tuple[Transformer, Tokenizer, dict]:
    """→ the model in eval mode with its best weights, its tokenizer, and the whole config.json."""
    directory = Path(directory)
    config = load_config(directory)
    model = Transformer(TransformerConfig.from_dict(config["model"]))
    missing, unexpected = model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
    if set(missing) - set(TIED_KEYS) or unexpected:
        raise ValueError(f"{directory}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    return model.eval(), Tokenizer(directory / "spm.model"), config
