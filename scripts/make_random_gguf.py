#!/usr/bin/env python3
"""Writes random-weight GGUF models for parity and speed tests.

The file is written with the `gguf` package (llama.cpp's own writer), with the tensor names and
metadata keys llama.cpp's converter writes for each architecture, so llama.cpp loads it as it
would a converted checkpoint. Weights are N(0, 0.02), norms near 1: logits are not degenerate,
and speed does not depend on the values. The tokenizer is copied from a donor GGUF (so real
prompts tokenize) or is a small synthetic byte-level BPE.

LCKV models (--kv-plan) carry the extension keys `{arch}.kv_plan.*`; consumer layers (layers
whose K/V come from another layer) have no K/V projections: llama/qwen2/gemma3 drop attn_k and
attn_v (and their biases), phi3 consumers store their query projection alone as attn_q instead of
the fused attn_qkv.

Run with the project's venv: .venv/bin/python scripts/make_random_gguf.py --help
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass, replace

import numpy as np

import gguf
from gguf import GGMLQuantizationType as QT
from gguf import GGUFValueType as VT

WEIGHT_STD = 0.02


@dataclass(frozen=True)
class Shape:
    n_layer: int
    n_embd: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_ff: int
    n_ctx: int
    rope_base: float
    tied: bool
    n_vocab: int | None = None  # None: the donor's (or the synthetic) vocabulary size
    sliding_window: int = 0  # gemma3: SWA window; phi3: the value the checkpoint declares
    longrope: bool = False  # phi3: rope_factors_long/short with a 128k context
    rms_eps: float = 1e-5


# Tiny shapes differ per architecture so that tests meet each one's peculiarities (GQA ratios,
# head_dim 32/64/128, q width != n_embd for gemma3, untied outputs). Row lengths are multiples of
# 256 so every quantized type, k-quants included, applies to every matrix.
TINY = {
    "llama": Shape(4, 256, 4, 2, 64, 768, 2048, 10000.0, tied=True),
    "phi3": Shape(4, 256, 8, 4, 32, 512, 131072, 10000.0, tied=False, sliding_window=2047,
                  longrope=True),
    "qwen2": Shape(4, 256, 4, 2, 64, 1024, 4096, 1000000.0, tied=False, rms_eps=1e-6),
    "gemma3": Shape(6, 256, 4, 1, 128, 1024, 4096, 1000000.0, tied=True, sliding_window=16,
                    rms_eps=1e-6),
}

BENCH = {
    # TinyLlama-1.1B-Chat-v1.0
    "tinyllama-1.1b": Shape(22, 2048, 32, 4, 64, 5632, 2048, 10000.0, tied=False, n_vocab=32000),
    # Phi-3-mini-4k-instruct
    "phi3-mini": Shape(32, 3072, 32, 32, 96, 8192, 4096, 10000.0, tied=False, n_vocab=32064,
                       sliding_window=2047),
}

TYPES = {
    "f32": (QT.F32, gguf.LlamaFileType.ALL_F32),
    "f16": (QT.F16, gguf.LlamaFileType.MOSTLY_F16),
    "q8_0": (QT.Q8_0, gguf.LlamaFileType.MOSTLY_Q8_0),
    "q4_0": (QT.Q4_0, gguf.LlamaFileType.MOSTLY_Q4_0),
    "q4_1": (QT.Q4_1, gguf.LlamaFileType.MOSTLY_Q4_1),
    "q5_0": (QT.Q5_0, gguf.LlamaFileType.MOSTLY_Q5_0),
    "q4_k": (QT.Q4_K, gguf.LlamaFileType.MOSTLY_Q4_K_S),
    "q6_k": (QT.Q6_K, gguf.LlamaFileType.MOSTLY_Q6_K),
}


def fail(msg: str) -> None:
    print(f"make_random_gguf: {msg}", file=sys.stderr)
    sys.exit(2)


# ---------------------------------------------------------------------------------------------
# k-quant writers. gguf 0.19 dequantizes Q4_K and Q6_K but cannot quantize them, so these are
# written here from the block layouts of ggml-common.h and checked against gguf.dequantize.
# They use plain min/max (Q4_K) and absmax (Q6_K) scales, not llama.cpp's search: the blocks are
# valid, only slightly less accurate, which random test weights do not care about.


def _f16_bytes(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float16).reshape(-1, 1).view(np.uint8)


def quantize_q4_k(rows: np.ndarray) -> np.ndarray:
    """block_q4_K: f16 d, f16 dmin, 12 bytes of 6-bit scales/mins, 128 bytes of nibbles."""
    x = rows.reshape(-1, 8, 32).astype(np.float32)
    nb = x.shape[0]
    lo = np.minimum(x.min(axis=2), 0.0)
    hi = x.max(axis=2)
    scale = (hi - lo) / 15.0  # per sub-block step
    mins = -lo  # per sub-block offset (>= 0)
    d = (scale.max(axis=1) / 63.0).astype(np.float16).astype(np.float32)
    dmin = (mins.max(axis=1) / 63.0).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(scale / d[:, None]), 0).clip(0, 63).astype(np.uint8)
        m = np.where(dmin[:, None] > 0, np.rint(mins / dmin[:, None]), 0).clip(0, 63)
        m = m.astype(np.uint8)
        step = d[:, None] * sc
        off = dmin[:, None] * m
        q = np.where(step[:, :, None] > 0, np.rint((x + off[:, :, None]) / step[:, :, None]), 0)
    q = q.clip(0, 15).astype(np.uint8)  # (nb, 8, 32)
    scales = np.zeros((nb, 12), dtype=np.uint8)
    scales[:, 0:4] = sc[:, 0:4] | ((sc[:, 4:8] >> 4) << 6)
    scales[:, 4:8] = m[:, 0:4] | ((m[:, 4:8] >> 4) << 6)
    scales[:, 8:12] = (sc[:, 4:8] & 0xF) | ((m[:, 4:8] & 0xF) << 4)
    pairs = q.reshape(nb, 4, 2, 32)  # sub-blocks 2k and 2k+1 share 32 bytes: low, high nibble
    qs = (pairs[:, :, 0, :] | (pairs[:, :, 1, :] << 4)).reshape(nb, 128)
    out = np.concatenate([_f16_bytes(d), _f16_bytes(dmin), scales, qs], axis=1)
    return out.reshape(rows.shape[0], -1)


def quantize_q6_k(rows: np.ndarray) -> np.ndarray:
    """block_q6_K: 128 bytes low nibbles, 64 bytes high 2-bit pairs, 16 int8 scales, f16 d."""
    x = rows.reshape(-1, 16, 16).astype(np.float32)
    nb = x.shape[0]
    amax = np.abs(x).max(axis=2)
    sub = amax / 31.0  # per 16-element sub-block step
    d = (sub.max(axis=1) / 127.0).astype(np.float16).astype(np.float32)
    with np.errstate(divide="ignore", invalid="ignore"):
        sc = np.where(d[:, None] > 0, np.rint(sub / d[:, None]), 0).clip(-128, 127)
        step = d[:, None] * sc
        q = np.where(step[:, :, None] != 0, np.rint(x / step[:, :, None]), 0)
    sc = sc.astype(np.int8)
    lv = (q.clip(-32, 31) + 32).astype(np.uint8).reshape(nb, 2, 4, 32)  # half, group, lane
    ql = np.concatenate(
        [
            (lv[:, :, 0, :] & 0xF) | ((lv[:, :, 2, :] & 0xF) << 4),
            (lv[:, :, 1, :] & 0xF) | ((lv[:, :, 3, :] & 0xF) << 4),
        ],
        axis=2,
    ).reshape(nb, 128)
    qh = (
        (lv[:, :, 0, :] >> 4)
        | ((lv[:, :, 1, :] >> 4) << 2)
        | ((lv[:, :, 2, :] >> 4) << 4)
        | ((lv[:, :, 3, :] >> 4) << 6)
    ).reshape(nb, 64)
    out = np.concatenate([ql, qh, sc.view(np.uint8), _f16_bytes(d)], axis=1)
    return out.reshape(rows.shape[0], -1)


def quantize(data: np.ndarray, qtype: QT) -> np.ndarray:
    if qtype == QT.Q4_K:
        out = quantize_q4_k(data)
    elif qtype == QT.Q6_K:
        out = quantize_q6_k(data)
    else:
        return gguf.quantize(data, qtype)
    # Our own writers are checked against llama.cpp's Python dequantizer on a slice of every
    # tensor: a layout mistake would show up here, not as a mysterious parity failure later.
    probe = data[:4]
    back = gguf.dequantize(out[:4], qtype).reshape(probe.shape)
    tol = {QT.Q4_K: 0.2, QT.Q6_K: 0.05}[qtype] * float(np.abs(probe).max()) + 1e-6
    err = float(np.abs(back - probe).max())
    if not err <= tol:
        fail(f"internal {qtype.name} writer is wrong: round-trip error {err} > {tol}")
    return out


# ---------------------------------------------------------------------------------------------
# Vocabulary


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-ins for the 256 byte values (byte-level BPE tokens)."""
    keep = list(range(ord("!"), ord("~") + 1)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[b] = chr(b)
        else:
            out[b] = chr(256 + extra)
            extra += 1
    return out


SYNTHETIC_MERGES = [
    "Ġ t", "h e", "i n", "Ġ a", "e r", "o n", "Ġt he", "r e", "Ġ s", "a t", "e n", "o r",
    "Ġ w", "Ġ o", "e s", "Ġ c", "i s", "i t", "Ġ b", "n d", "Ġ f", "Ġ p", "a n", "Ġ m",
    "Ġa nd", "Ġ i", "o u", "l l", "Ġo f", "Ġ h", "in g", "Ġ d", "Ġt o", "e d", "a r", "Ġ l",
]


@dataclass
class Vocab:
    # (key, value, type, sub_type) tokenizer.* entries, written in this order
    entries: list[tuple[str, object, VT, VT | None]]
    size: int


def synthetic_vocab() -> Vocab:
    byte_tokens = list(bytes_to_unicode().values())
    tokens = ["<|endoftext|>"] + byte_tokens
    types = [gguf.TokenType.CONTROL] + [gguf.TokenType.NORMAL] * len(byte_tokens)
    for merge in SYNTHETIC_MERGES:
        tokens.append(merge.replace(" ", ""))
        types.append(gguf.TokenType.NORMAL)
    entries = [
        ("tokenizer.ggml.model", "gpt2", VT.STRING, None),
        ("tokenizer.ggml.pre", "default", VT.STRING, None),
        ("tokenizer.ggml.tokens", tokens, VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.token_type", [int(t) for t in types], VT.ARRAY, VT.INT32),
        ("tokenizer.ggml.merges", list(SYNTHETIC_MERGES), VT.ARRAY, VT.STRING),
        ("tokenizer.ggml.bos_token_id", 0, VT.UINT32, None),
        ("tokenizer.ggml.eos_token_id", 0, VT.UINT32, None),
        ("tokenizer.ggml.add_bos_token", False, VT.BOOL, None),
    ]
    return Vocab(entries, len(tokens))


def donor_vocab(path: str, n_vocab: int | None) -> Vocab:
    """Copies every tokenizer.* key of a GGUF; with n_vocab, keeps the first n_vocab tokens and
    the merges that only involve kept tokens (BPE vocabularies list merges in rank order, so the
    result is the tokenizer one would have trained with fewer merges)."""
    if not os.path.isfile(path):
        fail(f"vocabulary donor {path} does not exist (run scripts/fetch_models.sh)")
    reader = gguf.GGUFReader(path)
    entries = []
    size = None
    for key, field in reader.fields.items():
        if not key.startswith("tokenizer."):
            continue
        vtype = VT(field.types[0])
        sub = VT(field.types[-1]) if vtype == VT.ARRAY else None
        value = field.contents()
        if key == "tokenizer.ggml.tokens":
            size = len(value)
        entries.append([key, value, vtype, sub])
    if size is None:
        fail(f"{path} has no tokenizer.ggml.tokens: choose another --vocab-from")
    if n_vocab is not None and n_vocab < size:
        kept_tokens = None
        for e in entries:
            if e[0] == "tokenizer.ggml.tokens":
                e[1] = e[1][:n_vocab]
                kept_tokens = set(e[1])
        for e in entries:
            if e[0] in ("tokenizer.ggml.token_type", "tokenizer.ggml.scores"):
                e[1] = e[1][:n_vocab]
            elif e[0] == "tokenizer.ggml.merges":
                e[1] = [
                    mg for mg in e[1]
                    if all(p in kept_tokens for p in mg.split(" ")) and mg.replace(" ", "") in kept_tokens
                ]
        entries = [e for e in entries if not (e[0].endswith("_token_id") and int(e[1]) >= n_vocab)]
        size = n_vocab
    elif n_vocab is not None and n_vocab > size:
        fail(f"--vocab-size {n_vocab} exceeds the donor's {size} tokens")
    return Vocab([tuple(e) for e in entries], size)


# ---------------------------------------------------------------------------------------------
# KV plan


@dataclass
class KvPlan:
    sources: list[int]
    sliding: list[bool]


def parse_kv_plan(text: str) -> KvPlan:
    sources, sliding = [], []
    for part in text.split("_"):
        slide = part.endswith("s")
        digits = part[:-1] if slide else part
        if not digits.isdigit():
            fail(f"--kv-plan: '{part}' is not a layer index (expected e.g. 0_3_3_3 or 0s_3_3_3)")
        sources.append(int(digits))
        sliding.append(slide)
    n = len(sources)
    for i, s in enumerate(sources):
        if s >= n:
            fail(f"--kv-plan: layer {i} reads layer {s}, but the plan has {n} layers")
        if sources[s] != s:
            fail(f"--kv-plan: layer {i} reads layer {s}, which itself reads layer {sources[s]}: "
                 "a source layer must read its own K/V")
    return KvPlan(sources, sliding)


# ---------------------------------------------------------------------------------------------
# Model


def llama3_rope_freqs(head_dim: int, base: float) -> np.ndarray:
    """Per-frequency divisors of Llama 3.1 RoPE scaling (factor 8, low 1, high 4, 8192 ctx)."""
    factor, low, high, old_ctx = 8.0, 1.0, 4.0, 8192.0
    freqs = 1.0 / base ** (np.arange(0, head_dim, 2, dtype=np.float64) / head_dim)
    out = []
    for f in freqs:
        wavelen = 2 * math.pi / f
        if wavelen < old_ctx / high:
            out.append(1.0)
        elif wavelen > old_ctx / low:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


class Builder:
    def __init__(self, args: argparse.Namespace, shape: Shape, vocab: Vocab, plan: KvPlan | None):
        self.args, self.shape, self.vocab, self.plan = args, shape, vocab, plan
        self.rng = np.random.default_rng(args.seed)
        self.qtype = TYPES[args.type][0]
        self.tensors: list[tuple[str, np.ndarray, QT]] = []
        self.fallbacks: list[str] = []

    def weight(self, name: str, rows: int, cols: int) -> None:
        data = (self.rng.standard_normal((rows, cols), dtype=np.float32) * WEIGHT_STD)
        self.add_matrix(name, data)

    def add_matrix(self, name: str, data: np.ndarray) -> None:
        qtype = self.qtype
        block = gguf.GGML_QUANT_SIZES[qtype][0]
        if data.shape[1] % block != 0:
            # llama.cpp's quantizer also falls back for rows its block does not divide.
            qtype = QT.Q8_0 if data.shape[1] % 32 == 0 else QT.F16
            self.fallbacks.append(f"{name} ({data.shape[1]} columns) -> {qtype.name}")
        self.tensors.append((name, data, qtype))

    def vector(self, name: str, n: int, around: float) -> None:
        data = around + self.rng.standard_normal(n, dtype=np.float32) * WEIGHT_STD
        self.tensors.append((name, data.astype(np.float32), QT.F32))

    def build(self) -> None:
        a, s = self.args.arch, self.shape
        n_vocab = self.vocab.size
        q_dim, kv_dim = s.n_head * s.head_dim, s.n_head_kv * s.head_dim
        self.weight("token_embd.weight", n_vocab, s.n_embd)
        if a == "llama" and self.args.llama3_rope:
            self.tensors.append(("rope_freqs.weight", llama3_rope_freqs(s.head_dim, s.rope_base),
                                 QT.F32))
        if a == "phi3" and s.longrope:
            half = s.head_dim // 2
            short = 1.0 + 0.1 * self.rng.random(half, dtype=np.float32)
            long = np.geomspace(1.0, 40.0, half).astype(np.float32)
            self.tensors.append(("rope_factors_long.weight", long, QT.F32))
            self.tensors.append(("rope_factors_short.weight", short, QT.F32))
        for i in range(s.n_layer):
            p = f"blk.{i}"
            producer = self.plan is None or self.plan.sources[i] == i
            self.vector(f"{p}.attn_norm.weight", s.n_embd, 1.0)
            if a == "phi3" and producer:
                self.weight(f"{p}.attn_qkv.weight", q_dim + 2 * kv_dim, s.n_embd)
            else:
                self.weight(f"{p}.attn_q.weight", q_dim, s.n_embd)
                if producer:
                    self.weight(f"{p}.attn_k.weight", kv_dim, s.n_embd)
                    self.weight(f"{p}.attn_v.weight", kv_dim, s.n_embd)
            if a == "qwen2":
                self.vector(f"{p}.attn_q.bias", q_dim, 0.0)
                if producer:
                    self.vector(f"{p}.attn_k.bias", kv_dim, 0.0)
                    self.vector(f"{p}.attn_v.bias", kv_dim, 0.0)
            if a == "gemma3":
                self.vector(f"{p}.attn_q_norm.weight", s.head_dim, 1.0)
                if producer:
                    self.vector(f"{p}.attn_k_norm.weight", s.head_dim, 1.0)
            self.weight(f"{p}.attn_output.weight", s.n_embd, q_dim)
            if a == "gemma3":
                self.vector(f"{p}.post_attention_norm.weight", s.n_embd, 1.0)
            self.vector(f"{p}.ffn_norm.weight", s.n_embd, 1.0)
            if a == "phi3":
                self.weight(f"{p}.ffn_up.weight", 2 * s.n_ff, s.n_embd)  # gate rows, then up rows
            else:
                self.weight(f"{p}.ffn_gate.weight", s.n_ff, s.n_embd)
                self.weight(f"{p}.ffn_up.weight", s.n_ff, s.n_embd)
            self.weight(f"{p}.ffn_down.weight", s.n_embd, s.n_ff)
            if a == "gemma3":
                self.vector(f"{p}.post_ffw_norm.weight", s.n_embd, 1.0)
        self.vector("output_norm.weight", s.n_embd, 1.0)
        if not s.tied:
            self.weight("output.weight", n_vocab, s.n_embd)

    def write(self, out: str) -> None:
        a, s = self.args.arch, self.shape
        w = gguf.GGUFWriter(out, a)
        w.add_type("model")
        # llama.cpp special-cases vocabularies by model name ("phi3" expects Phi-3's tokens):
        # the name stays neutral, the details go in the description.
        w.add_name("lckv random weights")
        w.add_description(f"{a} {self.args.shape} {self.args.type} seed {self.args.seed}")
        w.add_context_length(s.n_ctx)
        w.add_embedding_length(s.n_embd)
        w.add_block_count(s.n_layer)
        w.add_feed_forward_length(s.n_ff)
        w.add_head_count(s.n_head)
        w.add_head_count_kv(s.n_head_kv)
        w.add_rope_freq_base(s.rope_base)
        w.add_layer_norm_rms_eps(s.rms_eps)
        if a == "gemma3":
            w.add_key_length(s.head_dim)
            w.add_value_length(s.head_dim)
            if s.sliding_window:
                w.add_sliding_window(s.sliding_window)
        else:
            w.add_rope_dimension_count(s.head_dim)
        if a == "llama":
            w.add_vocab_size(self.vocab.size)
        if a == "phi3":
            w.add_rope_scaling_orig_ctx_len(4096)
            if s.longrope:
                scale = s.n_ctx / 4096
                w.add_rope_scaling_attn_factors(math.sqrt(1 + math.log(scale) / math.log(4096)))
            w.add_sliding_window(s.sliding_window)
        if self.plan is not None:
            k = f"{a}.kv_plan"
            w.add_key_value(f"{k}.sources", self.plan.sources, VT.ARRAY, VT.UINT32)
            if any(self.plan.sliding):
                w.add_key_value(f"{k}.sliding", self.plan.sliding, VT.ARRAY, VT.BOOL)
            w.add_uint32(f"{k}.sliding_window", self.args.plan_sliding_window)
            w.add_bool(f"{k}.force_nodiag", not self.args.no_force_nodiag)
            w.add_uint32(f"{k}.forward_passes", self.args.forward_passes)
            w.add_uint32(f"{k}.backward_passes", self.args.backward_passes)
        w.add_file_type(int(TYPES[self.args.type][1]))
        w.add_quantization_version(gguf.GGML_QUANT_VERSION)
        for key, value, vtype, sub in self.vocab.entries:
            w.add_key_value(key, value, vtype, sub)
        for name, data, qtype in [] if self.args.vocab_only else self.tensors:
            if data.ndim == 1 or qtype == QT.F32:
                w.add_tensor(name, data.astype(np.float32))
            elif qtype == QT.F16:
                w.add_tensor(name, data.astype(np.float16))
            else:
                w.add_tensor(name, quantize(data, qtype), raw_dtype=qtype)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
        w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--arch", choices=["llama", "phi3", "qwen2", "gemma3"], required=True)
    ap.add_argument("--shape", choices=["tiny", *BENCH], default="tiny")
    ap.add_argument("--type", choices=list(TYPES), default="f32",
                    help="type of every matrix; 1-D tensors (norms, biases) stay f32")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--vocab-from", metavar="GGUF",
                    help="copy the tokenizer of this GGUF (default: a ~290-token synthetic BPE)")
    ap.add_argument("--vocab-size", type=int,
                    help="truncate the donor vocabulary (default: the shape's, else the donor's)")
    ap.add_argument("--vocab-only", action="store_true",
                    help="write the metadata and tokenizer without tensors (a cheap vocabulary "
                    "donor, like llama.cpp's ggml-vocab-*.gguf files)")
    ap.add_argument("--layers", type=int, help="override the shape's layer count")
    ap.add_argument("--untied", action="store_true", help="write output.weight even if tied")
    ap.add_argument("--llama3-rope", action="store_true",
                    help="llama: write Llama-3.1-style rope_freqs (base 500000)")
    ap.add_argument("--kv-plan", help="LCKV plan, one source layer per layer, e.g. 0_3_3_3; "
                    "an 's' suffix marks a sliding-window layer (0s_3_3_3)")
    ap.add_argument("--plan-sliding-window", type=int, default=4096)
    ap.add_argument("--no-force-nodiag", action="store_true")
    ap.add_argument("--forward-passes", type=int, default=7)
    ap.add_argument("--backward-passes", type=int, default=2)
    ap.add_argument("-o", "--out", required=True)
    args = ap.parse_args()

    shape = TINY[args.arch] if args.shape == "tiny" else BENCH[args.shape]
    if args.arch == "gemma3" and args.shape != "tiny":
        shape = replace(shape, sliding_window=512)
    if args.arch != "phi3":
        shape = replace(shape, longrope=False)
    if args.llama3_rope:
        if args.arch != "llama":
            fail("--llama3-rope applies to --arch llama only")
        shape = replace(shape, rope_base=500000.0)
    if args.untied:
        shape = replace(shape, tied=False)
    if args.arch in ("phi3", "qwen2") and shape.n_head * shape.head_dim != shape.n_embd:
        fail(f"{args.arch} needs n_head * head_dim == n_embd")
    plan = parse_kv_plan(args.kv_plan) if args.kv_plan else None
    if args.layers is not None:
        shape = replace(shape, n_layer=args.layers)
    if plan is not None:
        if args.layers is not None and args.layers != len(plan.sources):
            fail(f"--layers {args.layers} disagrees with the {len(plan.sources)}-layer --kv-plan")
        shape = replace(shape, n_layer=len(plan.sources))
    n_vocab = args.vocab_size if args.vocab_size is not None else shape.n_vocab
    vocab = donor_vocab(args.vocab_from, n_vocab) if args.vocab_from else synthetic_vocab()

    b = Builder(args, shape, vocab, plan)
    if not args.vocab_only:
        b.build()
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    tmp = f"{out}.tmp.{os.getpid()}"
    try:
        b.write(tmp)
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
    for note in b.fallbacks:
        print(f"make_random_gguf: note: {note}", file=sys.stderr)
    print(f"make_random_gguf: wrote {out} ({os.path.getsize(out)} bytes, {vocab.size} tokens)",
          file=sys.stderr)


if __name__ == "__main__":
    main()
