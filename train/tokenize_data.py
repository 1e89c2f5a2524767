"""Token ids for training and evaluation, with SmolLM2's own tokenizer rebuilt from its GGUF.

Owns: the tokenizer.json (byte-level BPE, SmolLM2's "smollm" pre-tokenizer: single digits split
off, then the GPT-2 pattern, no prefix space, as lckv and llama.cpp build it), its check against
token ids llama.cpp's llama-tokenize recorded (tests/fixtures/tokenizer/smollm2.json), and the
uint16 .npy id files the GPU run reads (data/train.npy, data/emma.npy).

    python train/tokenize_data.py --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf --fixtures tests/fixtures/tokenizer/smollm2.json
"""

from __future__ import annotations

import argparse
import json
import os

import numpy as np
from gguf import GGUFReader
from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"


def build_tokenizer(gguf_path: str) -> Tokenizer:
    r = GGUFReader(gguf_path)
    pre = r.fields["tokenizer.ggml.pre"]
    if pre.parts[pre.data[0]].tobytes().decode() != "smollm":
        raise ValueError(f"{gguf_path}: expected the 'smollm' pre-tokenizer")
    f = r.fields["tokenizer.ggml.tokens"]
    tokens = [bytes(f.parts[i]).decode() for i in f.data]
    f = r.fields["tokenizer.ggml.merges"]
    merges_raw = [bytes(f.parts[i]).decode() for i in f.data]
    vocab = {t: i for i, t in enumerate(tokens)}
    merges = []
    for m in merges_raw:
        pos = m.find(" ", 1)  # split at the first space after the first character
        a, b = m[:pos], m[pos + 1 :]
        if a in vocab and b in vocab and a + b in vocab:
            merges.append((a, b))
    tok = Tokenizer(models.BPE(vocab=vocab, merges=merges))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(r"\p{N}"), behavior="isolated"),
            pre_tokenizers.Split(Regex(GPT2), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    return tok


def check(tok: Tokenizer, fixtures: str) -> int:
    cases = json.load(open(fixtures))["cases"]
    n = 0
    for c in cases:
        if c["add_special"] or c["parse_special"]:
            continue
        got = tok.encode(c["text"], add_special_tokens=False).ids
        if got != c["ids"]:
            raise SystemExit(f"tokenizer mismatch on {c['text']!r}: {got} != {c['ids']}")
        n += 1
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--fixtures", required=True)
    ap.add_argument("--data", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "data"))
    a = ap.parse_args()
    tok = build_tokenizer(a.gguf)
    print(f"tokenizer matches llama-tokenize on {check(tok, a.fixtures)} cases")
    tok.save(os.path.join(a.data, "tokenizer.json"))
    for name, files in [("train", ["train_austen.txt", "train_kjv.txt"]), ("emma", ["emma.txt"])]:
        ids = []
        for fn in files:
            text = open(os.path.join(a.data, fn), encoding="utf-8").read()
            ids += tok.encode(text, add_special_tokens=False).ids
        arr = np.array(ids, dtype=np.uint16)
        np.save(os.path.join(a.data, f"{name}.npy"), arr)
        print(f"{name}: {len(arr)} tokens")


if __name__ == "__main__":
    main()
