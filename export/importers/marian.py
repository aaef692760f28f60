"""OPUS-MT (Marian) checkpoints in Hugging Face's layout → our model packages.

    DIR/  config.json                         MarianConfig
          model.safetensors | pytorch_model.bin
          source.spm, target.spm, vocab.json  MarianTokenizer's files
          tokenizer_config.json               optional: languages, special tokens, separate_vocabs

The weights are read straight from the file (no transformers needed here) into the graph builders' plain
form (export/encoder_graph.py, export/decoder_graph.py): post-norm layers, Marian's activation, the embedding
multiplied by √d_model when `scale_embedding`, Marian's sinusoidal position table (or the table stored in
the checkpoint, which is what transformers loads), the tied or separate output projection with
`final_logits_bias` as its bias. Generation never predicts the padding token (transformers 4.x set its
logit to −inf before the log-softmax, newer versions ban it with `bad_words_ids`): its bias is −10⁴, whose
exp is 0 in float32, so the log-softmax over the other tokens is exactly theirs. Decoding starts from
`decoder_start_token_id` (the padding token in Marian), which the package records as its `bos`.

Whatever a checkpoint asks for that these graphs do not compute is refused by `UnsupportedCheckpoint`,
naming the config option or weight: pre-norm layers (normalize_before), an embedding layer norm
(normalize_embedding, layernorm_embedding), final layer norms (add_final_layer_norm), add_bias_logits,
activations other than relu/gelu/swish, positions that are neither stored nor sinusoidal
(static_position_embeddings false), different encoder and decoder vocabularies or head counts, separate
source/target vocabularies (separate_vocabs, target_vocab.json), multilingual-target models (>>xx<< tokens),
and any weight a standard MarianMTModel does not have.
"""

from __future__ import annotations

import json
import logging
import re
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.package import (
    FORMAT_VERSION, GraphSpec, Graphs, Limits, ModelDims, PackageManifest, SourceCheckpoint, SpecialIds, Vocabulary,
    sha256_of, write_manifest,
)
from export.decoder_graph import (
    DecoderLayerWeights, DecoderWeights, build_decoder_step, decoder_input_names, decoder_output_names,
)
from export.encoder_graph import EncoderLayerWeights, EncoderWeights, build_encoder, encoder_output_names
from export.graph_builder import Linear, Norm, save, versions

log = logging.getLogger(__name__)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
TOKENIZER_FILES = ("source.spm", "target.spm", "vocab.json")
GRAPH_FILES = ("encoder.onnx", "decoder.onnx")
ACTIVATIONS = {"relu": "relu", "gelu": "gelu", "swish": "swish", "silu": "swish"}  # transformers' name → ours
PAD_LOGIT_BIAS = -1e4  # never predicted: exp(−10⁴) is 0 in float32, as −inf would be
LANGUAGE = re.compile(r"^[a-z]{2,3}$")


class UnsupportedCheckpoint(ValueError):
    """The checkpoint uses something our graphs do not compute; the message names it."""


@dataclass
class MarianCheckpoint:
    directory: Path
    config: dict
    weights: dict[str, np.ndarray]  # without the "model." prefix
    weights_file: str
    vocab: dict[str, int]
    tokenizer_config: dict = field(default_factory=dict)

    @property
    def d_model(self) -> int:
        return int(self.config["d_model"])

    @property
    def n_heads(self) -> int:
        return int(self.config["encoder_attention_heads"])

    @property
    def vocab_size(self) -> int:
        return int(self.config["vocab_size"])

    def token(self, name: str, default: str) -> str:
        """A special token's piece as tokenizer_config.json names it (a string or an AddedToken dict)."""
        value = self.tokenizer_config.get(name, default)
        return value.get("content", default) if isinstance(value, dict) else str(value)

    @property
    def special_pieces(self) -> dict[str, str]:
        return {"eos": self.token("eos_token", "</s>"), "unk": self.token("unk_token", "<unk>"),
                "pad": self.token("pad_token", "<pad>")}

    @property
    def special_ids(self) -> SpecialIds:
        c = self.config
        return SpecialIds(pad=int(c["pad_token_id"]), unk=self.vocab[self.special_pieces["unk"]],
                          bos=int(c.get("decoder_start_token_id", c["pad_token_id"])), eos=int(c["eos_token_id"]))

    @property
    def skipped_pieces(self) -> list[str]:
        """What MarianTokenizer.decode(skip_special_tokens=True) leaves out: its special tokens."""
        extra = [self.token_content(t) for t in self.tokenizer_config.get("additional_special_tokens") or []]
        return list(dict.fromkeys([*self.special_pieces.values(), *[t for t in extra if t in self.vocab]]))

    @staticmethod
    def token_content(token) -> str:
        return token.get("content", "") if isinstance(token, dict) else str(token)

    def weight(self, name: str) -> np.ndarray:
        if name not in self.weights:
            raise UnsupportedCheckpoint(f"{self.directory / self.weights_file}: no weight {name!r}; not a MarianMTModel checkpoint")
        return self.weights[name]


