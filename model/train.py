"""Train the Transformer on a data directory written by `model.data`.

Label-smoothed cross-entropy, AdamW with linear warm-up then inverse-square-root decay (it needs
no planned end, so a run can be extended session after session; --cooldown-steps adds a linear decay
to zero before a planned --max-steps), batches built from a token
budget out of sentences of similar length, bf16 autocast on CPUs that support it, gradient
clipping, validation loss and BLEU at intervals, and checkpoints that resume exactly where an
interrupted run stopped (model, optimiser, step, epoch, position in the epoch, random state).

Data: every train*.tsv of --data (train.tsv and the general-language train.<domain>.tsv files), each
repeated by its --train-weights entry (e.g. "dialogue=3,manuals=0.5"; default 1); train.backtranslated.tsv
(model/backtranslate.py, machine-made English) trains en→de only. Validation: every
valid*.tsv (valid.tsv is the "original" domain), greedy BLEU/chrF on the first --eval-sentences pairs of
each; checkpoints are chosen on the mean BLEU over the domains (valid splits only, never test).
--init-from DIR starts a new run from a trained checkpoint (its weights, model config and spm.model; fresh
AdamW, step 0, warm-up), e.g. to continue the shipped model on new data in a directory outside the repository;
with --grow (e.g. "d_ff=2048") the new run's model is larger and starts computing what the checkpoint computes.

Outputs under --out (e.g. checkpoints/en-de):
  resume/                  resumable training state (see model/checkpoint.py)
  model.safetensors        best weights by validation BLEU (what export reads), with the run's
                           counters in its header: a run continues from it when resume/ is older
  snapshots/               the weights at the last few validations (for `model.average`; not committed)
  config.json, spm.model   the model config and its tokenizer
  train_log.jsonl          one JSON line per validation: the learning curve (mean and per-domain scores)
"""

from __future__ import annotations

import argparse
import json
import math
import random
import signal
import time
from dataclasses import MISSING, asdict, dataclass, fields, replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from tqdm import tqdm

from model.evaluate import corpus_scores, domain_files
from model.corpus.sources import BACKTRANSLATED
from model.data import source_column
from model.checkpoint import (DECODING, INIT_SHA256, TIED_KEYS, load_training_state, model_weights, save_snapshot,
                              save_training_state, save_weights, weights_counters)
from model.grow import grown_weights, parse_growth
from model.search import translate_ids
from model.tokenizer import BOS_ID, EOS_ID, PAD_ID, Tokenizer, read_tsv_pairs, train_tokenizer
from model.transformer import Transformer, TransformerConfig
from engine.package import sha256_of
from engine.search import SearchOptions


@dataclass
class TrainConfig:
    data: str
    out: str
    src_lang: str = "en"
    tgt_lang: str = "de"
    vocab_size: int = 8000
    d_model: int = 256
    n_heads: int = 4
    n_encoder_layers: int = 4
    n_decoder_layers: int = 3
    d_ff: int = 1024
    dropout: float = 0.1
    batch_tokens: int = 6000  # padded source + target tokens per batch
    lr: float = 1e-3
    warmup_steps: int = 800  # the shipped models' schedule (checkpoints/*/config.json)
    weight_decay: float = 0.01
    label_smoothing: float = 0.1
    clip_norm: float = 1.0
    max_len: int = 128  # longer training pairs are dropped (tokens per side)
    max_steps: int = 60_000
    max_minutes: float = 0.0  # stop (with a checkpoint) after this long; 0 = no limit
    cooldown_steps: int = 0  # the last N steps before max_steps decay the learning rate linearly to 0
    rewarm_steps: int = 200  # after a warm start from the best weights (fresh AdamW moments), ramp lr up again
    keep_snapshots: int = 5  # validation snapshots kept for checkpoint averaging (model/average.py)
    eval_every: int = 500
    checkpoint_every: int = 100  # resume state only (no validation): a killed session loses at most this many steps
    eval_sentences: int = 200  # validation sentences decoded for BLEU, per valid file (domain)
    init_from: str = ""  # start a new run from this checkpoint's weights, config and spm.model (fresh AdamW, step 0)
    grow: str = ""  # with --init-from: larger sizes, e.g. "d_ff=2048,n_decoder_layers=4" (model/grow.py)
    train_weights: str = ""  # per training file sampling weights, e.g. "dialogue=2,manuals=0.5" (train.<name>.tsv)
    seed: int = 1234
    bf16: str = "auto"  # "auto" (on for CUDA and CPUs with native bf16), "on" or "off"
    threads: int = 0  # torch intra-op threads; 0 = all cores
    device: str = "cpu"  # "cpu" or "cuda" (a lent GPU continues the same run from the same checkpoint)


