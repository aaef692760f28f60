"""A trained model directory: config.json + model.safetensors + spm.model."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from model.tokenizer import Tokenizer
from model.transformer import Transformer, TransformerConfig

# The encoder and decoder hold the shared embedding too; it is stored once as `embedding.weight`.
TIED_KEYS = ("encoder.embedding.weight", "decoder.embedding.weight")


def model_weights(model: Transformer) -> dict[str, torch.Tensor]:
    return {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items() if k not in TIED_KEYS}


def load_config(directory: Path) -> dict:
    return json.loads((Path(directory) / "config.json").read_text())


def data_dir(config: dict) -> Path:
    """Where a checkpoint's held-out splits are: the data directory it trained on, or, where that is not on this
    machine (a shipped checkpoint in a fresh clone: runs train on files rebuilt outside the repository), the
    repository's copy of the same valid and test files (committed; the training files are not): data/<src>-<tgt>,
    or data/<tgt>-<src>, whose columns.json says which column is which (de→en trains on data/en-de)."""
    trained_on = config.get("train", {}).get("data")
    if trained_on and Path(trained_on).is_dir():
        return Path(trained_on)
    pairs = (f"{config['src_lang']}-{config['tgt_lang']}", f"{config['tgt_lang']}-{config['src_lang']}")
    return next((Path("data") / pair for pair in pairs if (Path("data") / pair).is_dir()), Path("data") / pairs[0])


INIT_SHA256 = "init_from_sha256"  # config.json: sha256 of the weights a run started from (--init-from)
DECODING = "decoding"  # config.json's section of search settings chosen for the weights (model.choose_decoding)


def chosen_length_penalty(config: dict) -> float:
    """The beam search's length penalty chosen for these weights on validation, else the search's default."""
    return float(config.get(DECODING, {}).get("length_penalty", 1.0))


def load_model(directory: Path | str) -> tuple[Transformer, Tokenizer, dict]:
    """→ the model in eval mode with its best weights, its tokenizer, and the whole config.json."""
    directory = Path(directory)
    config = load_config(directory)
    model = Transformer(TransformerConfig.from_dict(config["model"]))
    missing, unexpected = model.load_state_dict(load_file(str(directory / "model.safetensors")), strict=False)
    if set(missing) - set(TIED_KEYS) or unexpected:
        raise ValueError(f"{directory}: weights do not match the config (missing {missing}, unexpected {unexpected})")
    return model.eval(), Tokenizer(directory / "spm.model"), config


# Resumable training state, as files that git can hold (each under 50 MiB for a model of our size):
# resume/weights.safetensors (fp32; the same bytes as model.safetensors while the last step is also
# the best, so git stores them once), resume/adam_m.safetensors and adam_v.safetensors (AdamW
# moments, fp32, so a resumed run continues exactly), resume/state.json (counters, RNG state).
def save_training_state(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer, counters: dict) -> None:
    resume = Path(directory) / "resume"
    resume.mkdir(parents=True, exist_ok=True)
    names = [name for name, _ in model.named_parameters()]  # the optimizer's parameter order
    moments = optimizer.state_dict()["state"]
    files = {
        "weights.safetensors": model_weights(model),
        "adam_m.safetensors": {names[i]: s["exp_avg"].cpu().contiguous() for i, s in moments.items()},
        "adam_v.safetensors": {names[i]: s["exp_avg_sq"].cpu().contiguous() for i, s in moments.items()},
    }
    for filename, tensors in files.items():
        save_file(tensors, str(resume / (filename + ".tmp")), metadata={"format": "pt"})
    adam_steps = {names[i]: float(s["step"]) for i, s in moments.items()}
    state = {**counters, "adam_steps": adam_steps, "torch_rng": torch.get_rng_state().tolist(),
             "cuda_rng": [s.tolist() for s in torch.cuda.get_rng_state_all()] if torch.cuda.is_available() else None}
    (resume / "state.json.tmp").write_text(json.dumps(state))
    # Rename last, state.json after the tensors: an interruption leaves the previous state whole.
    for filename in [*files, "state.json"]:
        (resume / (filename + ".tmp")).replace(resume / filename)


def load_training_state(directory: Path, model: Transformer, optimizer: torch.optim.Optimizer) -> dict | None:
    """Restore model, optimizer and RNG from `directory/resume`; → the saved counters, or None."""
    resume = Path(directory) / "resume"
    if not (resume / "state.json").exists():
        return None
    state = json.loads((resume / "state.json").read_text())
    model.load_state_dict(load_file(str(resume / "weights.safetensors")), strict=False)
    names = [name for name, _ in model.named_parameters()]
    adam_m, adam_v = load_file(str(resume / "adam_m.safetensors")), load_file(str(resume / "adam_v.safetensors"))
    optimizer_state = optimizer.state_dict()
    optimizer_state["state"] = {
        i: {"step": torch.tensor(state["adam_steps"][name]), "exp_avg": adam_m[name], "exp_avg_sq": adam_v[name]}
        for i, name in enumerate(names)
        if name in adam_m
    }
    optimizer.load_state_dict(optimizer_state)
    torch.set_rng_state(torch.tensor(state.pop("torch_rng"), dtype=torch.uint8))
    cuda_rng = state.pop("cuda_rng", None)  # dropout masks on a GPU come from its own generators
    if cuda_rng and torch.cuda.is_available() and len(cuda_rng) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all([torch.tensor(s, dtype=torch.uint8) for s in cuda_rng])
    state.pop("adam_steps")
    return state


# The best weights carry the run's counters in their safetensors header, so a run can continue from
# them alone: git holds the best weights of every session, while the optimiser state (twice the
# weights again) is too big to commit each time (see `train.warm_start`).
COUNTER_KEYS = ("step", "epoch", "batch_in_epoch", "best_bleu", "train_seconds", "tokens_seen")


def save_weights(path: Path, tensors: dict[str, torch.Tensor], counters: dict) -> None:
    """Write `tensors` to `path` atomically, with the training counters as header metadata."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    metadata = {"format": "pt", **{k: json.dumps(counters[k]) for k in COUNTER_KEYS if k in counters}}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.replace(path)


def weights_counters(path: Path) -> dict | None:
    """→ the training counters stored with saved weights, or None (no file, or saved without them)."""
    if not Path(path).exists():
        return None
    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
    if "step" not in metadata:
        return None
    return {k: json.loads(metadata[k]) for k in COUNTER_KEYS if k in metadata}


def save_snapshot(directory: Path, model: Transformer, counters: dict, keep: int) -> None:
    """Weights at a validation step, under snapshots/ (not committed), for checkpoint averaging; the
    newest `keep` are kept."""
    snapshots = Path(directory) / "snapshots"
    save_weights(snapshots / f"step-{counters['step']:07d}.safetensors", model_weights(model), counters)
    for old in sorted(snapshots.glob("step-*.safetensors"))[:-keep] if keep > 0 else []:
        old.unlink()
