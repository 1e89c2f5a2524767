"""Independent PyTorch reference for layer-condensed KV cache (LCKV) Llama models.

Owns: the KV plan (who reads whose keys/values), the exact token-by-token forward, the trained
iterative parallel prefill, one-token decoding, and reading/writing HF-format checkpoints in the
published LCKV layout (`config.json` with `model_type: "lckv-llama"` + `model.safetensors`).

Written from the section "The technique, precisely" of DESIGN.md; each rule quoted in a comment
below is from there. The base math (RMSNorm, RoPE, SwiGLU MLP) is transformers' own Llama code,
so the standard plan can be checked against `LlamaForCausalLM` itself.

Shapes: one sequence, no batch. Hidden states are [T, hidden]; per-head tensors are [T, heads, dim].
"""

from __future__ import annotations

import json
import math
import os
import re
from dataclasses import dataclass, field

import torch
from torch import nn
from transformers import LlamaConfig
from transformers.models.llama.modeling_llama import (
    LlamaMLP,
    LlamaRMSNorm,
    LlamaRotaryEmbedding,
    apply_rotary_pos_emb,
)

# ----------------------------------------------------------------------------------------------
# The KV plan
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class KvPlan:
    """`src[i]` is the layer whose K/V layer i's queries read; `sliding[i]` marks a window layer."""

    src: tuple[int, ...]
    sliding: tuple[bool, ...]

    @staticmethod
    def parse(layer_types: str, n_layers: int) -> "KvPlan":
        # "0_20_20_..._20_21": token i is src(i); an `s` suffix marks a sliding-window layer.
        src, sliding = [], []
        for i, tok in enumerate(layer_types.split("_")):
            m = re.fullmatch(r"(\d+)(s?)", tok)
            if m is None:
                raise ValueError(f"layer_types entry {i} is {tok!r}; expected a layer index, e.g. '20' or '3s'")
            src.append(int(m.group(1)))
            sliding.append(m.group(2) == "s")
        if len(src) != n_layers:
            raise ValueError(f"layer_types names {len(src)} layers but the model has {n_layers}")
        for i, s in enumerate(src):
            if not 0 <= s < n_layers:
                raise ValueError(f"layer {i} reads layer {s}, which does not exist (0..{n_layers - 1})")
        return KvPlan(tuple(src), tuple(sliding))

    @property
    def n_layers(self) -> int:
        return len(self.src)

    def is_producer(self, i: int) -> bool:
        # "Only layers that appear in the plan (producers) have k_proj/v_proj weights and a cache."
        return i in self.src

    @property
    def producers(self) -> list[int]:
        return sorted(set(self.src))

    def attends_up(self, i: int) -> bool:
        return self.src[i] > i

    def slices(self) -> list[tuple[int, int, bool]]:
        """Split the layers into (start, stop, cyclic) slices, bottom to top.

        A cyclic group starts at an attending-up layer i and is the smallest run of layers that
        contains [j, src(j)] for every attending-up layer j inside it (the public code grows it
        the same way). Every other maximal run of layers is acyclic and runs once.
        """
        out, i, n = [], 0, self.n_layers
        while i < n:
            if self.attends_up(i):
                top = self.src[i]
                while max(self.src[i : top + 1]) > top:
                    top = max(self.src[i : top + 1])
                out.append((i, top + 1, True))
                i = top + 1
            else:
                j = i + 1
                while j < n and not self.attends_up(j):
                    j += 1
                out.append((i, j, False))
                i = j
        return out


# ----------------------------------------------------------------------------------------------
# Configuration (the published LCKV config.json fields)
# ----------------------------------------------------------------------------------------------