def cpu_supports_bf16() -> bool:
    try:
        flags = Path("/proc/cpuinfo").read_text()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_autocast(config: TrainConfig, device: torch.device):
    """→ a factory of autocast contexts: bf16 on CUDA and CPUs with native bf16 (per --bf16), else a no-op."""
    enabled = config.bf16 == "on" or (config.bf16 == "auto" and (device.type == "cuda" or cpu_supports_bf16()))
    return lambda: torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled)


def new_optimizer(model: Transformer, config: TrainConfig) -> torch.optim.Optimizer:
    return torch.optim.AdamW(model.parameters(), lr=config.lr, betas=(0.9, 0.98), eps=1e-9, weight_decay=config.weight_decay)


def parse_weights(text: str) -> dict[str, float]:
    """"dialogue=2,manuals=0.5" → {"dialogue": 2.0, "manuals": 0.5}."""
    weights = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        name, _, value = item.partition("=")
        weights[name.strip()] = float(value)
    return weights


def load_training_files(data: Path, tokenizer: Tokenizer, src_col: int, max_len: int, weights: dict[str, float],
                        seed: int) -> tuple[list, dict[str, dict]]:
    """Every train*.tsv of `data`, each repeated by its weight (default 1): a weight of 2.5 takes the file twice
    and a fixed random half of it once more; 0 leaves it out. → (examples, {file name: counts})."""
    files = domain_files(data, "train")
    unknown = set(weights) - set(files)
    if unknown:
        raise ValueError(f"--train-weights names {sorted(unknown)}, but {data} has train files {sorted(files)}")
    # Back-translated pairs have a machine-made English side: a model that translates into English leaves them out.
    synthetic_target = src_col == 1 and BACKTRANSLATED in files
    if synthetic_target and weights.get(BACKTRANSLATED):
        raise ValueError(f"train.{BACKTRANSLATED}.tsv has machine-made English: it cannot train a model into English")
    examples, report = [], {}
    for name, path in files.items():
        weight = 0.0 if synthetic_target and name == BACKTRANSLATED else weights.get(name, 1.0)
        loaded = load_split(path, tokenizer, src_col, max_len) if weight > 0 else []
        whole, fraction = int(weight), weight - int(weight)
        taken = loaded * whole
        if fraction:
            rng = random.Random(f"{seed}:{name}")
            taken += [example for example in loaded if rng.random() < fraction]
        examples += taken
        report[name] = {"pairs": len(loaded), "weight": weight, "examples": len(taken)}
    return examples, report


def load_split(path: Path, tokenizer: Tokenizer, src_col: int, max_len: int) -> list[tuple[list[int], list[int], str]]:
    """→ (source ids + EOS, target ids, target text) for pairs whose sides fit in `max_len` tokens."""
    pairs = read_tsv_pairs(path)
    sources = tokenizer.encode([p[src_col] for p in pairs])
    targets = tokenizer.encode([p[1 - src_col] for p in pairs])
    return [
        (s + [EOS_ID], t, pair[1 - src_col])
        for s, t, pair in zip(sources, targets, pairs)
        if 0 < len(s) < max_len and 0 < len(t) < max_len
    ]


def token_budget_batches(examples: list, batch_tokens: int, rng: random.Random) -> list[list[int]]:
    """Group examples of similar length so that padded tokens per batch stay under the budget."""
    # Sorting on a noisy length keeps batches homogeneous but different from one epoch to the next.
    order = sorted(range(len(examples)), key=lambda i: len(examples[i][0]) + len(examples[i][1]) + rng.random() * 2)
    batches, current, longest_src, longest_tgt = [], [], 0, 0
    for i in order:
        src, tgt = examples[i][:2]
        s, t = max(longest_src, len(src)), max(longest_tgt, len(tgt) + 1)
        if current and (s + t) * (len(current) + 1) > batch_tokens:
            batches.append(current)
            current, s, t = [], len(src), len(tgt) + 1
        current.append(i)
        longest_src, longest_tgt = s, t
    if current:
        batches.append(current)
    rng.shuffle(batches)
    return batches


