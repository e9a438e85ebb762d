"""Derive CLIP's ``vocab.json`` and ``merges.txt`` from OpenAI's ``bpe_simple_vocab_16e6.txt.gz``.

The gz file is CLIP's list of BPE merges, one per line after a header line. CLIP uses the first 48,894 of them
(``49152 - 256 - 2``), and its vocabulary is, in id order: the 256 byte symbols (bytes mapped to printable
characters, as in GPT-2), the same 256 with the end-of-word mark ``</w>``, one token per merge (the two parts
joined), then ``<|startoftext|>`` (49406) and ``<|endoftext|>`` (49407): 49,408 tokens.

Usage: ``python -m modeling_pig.tokenizer_files.derive path/to/bpe_simple_vocab_16e6.txt.gz [--out DIR]``
(``DIR`` defaults to this package folder, whose files ship with the package).
"""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

NUM_MERGES = 49152 - 256 - 2  # = 48,894 = 49,408 tokens - 2 x 256 byte tokens - 2 special tokens
SPECIAL_TOKENS = ("<|startoftext|>", "<|endoftext|>")
MERGES_HEADER = "#version: 0.2"  # the first line of a Hugging Face merges.txt; tokenizers skip it


def byte_symbols() -> list[str]:
    """The printable character that stands for each byte 0..255 in byte-level BPE.

    Printable Latin-1 bytes stand for themselves; the others (control characters, space, ...) are moved to
    code points 256 and up, in byte order.
    """
    printable = set(range(ord("!"), ord("~") + 1)) | set(range(ord("¡"), ord("¬") + 1)) | set(range(ord("®"), ord("ÿ") + 1))
    symbols, shifted = [], 0
    for byte in range(256):
        if byte in printable:
            symbols.append(chr(byte))
        else:
            symbols.append(chr(256 + shifted))
            shifted += 1
    return symbols


def _printable_order(symbols: list[str]) -> list[str]:
    """CLIP lists the printable bytes first (in byte order), then the shifted ones (in byte order)."""
    return [s for s in symbols if ord(s) < 256] + [s for s in symbols if ord(s) >= 256]


def derive_clip_vocabulary(gz_path: str | Path) -> tuple[dict[str, int], list[str]]:
    """Read the gz merges list; return (token -> id for all 49,408 tokens, the 48,894 merges as ``"a b"`` lines)."""
    lines = gzip.open(gz_path, "rt", encoding="utf-8").read().split("\n")
    merges = lines[1 : NUM_MERGES + 1]
    if len(merges) != NUM_MERGES or any(len(m.split()) != 2 for m in merges):
        raise ValueError(f"{gz_path}: expected {NUM_MERGES} merge lines of two symbols after the header")
    base = _printable_order(byte_symbols())
    tokens = base + [s + "</w>" for s in base] + ["".join(m.split()) for m in merges] + list(SPECIAL_TOKENS)
    vocab = {token: index for index, token in enumerate(tokens)}
    if len(vocab) != len(tokens):
        raise ValueError(f"{gz_path}: the derived vocabulary has duplicate tokens")
    return vocab, merges


def vocabulary_file_texts(gz_path: str | Path) -> dict[str, str]:
    """The exact text of ``vocab.json`` and ``merges.txt`` derived from ``gz_path`` (file name -> text)."""
    vocab, merges = derive_clip_vocabulary(gz_path)
    return {
        "vocab.json": json.dumps(vocab, ensure_ascii=False) + "\n",
        "merges.txt": "\n".join([MERGES_HEADER, *merges]) + "\n",
    }


def write_vocabulary_files(gz_path: str | Path, out_dir: str | Path) -> list[Path]:
    """Write ``vocab.json`` and ``merges.txt`` derived from ``gz_path`` into ``out_dir``; return their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in vocabulary_file_texts(gz_path).items():
        (out_dir / name).write_text(text, encoding="utf-8")
        written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("gz_path", help="bpe_simple_vocab_16e6.txt.gz")
    parser.add_argument("--out", default=str(Path(__file__).resolve().parent), help="output folder")
    args = parser.parse_args(argv)
    for path in write_vocabulary_files(args.gz_path, args.out):
        print(f"wrote {path}")


if __name__ == "__main__":
    main()