@dataclass
class LckvConfig:
    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    intermediate_size: int
    layer_types: str
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    tie_word_embeddings: bool = False
    sliding_window: int = 4096
    forward_passes: int = 7  # m
    backward_passes: int = 2  # b
    force_nodiag: bool = True
    max_position_embeddings: int = 2048
    extra: dict = field(default_factory=dict)

    def __post_init__(self):
        if self.num_attention_heads % self.num_key_value_heads != 0:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads (GQA groups)")
        if self.head_dim % 2 != 0:
            raise ValueError("head_dim must be even for RoPE")
        self.plan = KvPlan.parse(self.layer_types, self.num_hidden_layers)

    def llama_config(self) -> LlamaConfig:
        """The transformers LlamaConfig the borrowed Llama modules (and the HF oracle) are built from."""
        cfg = LlamaConfig(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_hidden_layers,
            num_attention_heads=self.num_attention_heads,
            num_key_value_heads=self.num_key_value_heads,
            head_dim=self.head_dim,
            hidden_act="silu",
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_theta=self.rope_theta,
            tie_word_embeddings=self.tie_word_embeddings,
            attention_bias=False,
            mlp_bias=False,
        )
        if hasattr(cfg, "rope_parameters"):  # transformers >= 5 keeps RoPE settings here
            cfg.rope_parameters = {"rope_type": "default", "rope_theta": float(self.rope_theta)}
        return cfg

    def to_hf_dict(self) -> dict:
        """config.json in the published layout (LCKVLlamaConfig = LlamaConfig + the LCKV fields)."""
        d = {
            "architectures": ["LCKVLlamaForCausalLM"],
            "model_type": "lckv-llama",
            "vocab_size": self.vocab_size,
            "hidden_size": self.hidden_size,
            "intermediate_size": self.intermediate_size,
            "num_hidden_layers": self.num_hidden_layers,
            "num_attention_heads": self.num_attention_heads,
            "num_key_value_heads": self.num_key_value_heads,
            "head_dim": self.head_dim,
            "hidden_act": "silu",
            "max_position_embeddings": self.max_position_embeddings,
            "initializer_range": 0.02,
            "rms_norm_eps": self.rms_norm_eps,
            "rope_theta": self.rope_theta,
            "rope_scaling": None,
            "attention_bias": False,
            "attention_dropout": 0.0,
            "mlp_bias": False,
            "pretraining_tp": 1,
            "bos_token_id": 1,
            "eos_token_id": 2,
            "tie_word_embeddings": self.tie_word_embeddings,
            "torch_dtype": "float32",
            "use_cache": True,
            "layer_types": self.layer_types,
            "forward_passes": self.forward_passes,
            "backward_passes": self.backward_passes,
            "sliding_window": self.sliding_window,
            "use_sequential": False,
            "force_nodiag": self.force_nodiag,
        }
        d.update(self.extra)
        return d

    @staticmethod
    def from_hf_dict(d: dict) -> "LckvConfig":
        n_layers = d["num_hidden_layers"]
        heads = d["num_attention_heads"]
        return LckvConfig(
            vocab_size=d["vocab_size"],
            hidden_size=d["hidden_size"],
            num_hidden_layers=n_layers,
            num_attention_heads=heads,
            num_key_value_heads=d.get("num_key_value_heads") or heads,
            head_dim=d.get("head_dim") or d["hidden_size"] // heads,
            intermediate_size=d["intermediate_size"],
            # The public config class defaults: identity plan, m=7, b=2, window 4096, force_nodiag off.
            layer_types=d.get("layer_types") or "_".join(str(i) for i in range(n_layers)),
            rope_theta=d.get("rope_theta", 10000.0),
            rms_norm_eps=d.get("rms_norm_eps", 1e-6),
            tie_word_embeddings=d.get("tie_word_embeddings", False),
            sliding_window=d.get("sliding_window") or 4096,
            forward_passes=d.get("forward_passes", 7),
            backward_passes=d.get("backward_passes", 2),
            force_nodiag=d.get("force_nodiag", False),
            max_position_embeddings=d.get("max_position_embeddings", 2048),
        )


# ----------------------------------------------------------------------------------------------
# Modules (named like the published checkpoint: model.layers.N.self_attn.q_proj.weight, ...)
# ----------------------------------------------------------------------------------------------


class LckvAttention(nn.Module):
    def __init__(self, cfg: LckvConfig, layer: int):
        super().__init__()
        h, d = cfg.hidden_size, cfg.head_dim
        self.q_proj = nn.Linear(h, cfg.num_attention_heads * d, bias=False)
        if cfg.plan.is_producer(layer):
            self.k_proj = nn.Linear(h, cfg.num_key_value_heads * d, bias=False)
            self.v_proj = nn.Linear(h, cfg.num_key_value_heads * d, bias=False)
        self.o_proj = nn.Linear(cfg.num_attention_heads * d, h, bias=False)


class LckvDecoderLayer(nn.Module):
    def __init__(self, cfg: LckvConfig, layer: int, llama_cfg: LlamaConfig):
        super().__init__()
        self.input_layernorm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.self_attn = LckvAttention(cfg, layer)
        self.post_attention_layernorm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)
        self.mlp = LlamaMLP(llama_cfg)


