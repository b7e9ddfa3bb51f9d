"""The CLIP tokenizer, built offline from the BPE merges file midrun ships.

SD1.5's and SDXL's text encoders share OpenAI CLIP's vocabulary: 256 byte symbols, the
same with an end-of-word marker, 48,894 merges, then ``<|startoftext|>`` and
``<|endoftext|>`` (49,408 tokens). Hugging Face's ``vocab.json`` / ``merges.txt`` are
exactly that, so they are rebuilt here instead of downloaded.
"""

from __future__ import annotations

import gzip
import json
from functools import cache
from importlib import resources
from pathlib import Path

from transformers import CLIPTokenizer

BPE_FILE = "bpe_simple_vocab_16e6.txt.gz"
MERGES = 49152 - 256 - 2
START, END = "<|startoftext|>", "<|endoftext|>"


def _bytes_to_unicode() -> list[str]:
    """CLIP's printable stand-ins for the 256 byte values, in vocabulary order."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    codes = printable[:]
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            codes.append(256 + extra)
            extra += 1
    return [chr(c) for c in codes]


@cache
def clip_vocabulary() -> tuple[dict[str, int], tuple[str, ...]]:
    """``(vocab, merges)`` as in Hugging Face's CLIP tokenizer files."""
    data = resources.files("midrun.diffusion").joinpath("data", "clip", BPE_FILE).read_bytes()
    lines = gzip.decompress(data).decode("utf-8").split("\n")[1 : MERGES + 1]
    merges = tuple(lines)
    symbols = _bytes_to_unicode()
    tokens = [*symbols, *(s + "</w>" for s in symbols)]
    tokens += ["".join(m.split()) for m in merges]
    tokens += [START, END]
    return {t: i for i, t in enumerate(tokens)}, merges


def write_tokenizer_files(directory: Path) -> Path:
    """Write ``vocab.json`` and ``merges.txt`` (for tools that want files)."""
    vocab, merges = clip_vocabulary()
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    (directory / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", "utf-8")
    return directory


def clip_tokenizer(pad_token: str = END, max_length: int = 77) -> CLIPTokenizer:
    """A CLIP tokenizer; SD1.5's pads with ``<|endoftext|>``, SDXL's second with ``!``."""
    vocab, merges = clip_vocabulary()
    return CLIPTokenizer(
        vocab=dict(vocab),
        merges=[tuple(m.split()) for m in merges],
        pad_token=pad_token,
        model_max_length=max_length,
    )
