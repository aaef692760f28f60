"""Assemble a model package directory from a trained checkpoint (see engine/package.py for the format)."""

from __future__ import annotations

import logging
import shutil
import tempfile
from pathlib import Path

from engine.package import (
    FORMAT_VERSION, Decoding, GraphSpec, Graphs, Limits, ModelDims, PackageManifest, SourceCheckpoint, SpecialIds,
    read_manifest, sha256_of, write_manifest,
)
from export.graph_builder import versions
from export.onnx_export import (
    check_graphs, decoder_input_names, decoder_output_names, encoder_output_names, export_decoder,
    export_encoder, export_fp32,
)
from export.quantize import check_fp16, quantize_int8
from model.checkpoint import chosen_length_penalty, load_model
from model.transformer import Transformer

log = logging.getLogger(__name__)
GRAPH_FILES = ("encoder.onnx", "decoder.onnx")
CHECKPOINT_FILES = ("config.json", "model.safetensors", "spm.model")


def manifest_for(model: Transformer, config: dict, checkpoint: Path, weights_sha256: str, precision: str,
                 max_source_tokens: int, export_options: dict) -> PackageManifest:
    c = model.config
    n = c.n_decoder_layers
    return PackageManifest(
        format_version=FORMAT_VERSION,
        name=f"{config['src_lang']}-{config['tgt_lang']}",
        source_language=config["src_lang"],
        target_language=config["tgt_lang"],
        precision=precision,
        special_ids=SpecialIds(pad=c.pad_id, unk=c.unk_id, bos=c.bos_id, eos=c.eos_id),
        model=ModelDims(vocab_size=c.vocab_size, d_model=c.d_model, n_heads=c.n_heads, head_dim=c.d_model // c.n_heads,
                        n_encoder_layers=c.n_encoder_layers, n_decoder_layers=n),
        limits=Limits(max_source_tokens=min(max_source_tokens, c.max_positions), max_positions=c.max_positions),
        graphs=Graphs(
            encoder=GraphSpec(file="encoder.onnx", inputs=["input_ids"], outputs=encoder_output_names(n)),
            decoder=GraphSpec(file="decoder.onnx", inputs=decoder_input_names(n), outputs=decoder_output_names(n)),
        ),
        files={name: "" for name in (*GRAPH_FILES, "spm.model")},  # filled in by write_manifest
        source_checkpoint=SourceCheckpoint(path=str(checkpoint), model_safetensors_sha256=weights_sha256),
        versions=versions(),
        export_options=export_options,
        decoding=Decoding(length_penalty=chosen_length_penalty(config)),
    )


def export_graphs(model: Transformer, directory: Path) -> tuple[Path, Path, float]:
    """fp32 encoder.onnx and decoder.onnx in `directory`, verified at several shapes → paths, max abs diff."""
    encoder, decoder = export_fp32(model, directory)
    return encoder, decoder, check_graphs(model, encoder, decoder)


def write_variant(fp32_dir: Path, out: Path, precision: str, model: Transformer, per_channel: bool,
                  reduce_range: bool, row_scales: bool = False) -> None:
    """Write the package's graphs in `precision`: int8 quantized from the verified fp32 graphs in `fp32_dir`,
    fp16 built from the weights in fp16 (float32 kept around the attention ops)."""
    if precision == "fp16":
        export_encoder(model, out / "encoder.onnx", half=True)
        export_decoder(model, out / "decoder.onnx", half=True)
        for name in GRAPH_FILES:
            check_fp16(out / name)
        return
    for name in GRAPH_FILES:
        if precision == "fp32":
            shutil.copyfile(fp32_dir / name, out / name)
        elif precision == "int8":
            quantize_int8(fp32_dir / name, out / name, per_channel=per_channel, reduce_range=reduce_range,
                          row_scales=row_scales)
        else:
            raise ValueError(f"unknown precision {precision!r}")


def snapshot(checkpoint: Path, directory: Path) -> Path:
    """Copy the checkpoint's files: a training run may replace model.safetensors at any moment, and the
    recorded checksum must be that of the weights exported."""
    directory.mkdir(parents=True, exist_ok=True)
    for name in CHECKPOINT_FILES:
        shutil.copyfile(checkpoint / name, directory / name)
    return directory


def build_package(checkpoint: Path, out: Path, precision: str, max_source_tokens: int = 256,
                  per_channel: bool = False, reduce_range: bool = False, row_scales: bool = False,
                  fp32_dir: Path | None = None) -> tuple[Transformer, PackageManifest, dict]:
    """Checkpoint → package directory (without the parity report). `fp32_dir` reuses graphs already exported
    from this checkpoint by `export_graphs`. → the model exported, the manifest, and facts for the parity report."""
    checkpoint, out = Path(checkpoint), Path(out)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as scratch:
        frozen = snapshot(checkpoint, Path(scratch) / "checkpoint")
        model, _, config = load_model(frozen)
        facts = {}
        if fp32_dir is None:
            fp32_dir = Path(scratch)
            *_, facts["graphs_max_abs_diff"] = export_graphs(model, fp32_dir)
        write_variant(fp32_dir, out, precision, model, per_channel, reduce_range, row_scales)
        shutil.copyfile(frozen / "spm.model", out / "spm.model")
        options = ({"per_channel": per_channel, "reduce_range": reduce_range, "row_scales": row_scales}
                   if precision == "int8" else {})
        manifest = manifest_for(model, config, checkpoint, sha256_of(frozen / "model.safetensors"), precision,
                                max_source_tokens, options)
    write_manifest(out, manifest)
    log.info("package %s (%s) written to %s", manifest.name, precision, out)
    return model, manifest, facts


def record_parity(out: Path, report_file: str, report: dict) -> None:
    """Add the parity report to the package: its checksum and a summary. The service refuses a package
    whose recorded parity did not pass (or that has none)."""
    manifest = read_manifest(out)
    summary = {k: report[k] for k in ("passed", "provider", "greedy_agreement", "log_probs_max_abs_diff", "bleu_pytorch",
                                      "bleu_package")}
    files = {**manifest.files, report_file: ""}
    write_manifest(out, manifest.model_copy(update={"files": files, "parity": {"report": report_file, **summary}}))