class LckvBody(nn.Module):
    def __init__(self, cfg: LckvConfig, llama_cfg: LlamaConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(LckvDecoderLayer(cfg, i, llama_cfg) for i in range(cfg.num_hidden_layers))
        self.norm = LlamaRMSNorm(cfg.hidden_size, eps=cfg.rms_norm_eps)


# ----------------------------------------------------------------------------------------------
# The model
# ----------------------------------------------------------------------------------------------


class LckvLlama(nn.Module):
    """An LCKV Llama: `forward_sequential`, `forward_iterative` and `decode` return logits."""

    def __init__(self, cfg: LckvConfig):
        super().__init__()
        self.cfg = cfg
        self.plan = cfg.plan
        llama_cfg = cfg.llama_config()
        self.model = LckvBody(cfg, llama_cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self.rotary_emb = LlamaRotaryEmbedding(config=llama_cfg)
        self.reset_cache()

    # -- cache ---------------------------------------------------------------------------------

    def reset_cache(self):
        """The condensed KV cache: producers only, keys after RoPE, positions 0..t-1."""
        empty = torch.zeros(0, self.cfg.num_key_value_heads, self.cfg.head_dim)
        self.cache: dict[int, tuple[torch.Tensor, torch.Tensor]] = {p: (empty, empty) for p in self.plan.producers}

    @property
    def n_cached(self) -> int:
        return self.cache[self.plan.producers[0]][0].shape[0]

    # -- the pieces ----------------------------------------------------------------------------

    def rope(self, x: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        """Rotate x [T, heads, dim] to its positions with transformers' Llama RoPE."""
        cos, sin = self.rotary_emb(x, positions[None, :])  # [1, T, dim]
        x4 = x.transpose(0, 1)[None]  # [1, heads, T, dim], the layout apply_rotary_pos_emb expects
        rotated, _ = apply_rotary_pos_emb(x4, x4, cos, sin)
        return rotated[0].transpose(0, 1)

    def masks_diagonal(self, i: int) -> bool:
        # "A layer with src(i) > i cannot see the current token's KV of that layer ... With
        # force_nodiag ... every layer masks the diagonal, warm-up layers too."
        return self.cfg.force_nodiag or self.plan.attends_up(i)

    def visible(self, i: int, q_pos: torch.Tensor, n_keys: int) -> torch.Tensor:
        """[Tq, n_keys] bool: may layer i's query at position q_pos[a] see key position k of src(i)?"""
        k_pos = torch.arange(n_keys)
        # Attending up (or force_nodiag): positions 0..t-1; otherwise 0..t inclusive.
        last = q_pos - 1 if self.masks_diagonal(i) else q_pos
        vis = k_pos[None, :] <= last[:, None]
        if self.plan.sliding[i]:
            # Sliding-window layers see only the last `sliding_window` positions of what they
            # would otherwise see. (The public code disagrees with itself here: its eager path
            # keeps W-1 keys under the diagonal mask, its flash path W; this is the flash count.)
            vis &= k_pos[None, :] > last[:, None] - self.cfg.sliding_window
        return vis

    def attend(self, i: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, q_pos: torch.Tensor) -> torch.Tensor:
        """softmax(q k^T / sqrt(d)) v over the visible keys; q [Tq, H, d], k/v [Tk, Hkv, d]."""
        group = self.cfg.num_attention_heads // self.cfg.num_key_value_heads
        k = k.repeat_interleave(group, dim=1)  # GQA: query head h reads KV head h // group
        v = v.repeat_interleave(group, dim=1)
        scores = torch.einsum("qhd,khd->hqk", q, k) / math.sqrt(self.cfg.head_dim)
        vis = self.visible(i, q_pos, k.shape[0])
        scores = scores.masked_fill(~vis[None], float("-inf"))
        weights = torch.softmax(scores, dim=-1)
        # "A query that sees no key at all ... gets a zero attention output: only the residual passes."
        weights = torch.where(vis.any(dim=-1)[None, :, None], weights, torch.zeros_like(weights))
        return torch.einsum("hqk,khd->qhd", weights, v)

    def layer_forward(self, i: int, h: torch.Tensor, positions: torch.Tensor, kv: dict, append: bool) -> torch.Tensor:
        """One decoder layer over the tokens at `positions`.

        If layer i is a producer it first writes its own K/V for these tokens into `kv`
        (appended to what is there, or replacing it: an iterative pass recomputes every
        position); then its queries read `kv[src(i)]`.
        """
        cfg, layer = self.cfg, self.model.layers[i]
        attn = layer.self_attn
        t = h.shape[0]
        x = layer.input_layernorm(h)
        # "Each consumer rotates only its own queries."
        q = self.rope(attn.q_proj(x).view(t, cfg.num_attention_heads, cfg.head_dim), positions)
        if self.plan.is_producer(i):
            # "Keys are cached after RoPE at their own token's position; values as they are."
            k = self.rope(attn.k_proj(x).view(t, cfg.num_key_value_heads, cfg.head_dim), positions)
            v = attn.v_proj(x).view(t, cfg.num_key_value_heads, cfg.head_dim)
            if append:
                k = torch.cat([kv[i][0], k])
                v = torch.cat([kv[i][1], v])
            kv[i] = (k, v)
        k_src, v_src = kv[self.plan.src[i]]
        o = self.attend(i, q, k_src, v_src, positions)
        h = h + attn.o_proj(o.reshape(t, cfg.num_attention_heads * cfg.head_dim))
        return h + layer.mlp(layer.post_attention_layernorm(h))

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.lm_head(self.model.norm(h))

    # -- decoding and the two prefills -----------------------------------------------------------

    @torch.no_grad()
    def decode(self, token: int) -> torch.Tensor:
        """One token at position t = tokens seen so far; returns its logits [vocab].

        "Decoding one token is sequential through the layers, as usual; the cache of layer src(i)
        holds what the previous steps produced." An attending-up layer runs before its producer
        has appended position t, so it reads exactly positions 0..t-1.

        The public LCKV code differs here: for a one-token step it prepends a zero K/V to the
        producer's cache before the diagonal mask, so an attending-up layer sees [zero, 0..t-2]
        and loses the previous token. That is not how the models were trained (the iterative
        prefill sees 0..t-1); this reference implements the trained semantics.
        """
        t = self.n_cached
        h = self.model.embed_tokens(torch.tensor([token]))
        positions = torch.tensor([t])
        for i in range(self.plan.n_layers):
            h = self.layer_forward(i, h, positions, self.cache, append=True)
        return self.logits(h)[0]

    @torch.no_grad()
    def forward_sequential(self, tokens: list[int]) -> torch.Tensor:
        """Exact prefill: token by token with the KV cache. Returns logits [T, vocab]."""
        self.reset_cache()
        return torch.stack([self.decode(tok) for tok in tokens])

    @torch.no_grad()
    def forward_iterative(self, tokens: list[int]) -> torch.Tensor:
        """The trained iterative parallel prefill. Returns logits [T, vocab]."""
        cfg, n = self.cfg, len(tokens)
        passes = cfg.forward_passes + cfg.backward_passes
        # "Prompts of at most m + b tokens are processed token by token."
        if n <= passes:
            return self.forward_sequential(tokens)
        self.reset_cache()
        positions = torch.arange(n)
        h = self.model.embed_tokens(torch.tensor(tokens))
        for start, stop, cyclic in self.plan.slices():
            if not cyclic:
                # No layer here reads a layer above it: one ordinary causal pass, committed.
                for i in range(start, stop):
                    h = self.layer_forward(i, h, positions, self.cache, append=True)
                continue
            # "A slice whose layers attend up forms a cyclic group that runs m + b times over the
            # whole prompt, each pass from the same input hidden states, the attending-up layers
            # reading the producer's KV from the previous pass (zeros in the first), with the
            # diagonal mask; only the last pass commits to the cache and passes its output on."
            group_producers = [p for p in self.plan.producers if start <= p < stop]
            zeros = torch.zeros(n, cfg.num_key_value_heads, cfg.head_dim)
            pass_kv = dict(self.cache)  # committed K/V of lower slices, read as they are
            pass_kv.update({p: (zeros, zeros) for p in group_producers})
            for _ in range(passes):
                out = h
                for i in range(start, stop):
                    out = self.layer_forward(i, out, positions, pass_kv, append=False)
            for p in group_producers:
                self.cache[p] = pass_kv[p]
            h = out
        return self.logits(h)


# ----------------------------------------------------------------------------------------------
# HF-format checkpoints
# ----------------------------------------------------------------------------------------------


def save_pretrained(model: LckvLlama, directory: str) -> None:
    """Write config.json and a float32 model.safetensors with the published key names."""
    from safetensors.torch import save_file

    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "config.json"), "w") as f:
        json.dump(model.cfg.to_hf_dict(), f, indent=2, sort_keys=True)
        f.write("\n")
    tensors = {}
    for name, p in model.state_dict().items():
        if model.cfg.tie_word_embeddings and name == "lm_head.weight":
            continue  # tied: the checkpoint holds only model.embed_tokens.weight, as HF writes it
        tensors[name] = p.detach().to(torch.float32).contiguous().clone()
    save_file(tensors, os.path.join(directory, "model.safetensors"), metadata={"format": "pt"})


def load_pretrained(directory: str) -> LckvLlama:
    from safetensors.torch import load_file

    with open(os.path.join(directory, "config.json")) as f:
        cfg = LckvConfig.from_hf_dict(json.load(f))
    model = LckvLlama(cfg)
    tensors = load_file(os.path.join(directory, "model.safetensors"))
    if cfg.tie_word_embeddings:
        tensors["lm_head.weight"] = tensors["model.embed_tokens.weight"]
    model.load_state_dict(tensors, strict=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model


def plan_summary(cfg: LckvConfig) -> dict:
    return {
        "src": list(cfg.plan.src),
        "sliding": list(cfg.plan.sliding),
        "producers": cfg.plan.producers,
        "slices": [{"start": a, "stop": b, "cyclic": c} for a, b, c in cfg.plan.slices()],
    }


__all__ = ["KvPlan", "LckvConfig", "LckvLlama", "save_pretrained", "load_pretrained", "plan_summary"]
