"""A joint SentencePiece vocabulary for both languages, trained on the training split only.

Special ids are fixed (pad 0, unk 1, bos 2, eos 3) and written into the model config, the ONNX
package and the CTranslate2 vocabulary alike.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path

import sentencepiece as spm

PAD_ID, UNK_ID, BOS_ID, EOS_ID = 0, 1, 2, 3
SPECIAL_PIECES = ("<pad>", "<unk>", "<s>", "</s>")


def read_tsv_pairs(path: Path) -> list[tuple[str, str]]:
    pairs = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            parts = line.rstrip("\n").split("\t")
            if len(parts) >= 2:
                pairs.append((parts[0], parts[1]))
    return pairs


def train_tokenizer(
    train_tsv: Path,
    model_prefix: Path,
    vocab_size: int = 8000,
    max_sentences: int = 400_000,
    seed: int = 1234,
) -> Path:
    """Train on both columns of the training TSV → `<model_prefix>.model` (and `.vocab`)."""
    sentences = [text for pair in read_tsv_pairs(train_tsv) for text in pair]
    random.Random(seed).shuffle(sentences)  # the sample SentencePiece sees must not depend on file order
    model_prefix.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", encoding="utf-8", suffix=".txt", delete=False) as f:
        f.write("\n".join(sentences[:max_sentences]) + "\n")
        corpus = f.name
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=str(model_prefix),
        vocab_size=vocab_size,
        model_type="unigram",
        character_coverage=1.0,  # German umlauts and ß must never become <unk>
        pad_id=PAD_ID,
        unk_id=UNK_ID,
        bos_id=BOS_ID,
        eos_id=EOS_ID,
        pad_piece=SPECIAL_PIECES[0],
        unk_piece=SPECIAL_PIECES[1],
        bos_piece=SPECIAL_PIECES[2],
        eos_piece=SPECIAL_PIECES[3],
        input_sentence_size=max_sentences,
        shuffle_input_sentence=False,
        num_threads=2,
        minloglevel=2,
    )
    Path(corpus).unlink()
    return model_prefix.with_suffix(".model")


class Tokenizer:
    """Text ↔ ids. Sources get EOS appended; targets are framed with BOS/EOS by the trainer."""

    def __init__(self, model_path: Path | str):
        self.model_path = Path(model_path)
        self.processor = spm.SentencePieceProcessor(model_file=str(model_path))
        assert self.processor.pad_id() == PAD_ID and self.processor.eos_id() == EOS_ID, "unexpected special ids"

    @property
    def vocab_size(self) -> int:
        return self.processor.get_piece_size()

    def encode(self, texts: list[str]) -> list[list[int]]:
        return self.processor.encode(texts, out_type=int)

    def decode(self, ids: list[list[int]]) -> list[str]:
        return self.processor.decode(ids)

    def pieces(self) -> list[str]:
        return [self.processor.id_to_piece(i) for i in range(self.vocab_size)]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Train the joint SentencePiece model on a training TSV.")
    parser.add_argument("train_tsv", type=Path)
    parser.add_argument("--out", type=Path, required=True, help="model prefix, e.g. checkpoints/en-de/spm")
    parser.add_argument("--vocab-size", type=int, default=8000)
    args = parser.parse_args(argv)
    print(train_tokenizer(args.train_tsv, args.out, args.vocab_size))


if __name__ == "__main__":
    main()