# --- reading and refusing ------------------------------------------------------------------------
def read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as error:
        raise UnsupportedCheckpoint(f"{path}: cannot read: {error}") from error


def read_weights(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of the file as float32 numpy, without a leading "model." (MarianMTModel's base model)."""
    import torch

    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        tensors = load_file(str(path))
    else:
        tensors = torch.load(str(path), map_location="cpu", weights_only=True)
        tensors = tensors.get("state_dict", tensors) if isinstance(tensors, dict) else tensors
    return {name.removeprefix("model."): tensor.detach().to(torch.float32).numpy().copy()
            for name, tensor in tensors.items()}


def check_config(config: dict, where: Path) -> None:
    """Refuse, naming the option, anything in config.json that the graphs do not compute."""
    def refuse(option: str, why: str) -> None:
        raise UnsupportedCheckpoint(f"{where}: config option {option}={config.get(option)!r} is not supported: {why}")

    if config.get("model_type") != "marian":
        refuse("model_type", "only Marian (OPUS-MT) checkpoints are imported")
    if config.get("is_encoder_decoder") is False:
        refuse("is_encoder_decoder", "an encoder-decoder translation model is needed")
    if str(config.get("activation_function", "gelu")) not in ACTIVATIONS:
        refuse("activation_function", f"the graphs compute {', '.join(ACTIVATIONS)}")
    if config.get("normalize_before", False):
        refuse("normalize_before", "pre-norm layers; Marian's (and transformers' MarianMTModel's) are post-norm")
    if config.get("normalize_embedding", False):
        refuse("normalize_embedding", "a layer norm on the embedding (layernorm_embedding) is not computed")
    if config.get("add_final_layer_norm", False):
        refuse("add_final_layer_norm", "standard Marian has no final encoder/decoder layer norm")
    if config.get("add_bias_logits", False):
        refuse("add_bias_logits", "a learned logit bias apart from final_logits_bias is not computed")
    if config.get("encoder_attention_heads") != config.get("decoder_attention_heads"):
        refuse("decoder_attention_heads", f"it must equal encoder_attention_heads ({config.get('encoder_attention_heads')})")
    if int(config["d_model"]) % int(config["encoder_attention_heads"]):
        refuse("d_model", "it must be a multiple of the attention heads")
    if not config.get("share_encoder_decoder_embeddings", True) and \
            int(config.get("decoder_vocab_size") or config["vocab_size"]) != int(config["vocab_size"]):
        refuse("share_encoder_decoder_embeddings",
               f"separate decoder vocabulary of {config.get('decoder_vocab_size')} tokens against {config['vocab_size']}; "
               "packages have one vocabulary")
    if isinstance(config.get("eos_token_id"), list):
        refuse("eos_token_id", "one end-of-sentence token is needed")
    if config.get("scale_embedding") not in (None, True, False):
        refuse("scale_embedding", "must be true or false")


def read_checkpoint(directory: Path | str) -> MarianCheckpoint:
    directory = Path(directory)
    if not (directory / "config.json").is_file():
        raise UnsupportedCheckpoint(f"{directory}: no config.json; not a Hugging Face model directory")
    config = read_json(directory / "config.json")
    check_config(config, directory / "config.json")
    weights_file = next((name for name in WEIGHT_FILES if (directory / name).is_file()), None)
    if weights_file is None:
        raise UnsupportedCheckpoint(f"{directory}: no {' or '.join(WEIGHT_FILES)} (sharded checkpoints are not read)")
    missing = [name for name in TOKENIZER_FILES if not (directory / name).is_file()]
    if missing:
        raise UnsupportedCheckpoint(f"{directory}: {', '.join(missing)} missing: copy them from the OPUS-MT model too")
    tokenizer_config = read_json(directory / "tokenizer_config.json") if (directory / "tokenizer_config.json").is_file() else {}
    if tokenizer_config.get("separate_vocabs") or (directory / "target_vocab.json").is_file():
        raise UnsupportedCheckpoint(f"{directory}: tokenizer option separate_vocabs (target_vocab.json) is not supported: "
                                    "packages have one vocabulary for source and target")
    vocab = read_json(directory / "vocab.json")
    codes = sorted(piece for piece in vocab if piece.startswith(">>") and piece.endswith("<<"))
    if codes:
        raise UnsupportedCheckpoint(f"{directory}: vocab.json has target-language tokens ({', '.join(codes[:4])}…): "
                                    "multilingual-target models (which need >>xx<< before each text) are not supported")
    checkpoint = MarianCheckpoint(directory, config, read_weights(directory / weights_file), weights_file, vocab,
                                  tokenizer_config)
    check_tokens(checkpoint)
    return checkpoint


def check_tokens(checkpoint: MarianCheckpoint) -> None:
    """vocab.json's special pieces must carry config.json's ids."""
    c, vocab, pieces = checkpoint.config, checkpoint.vocab, checkpoint.special_pieces
    for role, option in (("eos", "eos_token_id"), ("pad", "pad_token_id")):
        if vocab.get(pieces[role]) != c.get(option):
            raise UnsupportedCheckpoint(f"{checkpoint.directory}: vocab.json gives {pieces[role]!r} the id "
                                        f"{vocab.get(pieces[role])}, config option {option} says {c.get(option)}")
    if pieces["unk"] not in vocab:
        raise UnsupportedCheckpoint(f"{checkpoint.directory}: vocab.json has no {pieces['unk']!r}")
    ids = checkpoint.special_ids
    if len({ids.pad, ids.unk, ids.eos}) != 3 or ids.bos in (ids.unk, ids.eos):
        raise UnsupportedCheckpoint(f"{checkpoint.directory}: config option decoder_start_token_id={ids.bos} or the special "
                                    f"ids {ids} collide")
    if max(vocab.values()) >= checkpoint.vocab_size or len(set(vocab.values())) != len(vocab):
        raise UnsupportedCheckpoint(f"{checkpoint.directory}: vocab.json's ids are not distinct ids below vocab_size "
                                    f"{checkpoint.vocab_size}")


# --- weights → the graph builders' form ----------------------------------------------------------
def sinusoidal_positions(n_positions: int, dim: int) -> np.ndarray:
    """transformers' MarianSinusoidalPositionalEmbedding: sin(pos / 10000^(2i/dim)) in the first half of the
    dimensions, cos of the same angles in the second half (not interleaved), computed in float64."""
    j = np.arange(dim)
    angles = np.arange(n_positions)[:, None] / np.power(10000, 2 * (j // 2) / dim)[None, :]
    half = dim // 2 + dim % 2
    table = np.empty((n_positions, dim), np.float32)
    table[:, :half] = np.sin(angles[:, 0::2])
    table[:, half:] = np.cos(angles[:, 1::2])
    return table


def linear(c: MarianCheckpoint, name: str) -> Linear:
    return Linear(c.weight(f"{name}.weight").T.copy(), c.weight(f"{name}.bias"))


def fused(c: MarianCheckpoint, *names: str) -> Linear:
    parts = [linear(c, name) for name in names]
    return Linear(np.concatenate([p.weight for p in parts], axis=1), np.concatenate([p.bias for p in parts]))


def norm(c: MarianCheckpoint, name: str) -> Norm:
    return Norm(c.weight(f"{name}.weight"), c.weight(f"{name}.bias"))


def positions(c: MarianCheckpoint, side: str) -> np.ndarray:
    """The table transformers uses: the checkpoint's when it has one (older exports store it), else the sinusoids."""
    stored = c.weights.get(f"{side}.embed_positions.weight")
    if stored is not None:
        if stored.shape[1] != c.d_model:
            raise UnsupportedCheckpoint(f"{c.directory}: {side}.embed_positions.weight has shape {stored.shape}")
        return stored
    if c.config.get("static_position_embeddings") is False:
        raise UnsupportedCheckpoint(f"{c.directory}: config option static_position_embeddings=False (learned positions) "
                                    "is not supported without a stored position table")
    return sinusoidal_positions(int(c.config["max_position_embeddings"]), c.d_model)


def embeddings(c: MarianCheckpoint) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """→ encoder embedding, decoder embedding, output projection [V, D] (as stored, not scaled)."""
    shared = c.config.get("share_encoder_decoder_embeddings", True)
    if shared:
        encoder = c.weights.get("shared.weight", c.weights.get("encoder.embed_tokens.weight"))
        if encoder is None:
            raise UnsupportedCheckpoint(f"{c.directory}: no shared.weight (the shared token embedding)")
        decoder = encoder
    else:
        encoder, decoder = c.weight("encoder.embed_tokens.weight"), c.weight("decoder.embed_tokens.weight")
    output = decoder if c.config.get("tie_word_embeddings", True) else c.weight("lm_head.weight")
    for what, table in (("token embedding", encoder), ("decoder embedding", decoder), ("output projection", output)):
        if table.shape != (c.vocab_size, c.d_model):
            raise UnsupportedCheckpoint(f"{c.directory}: {what} has shape {table.shape}, config says "
                                        f"({c.vocab_size}, {c.d_model})")
    return encoder, decoder, output


def used_weights(c: MarianCheckpoint) -> set[str]:
    names = {"shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight", "lm_head.weight",
             "final_logits_bias", "encoder.embed_positions.weight", "decoder.embed_positions.weight"}
    for side, count in (("encoder", c.config["encoder_layers"]), ("decoder", c.config["decoder_layers"])):
        modules = ["self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.out_proj", "fc1", "fc2",
                   "self_attn_layer_norm", "final_layer_norm"]
        if side == "decoder":
            modules += ["encoder_attn.q_proj", "encoder_attn.k_proj", "encoder_attn.v_proj", "encoder_attn.out_proj",
                        "encoder_attn_layer_norm"]
        names |= {f"{side}.layers.{i}.{m}.{p}" for i in range(int(count)) for m in modules for p in ("weight", "bias")}
    return names


def check_weights(c: MarianCheckpoint) -> None:
    """A weight that a standard MarianMTModel does not have is something our graphs would silently skip."""
    unknown = sorted(set(c.weights) - used_weights(c))
    if unknown:
        hint = ""
        if any("layernorm_embedding" in name for name in unknown):
            hint = " (config option normalize_embedding: an embedding layer norm)"
        elif any(name.endswith("layer_norm.weight") and ".layers." not in name for name in unknown):
            hint = " (config option add_final_layer_norm: final layer norms)"
        raise UnsupportedCheckpoint(f"{c.directory}: weights a standard MarianMTModel does not have{hint}: "
                                    f"{', '.join(unknown[:6])}{'…' if len(unknown) > 6 else ''}")


def embed_scale(c: MarianCheckpoint) -> float:
    return float(np.sqrt(c.d_model)) if c.config.get("scale_embedding") else 1.0


def encoder_weights(c: MarianCheckpoint) -> EncoderWeights:
    layers = [EncoderLayerWeights(
        norm(c, f"encoder.layers.{i}.self_attn_layer_norm"),
        fused(c, *(f"encoder.layers.{i}.self_attn.{p}" for p in ("q_proj", "k_proj", "v_proj"))),
        linear(c, f"encoder.layers.{i}.self_attn.out_proj"), norm(c, f"encoder.layers.{i}.final_layer_norm"),
        linear(c, f"encoder.layers.{i}.fc1"), linear(c, f"encoder.layers.{i}.fc2"))
        for i in range(int(c.config["encoder_layers"]))]
    cross = fused(c, *(f"decoder.layers.{i}.encoder_attn.{p}" for i in range(int(c.config["decoder_layers"]))
                       for p in ("k_proj", "v_proj")))
    encoder, _, _ = embeddings(c)
    return EncoderWeights(embedding=encoder * np.float32(embed_scale(c)), positions=positions(c, "encoder"),
                          layers=layers, final_norm=None, cross=cross, n_heads=c.n_heads,
                          pad_id=int(c.config["pad_token_id"]), activation=ACTIVATIONS[c.config["activation_function"]],
                          pre_norm=False, layer_norm_eps=1e-5)


def decoder_weights(c: MarianCheckpoint) -> DecoderWeights:
    layers = []
    for i in range(int(c.config["decoder_layers"])):
        p = f"decoder.layers.{i}"
        layers.append(DecoderLayerWeights(
            norm(c, f"{p}.self_attn_layer_norm"), fused(c, *(f"{p}.self_attn.{q}" for q in ("q_proj", "k_proj", "v_proj"))),
            linear(c, f"{p}.self_attn.out_proj"), norm(c, f"{p}.encoder_attn_layer_norm"),
            linear(c, f"{p}.encoder_attn.q_proj"), linear(c, f"{p}.encoder_attn.out_proj"),
            norm(c, f"{p}.final_layer_norm"), linear(c, f"{p}.fc1"), linear(c, f"{p}.fc2")))
    _, decoder, output = embeddings(c)
    bias = c.weights.get("final_logits_bias", np.zeros((1, c.vocab_size), np.float32)).reshape(-1).astype(np.float32)
    if bias.shape != (c.vocab_size,):
        raise UnsupportedCheckpoint(f"{c.directory}: final_logits_bias has {bias.size} entries, vocab_size is {c.vocab_size}")
    bias = bias.copy()
    bias[int(c.config["pad_token_id"])] = PAD_LOGIT_BIAS
    return DecoderWeights(embedding=decoder * np.float32(embed_scale(c)), positions=positions(c, "decoder"),
                          layers=layers, final_norm=None, output=Linear(output.T.copy(), bias), n_heads=c.n_heads,
                          eos_id=int(c.config["eos_token_id"]), activation=ACTIVATIONS[c.config["activation_function"]],
                          pre_norm=False, layer_norm_eps=1e-5)


# --- languages ---------------------------------------------------------------------------------------
def languages(c: MarianCheckpoint, source: str | None, target: str | None) -> tuple[str, str]:
    """--src-lang/--tgt-lang, else tokenizer_config.json's source_lang/target_lang, else the directory name
    (opus-mt-en-de)."""
    found = re.search(r"opus-mt-(?:.+-)?([a-z]{2,3})-([a-z]{2,3})$", c.directory.resolve().name)  # opus-mt-tc-big-en-de
    guesses = [(c.tokenizer_config.get("source_lang"), c.tokenizer_config.get("target_lang")),
               found.groups() if found else (None, None)]
    chosen = []
    for i, (given, side, option) in enumerate(((source, "source", "--src-lang"), (target, "target", "--tgt-lang"))):
        if given is None:
            given = next((str(g[i]) for g in guesses if g[i] and LANGUAGE.match(str(g[i]))), None)
        if given is None or not LANGUAGE.match(given):
            raise UnsupportedCheckpoint(f"{c.directory}: cannot tell the {side} language ({given!r}); pass {option} "
                                        "with an ISO 639 code")
        chosen.append(given)
    return chosen[0], chosen[1]


# --- the package -------------------------------------------------------------------------------------
def write_graphs(c: MarianCheckpoint, directory: Path, precision: str, fp32_dir: Path | None = None,
                 per_channel: bool = False, reduce_range: bool = False) -> None:
    """encoder.onnx and decoder.onnx in `precision`: fp32 and fp16 from the weights, int8 quantized from the
    fp32 graphs in `fp32_dir`."""
    from export.quantize import check_fp16, quantize_int8

    if precision in ("fp32", "fp16"):
        half = precision == "fp16"
        save(build_encoder(encoder_weights(c), half), directory / "encoder.onnx")
        save(build_decoder_step(decoder_weights(c), half), directory / "decoder.onnx")
        if half:
            for name in GRAPH_FILES:
                check_fp16(directory / name)
    elif precision == "int8":
        assert fp32_dir is not None
        for name in GRAPH_FILES:
            quantize_int8(fp32_dir / name, directory / name, per_channel=per_channel, reduce_range=reduce_range)
    else:
        raise ValueError(f"unknown precision {precision!r}")


def manifest_for(c: MarianCheckpoint, source: str, target: str, precision: str, max_source_tokens: int,
                 export_options: dict) -> PackageManifest:
    n_layers, dims = int(c.config["decoder_layers"]), c.d_model
    max_positions = min(len(positions(c, "encoder")), len(positions(c, "decoder")))
    pieces = c.special_pieces
    return PackageManifest(
        format_version=FORMAT_VERSION, name=f"{source}-{target}", source_language=source, target_language=target,
        precision=precision, special_ids=c.special_ids,
        model=ModelDims(vocab_size=c.vocab_size, d_model=dims, n_heads=c.n_heads, head_dim=dims // c.n_heads,
                        n_encoder_layers=int(c.config["encoder_layers"]), n_decoder_layers=n_layers),
        limits=Limits(max_source_tokens=min(max_source_tokens, max_positions), max_positions=max_positions),
        graphs=Graphs(
            encoder=GraphSpec(file="encoder.onnx", inputs=["input_ids"], outputs=encoder_output_names(n_layers)),
            decoder=GraphSpec(file="decoder.onnx", inputs=decoder_input_names(n_layers),
                              outputs=decoder_output_names(n_layers))),
        tokenizer="source.spm",  # what token counters (loadtest) read; the ids come through the vocabulary
        vocabulary=Vocabulary(eos_piece=pieces["eos"], unk_piece=pieces["unk"], pad_piece=pieces["pad"],
                              special_pieces=c.skipped_pieces),
        files={name: "" for name in (*GRAPH_FILES, *TOKENIZER_FILES)},  # filled in by write_manifest
        source_checkpoint=SourceCheckpoint(path=str(c.directory), model_safetensors_sha256=sha256_of(c.directory / c.weights_file),
                                           weights_file=c.weights_file),
        versions=versions(),
        export_options={"importer": "marian", **export_options},
    )


def build_marian_package(directory: Path | str, out: Path | str, precision: str, source: str | None = None,
                         target: str | None = None, max_source_tokens: int = 256, per_channel: bool = False,
                         reduce_range: bool = False, fp32_dir: Path | None = None
                         ) -> tuple[MarianCheckpoint, PackageManifest]:
    """Marian checkpoint directory → package directory `out` (without its parity report). int8 is quantized
    from fp32 graphs: those in `fp32_dir` (an fp32 package of the same checkpoint) or built on the way."""
    out = Path(out)
    c = read_checkpoint(directory)
    check_weights(c)
    source, target = languages(c, source, target)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        if precision == "int8" and fp32_dir is None:
            fp32_dir = Path(scratch)
            write_graphs(c, fp32_dir, "fp32")
        write_graphs(c, out, precision, fp32_dir, per_channel, reduce_range)
    for name in TOKENIZER_FILES:
        shutil.copyfile(c.directory / name, out / name)
    options = {"per_channel": per_channel, "reduce_range": reduce_range} if precision == "int8" else {}
    manifest = manifest_for(c, source, target, precision, max_source_tokens, options)
    write_manifest(out, manifest)
    log.info("package %s (%s) imported from %s into %s", manifest.name, precision, c.directory, out)
    return c, manifest