def collate(examples: list, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """→ src [B, S], decoder input [B, T] (BOS + target), labels [B, T] (target + EOS)."""
    batch = [examples[i][:2] for i in indices]
    src_len = max(len(s) for s, _ in batch)
    tgt_len = max(len(t) for _, t in batch) + 1
    src = torch.full((len(batch), src_len), PAD_ID, dtype=torch.long)
    tgt_in = torch.full((len(batch), tgt_len), PAD_ID, dtype=torch.long)
    labels = torch.full((len(batch), tgt_len), PAD_ID, dtype=torch.long)
    for row, (s, t) in enumerate(batch):
        src[row, : len(s)] = torch.tensor(s)
        tgt_in[row, : len(t) + 1] = torch.tensor([BOS_ID] + t)
        labels[row, : len(t) + 1] = torch.tensor(t + [EOS_ID])
    return src, tgt_in, labels


def learning_rate(step: int, config: TrainConfig, warm_start_step: int | None = None) -> float:
    step = max(step, 1)
    rate = config.lr * min(step / config.warmup_steps, math.sqrt(config.warmup_steps / step))
    if config.cooldown_steps:
        rate *= min(1.0, max(config.max_steps - step, 0) / config.cooldown_steps)
    if warm_start_step is not None:  # new AdamW moments: no full steps until they have settled
        rate *= min(1.0, (step - warm_start_step) / max(config.rewarm_steps, 1))
    return rate


def sequence_loss(model: Transformer, batch, label_smoothing: float) -> tuple[torch.Tensor, int]:
    src, tgt_in, labels = batch
    real = labels != PAD_ID  # [B, T]
    logits = model(src, tgt_in, positions=real)  # [N, V], real target positions only
    loss = F.cross_entropy(logits.float(), labels[real], label_smoothing=label_smoothing)
    return loss, int(real.sum())


@torch.no_grad()
def validate(model: Transformer, valid: dict[str, list], tokenizer: Tokenizer, config: TrainConfig, autocast) -> dict:
    """Loss over every valid file; greedy BLEU/chrF on the first `eval_sentences` pairs of each. "bleu" and "chrf"
    are the means over the files (domains): what checkpoint selection compares."""
    model.eval()
    device = next(model.parameters()).device
    rng = random.Random(0)
    total, tokens = 0.0, 0
    every = [example for examples in valid.values() for example in examples]
    for indices in token_budget_batches(every, config.batch_tokens, rng):
        with autocast():
            loss, n = sequence_loss(model, tuple(t.to(device) for t in collate(every, indices)), 0.0)
        total, tokens = total + loss.item() * n, tokens + n
    options = SearchOptions(bos_id=BOS_ID, eos_id=EOS_ID, max_length=config.max_len * 2)
    domains = {}
    for name, examples in valid.items():
        count = min(config.eval_sentences, len(examples))
        results = translate_ids(model, [example[0] for example in examples[:count]], options)
        hypotheses = tokenizer.decode([r.hypotheses[0].tokens for r in results])
        domains[name] = {"sentences": count, **corpus_scores(hypotheses, [example[2] for example in examples[:count]])}
    model.train()
    return {"valid_loss": total / tokens, "valid_ppl": math.exp(min(total / tokens, 20)),
            "bleu": sum(d["bleu"] for d in domains.values()) / len(domains),
            "chrf": sum(d["chrf"] for d in domains.values()) / len(domains), "domains": domains}


def warm_start(out: Path, model: Transformer, resumed: dict | None, best: dict | None) -> dict | None:
    """Continue from the best weights when they are newer than the resume state (or there is none):
    a fresh checkout has the committed best weights but maybe an older optimiser state, or none.
    `best`: the best weights' counters. → them, or None when the resume state is the newer one."""
    if best is None or (resumed is not None and resumed["step"] >= best["step"]):
        return None
    model.load_state_dict(load_file(str(out / "model.safetensors")), strict=False)
    return best


def init_from(config: TrainConfig, out: Path) -> dict | None:
    """--init-from: a new run (nothing in `out` yet) takes the checkpoint's spm.model and model config; → that
    config's model section, or None when there is no --init-from or `out` already holds a run to continue."""
    if not config.init_from or (out / "config.json").exists():
        return None
    source = Path(config.init_from)
    for name in ("spm.model", "spm.vocab"):
        if (source / name).exists():
            (out / name).write_bytes((source / name).read_bytes())
    return json.loads((source / "config.json").read_text())["model"]


def prepare_tokenizer(config: TrainConfig, out: Path) -> Tokenizer:
    spm_path = out / "spm.model"
    if not spm_path.exists():
        train_tokenizer(Path(config.data) / "train.tsv", out / "spm", config.vocab_size, seed=config.seed)
    return Tokenizer(spm_path)


def train(config: TrainConfig) -> None:
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    if config.threads:
        torch.set_num_threads(config.threads)
    random.seed(config.seed)
    np.random.seed(config.seed)
    torch.manual_seed(config.seed)

    if config.grow and not config.init_from:
        raise ValueError("--grow needs --init-from: it grows that checkpoint's model")
    initial_model = init_from(config, out)
    tokenizer = prepare_tokenizer(config, out)
    data = Path(config.data)
    src_col = source_column(data, config.src_lang, config.tgt_lang)
    train_set, train_files = load_training_files(data, tokenizer, src_col, config.max_len,
                                                 parse_weights(config.train_weights), config.seed)
    valid = {name: load_split(path, tokenizer, src_col, config.max_len)
             for name, path in domain_files(data, "valid").items()}

    model_config = TransformerConfig(
        vocab_size=tokenizer.vocab_size, d_model=config.d_model, n_heads=config.n_heads, d_ff=config.d_ff,
        n_encoder_layers=config.n_encoder_layers, n_decoder_layers=config.n_decoder_layers, dropout=config.dropout,
    )
    if (out / "config.json").exists():
        model_config = TransformerConfig.from_dict(json.loads((out / "config.json").read_text())["model"])
    elif initial_model is not None:
        # The checkpoint fixes the architecture; dropout is a training setting (TRAINING_SETTINGS), so the run's own
        # applies.
        model_config = replace(TransformerConfig.from_dict(initial_model), dropout=config.dropout)
        if config.grow:
            model_config = parse_growth(config.grow, model_config)
    device = torch.device(config.device)
    model = Transformer(model_config).to(device)
    optimizer = new_optimizer(model, config)
    state = {"step": 0, "epoch": 0, "batch_in_epoch": 0, "best_bleu": -1.0, "train_seconds": 0.0, "tokens_seen": 0,
             "warm_start_step": None}
    resumed = load_training_state(out, model, optimizer)
    best = weights_counters(out / "model.safetensors")
    warm = warm_start(out, model, resumed, best)
    if initial_model is not None and resumed is None and best is None:
        weights = load_file(str(Path(config.init_from) / "model.safetensors"))
        if config.grow:
            weights = grown_weights(weights, TransformerConfig.from_dict(initial_model), model_config, config.seed)
        missing, unexpected = model.load_state_dict(weights, strict=False)
        if set(missing) - set(TIED_KEYS) or unexpected:
            raise ValueError(f"{config.init_from}: weights do not match its config ({missing}, {unexpected})")
        origin = weights_counters(Path(config.init_from) / "model.safetensors") or {}
        print(f"initialised from {config.init_from} (its step {origin.get('step', '?')}"
              f"{', grown: ' + config.grow if config.grow else ''}); new run from step 0 with "
              f"fresh AdamW moments and {config.warmup_steps} warm-up steps")
    if warm is not None:
        state = {**state, **warm, "warm_start_step": warm["step"]}
        optimizer = new_optimizer(model, config)
        print(f"warm start from the best weights at step {state['step']} (resume state: "
              f"{'step ' + str(resumed['step']) if resumed else 'none'}); new AdamW moments, lr ramps up over {config.rewarm_steps} steps")
    elif resumed is not None:
        state = {k: resumed.get(k, state[k]) for k in state}
        print(f"resumed at step {state['step']} (epoch {state['epoch']}, best BLEU {state['best_bleu']:.2f})")
    # model.average may have kept an average that validated above anything the run itself saw.
    state["best_bleu"] = max(state["best_bleu"], (best or {}).get("best_bleu", -1.0))
    written = {"model": model_config.to_dict(), "train": asdict(config), "src_lang": config.src_lang,
               "tgt_lang": config.tgt_lang, "parameters": model.num_parameters(), "train_files": train_files,
               "valid_files": {name: len(examples) for name, examples in valid.items()}}
    earlier = json.loads((out / "config.json").read_text()) if (out / "config.json").is_file() else {}
    if resumed is not None or warm is not None:  # a run going on keeps what was recorded for it
        written |= {key: earlier[key] for key in (DECODING, INIT_SHA256) if key in earlier}
    if config.init_from and INIT_SHA256 not in written and initial_model is not None:
        # which weights the run started from (model.average --start-share mixes them back in: they must be these)
        written[INIT_SHA256] = sha256_of(Path(config.init_from) / "model.safetensors")
    (out / "config.json").write_text(json.dumps(written, indent=2))
    files = ", ".join(f"{name}: {r['pairs']} x {r['weight']:g}" for name, r in train_files.items())
    valid_counts = ", ".join(f"{name} {len(examples)}" for name, examples in valid.items())
    print(f"{model.num_parameters() / 1e6:.2f}M parameters, {len(train_set)} training examples ({files}), "
          f"validation pairs: {valid_counts}")

    autocast = bf16_autocast(config, device)
    stop = {"signal": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(signal=True))
    started, session_start_seconds = time.time(), state["train_seconds"]

    def lr_at(step: int) -> float:
        return learning_rate(step, config, state["warm_start_step"])

    def checkpoint_now() -> None:
        state["train_seconds"] = session_start_seconds + time.time() - started
        save_training_state(out, model, optimizer, state)

    model.train()
    progress = tqdm(total=config.max_steps, initial=state["step"], dynamic_ncols=True, mininterval=5)
    window_tokens, window_start = 0, time.time()
    while state["step"] < config.max_steps and not stop["signal"]:
        batches = token_budget_batches(train_set, config.batch_tokens, random.Random(config.seed + state["epoch"]))
        for indices in batches[state["batch_in_epoch"] :]:
            step = state["step"] + 1
            for group in optimizer.param_groups:
                group["lr"] = lr_at(step)
            batch = tuple(t.to(device, non_blocking=True) for t in collate(train_set, indices))
            with autocast():
                loss, n_tokens = sequence_loss(model, batch, config.label_smoothing)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), config.clip_norm)
            optimizer.step()
            state.update(step=step, batch_in_epoch=state["batch_in_epoch"] + 1, tokens_seen=state["tokens_seen"] + n_tokens)
            window_tokens += int(batch[0].ne(PAD_ID).sum()) + n_tokens
            progress.update(1)
            if step % 20 == 0:
                rate = window_tokens / max(time.time() - window_start, 1e-6)
                progress.set_postfix(loss=f"{loss.item():.3f}", tok_s=f"{rate:.0f}", lr=f"{lr_at(step):.1e}")
                window_tokens, window_start = 0, time.time()
            out_of_time = config.max_minutes and time.time() - started > config.max_minutes * 60
            if step % config.eval_every == 0 or out_of_time or stop["signal"] or step >= config.max_steps:
                metrics = validate(model, valid, tokenizer, config, autocast)
                checkpoint_now()
                metrics.update(step=step, epoch=state["epoch"], train_loss=loss.item(), lr=lr_at(step),
                               train_hours=state["train_seconds"] / 3600, tokens_seen=state["tokens_seen"])
                with open(out / "train_log.jsonl", "a") as log:
                    log.write(json.dumps(metrics) + "\n")
                shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in metrics.items() if k != "domains"}
                shown["domains"] = {n: f"BLEU {d['bleu']:.2f} chrF {d['chrf']:.2f}" for n, d in metrics["domains"].items()}
                tqdm.write(json.dumps(shown, ensure_ascii=False))
                save_snapshot(out, model, {**state, "best_bleu": metrics["bleu"]}, config.keep_snapshots)
                if metrics["bleu"] > state["best_bleu"]:
                    state["best_bleu"] = metrics["bleu"]
                    save_weights(out / "model.safetensors", model_weights(model), state)
                    checkpoint_now()
                if out_of_time:
                    stop["signal"] = True
            elif step % config.checkpoint_every == 0:
                checkpoint_now()
            if stop["signal"] or step >= config.max_steps:
                break
        else:
            state.update(epoch=state["epoch"] + 1, batch_in_epoch=0)
    checkpoint_now()
    progress.close()
    print(f"stopped at step {state['step']}; best validation BLEU {state['best_bleu']:.2f}; weights in {out / 'model.safetensors'}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    for field in fields(TrainConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.default is MISSING:
            parser.add_argument(flag, required=True)
        else:
            parser.add_argument(flag, type=type(field.default), default=field.default)
    train(TrainConfig(**vars(parser.parse_args(argv))))


if __name__ == "__main__":
    main()
