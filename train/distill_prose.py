"""The plain prose that distillation mixes with the teacher's own text, and its held-out slice.

Owns: cutting each prose file of data/ (the five Austen novels other than Emma, the KJV Bible,
the fortune cookies) into blocks of 100 lines, holding out one block in HELDOUT_EVERY by a hash
of (file, block index), and writing (uint16 token ids, SmolLM2's tokenizer rebuilt from its GGUF):
  data/prose_train.npy    the training blocks of every file, concatenated
  data/prose_heldout.npy  the held-out blocks, concatenated
  data/heldout_prose.txt  the held-out blocks as text, for `lckv perplexity`
Emma stays out of both (data/emma.txt, as before).

    python train/distill_prose.py --gguf models/SmolLM2-135M-Instruct.Q4_1.gguf
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from tokenize_data import build_tokenizer  # noqa: E402

SOURCES = ["train_austen.txt", "train_kjv.txt", "train_fortunes.txt"]
BLOCK_LINES, HELDOUT_EVERY = 100, 40


def is_heldout(name: str, index: int) -> bool:
    return int(hashlib.sha1(f"{name}:{index}".encode()).hexdigest(), 16) % HELDOUT_EVERY == 0


def split_blocks(name: str, text: str) -> tuple[list[str], list[str]]:
    """(training blocks, held-out blocks) of one file."""
    lines = text.splitlines(keepends=True)
    train, held = [], []
    for b in range(0, len(lines), BLOCK_LINES):
        block = "".join(lines[b : b + BLOCK_LINES])
        (held if is_heldout(name, b // BLOCK_LINES) else train).append(block)
    return train, held


def encode_all(tok, blocks: list[str]) -> list[np.ndarray]:
    return [np.array(tok.encode(b, add_special_tokens=False).ids, dtype=np.uint16) for b in blocks]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--gguf", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "data"))
    a = ap.parse_args()
    tok = build_tokenizer(a.gguf)
    train_ids, held_ids, held_text = [], [], []
    for name in SOURCES:
        path = os.path.join(a.data, name)
        if not os.path.exists(path):
            print(f"{name}: missing, skipped")
            continue
        train, held = split_blocks(name, open(path, encoding="utf-8").read())
        t, h = encode_all(tok, train), encode_all(tok, held)
        train_ids += t
        held_ids += h
        held_text += held
        print(f"{name}: {len(train)} training blocks ({sum(map(len, t))} tokens), "
              f"{len(held)} held out ({sum(map(len, h))} tokens)")
    np.save(os.path.join(a.data, "prose_train.npy"), np.concatenate(train_ids))
    np.save(os.path.join(a.data, "prose_heldout.npy"), np.concatenate(held_ids))
    with open(os.path.join(a.data, "heldout_prose.txt"), "w", encoding="utf-8") as f:
        f.write("".join(held_text))
    print(f"prose: {sum(map(len, train_ids))} training tokens, {sum(map(len, held_ids))} held out")


if __name__ == "__main__":
    main()
