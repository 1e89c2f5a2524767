"""Batched, differentiable forward of the reference LCKV Llama, for training and fast evaluation.

Owns: `BatchedLckv`, a subclass of the reference model in tests/reference/lckv_model.py (same
modules, same parameter names, same checkpoints) whose `forward_batch` runs [batch, time] token
ids through the KV plan with PyTorch's fused attention, and the LCKV training scheme: a cyclic
group (layers that attend up) runs m + b passes from the same input hidden states; the first
passes run without gradient, the last `grad_passes` keep it, the first of them reading the
detached K/V of the pass before and each later one the K/V of its predecessor, so the gradient
flows back through the last b passes (the LCKV paper's gradient stopping). Evaluation runs all
m + b passes without gradient, which is the reference's iterative prefill; `check_against_reference`
in train_lckv.py compares the two.

`hidden_batch` is the same forward without the head, for losses that apply the head in chunks.

Also: the SmolLM2 plans and `from_smollm`, which puts SmolLM2's weights under a plan (consumer
layers' k/v projections are dropped).
"""

from __future__ import annotations

import os
import sys

import torch
import torch.nn.functional as F

# The reference model lives in the repository's tests/reference (beside train/, or under the
# working directory when these scripts run from a staging copy).
for _root in (os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."), os.getcwd()):
    if os.path.exists(os.path.join(_root, "tests", "reference", "lckv_model.py")):
        sys.path.insert(0, os.path.join(_root, "tests", "reference"))
        break
from lckv_model import LckvConfig, LckvLlama  # noqa: E402


def _plan_string(src: list[int]) -> str:
    return "_".join(str(s) for s in src)


def smollm_plans(n: int = 30) -> dict[str, tuple[str, bool]]:
    """name -> (layer_types, force_nodiag) for an n-layer model."""
    return {
        "standard": (_plan_string(list(range(n))), False),
        # Cross-layer attention pairs: odd layers read the layer below them.
        "cla2": (_plan_string([i - i % 2 for i in range(n)]), False),
        # LCKV, top layer with a sandwich of 2 warm-up layers (one at each end), as published.
        "lckv-w2": (_plan_string([0] + [n - 2] * (n - 2) + [n - 1]), True),
        # Every middle layer reads layer n/2 - 1 (the lower half attends up to it).
        "sandwich-middle": (_plan_string([0] + [n // 2 - 1] * (n - 2) + [n - 1]), True),
        # Six caches: the two sandwich layers keep their own, and the middle layers form four
        # contiguous groups, each reading its group's middle layer (30 layers: producers 0, 4,
        # 11, 18, 25, 29). No consumer is more than three layers from its producer; the lower
        # half of a group attends up (a cyclic group of at most 4 layers), the upper half down.
        "sandwich-6": (_plan_string(_grouped_middle(n, 4)), True),
    }


def _grouped_middle(n: int, groups: int) -> list[int]:
    """src of a sandwich plan whose middle layers 1..n-2 read the middle of their own group."""
    src = [0] * n
    src[n - 1] = n - 1
    middle = list(range(1, n - 1))
    size, extra = divmod(len(middle), groups)
    start = 0
    for g in range(groups):
        members = middle[start : start + size + (g < extra)]
        start += len(members)
        for i in members:
            src[i] = members[len(members) // 2]
    return src


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    a, b = x.chunk(2, dim=-1)
    return torch.cat((-b, a), dim=-1)


class BatchedLckv(LckvLlama):
    def rope_tables(self, t: int, device, dtype) -> tuple[torch.Tensor, torch.Tensor]:
        positions = torch.arange(t, device=device)[None]
        probe = torch.empty(1, device=device, dtype=torch.float32)
        cos, sin = self.rotary_emb(probe, positions)  # [1, T, d] float32
        return cos[:, None].to(dtype), sin[:, None].to(dtype)  # [1, 1, T, d]

    def _layer(self, i: int, h: torch.Tensor, rope, kv: dict) -> torch.Tensor:
        cfg, layer = self.cfg, self.model.layers[i]
        attn = layer.self_attn
        bsz, t, _ = h.shape
        nh, nkv, d = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        cos, sin = rope
        x = layer.input_layernorm(h)
        q = attn.q_proj(x).view(bsz, t, nh, d).transpose(1, 2)
        q = q * cos + _rotate_half(q) * sin
        if self.plan.is_producer(i):
            k = attn.k_proj(x).view(bsz, t, nkv, d).transpose(1, 2)
            k = k * cos + _rotate_half(k) * sin
            v = attn.v_proj(x).view(bsz, t, nkv, d).transpose(1, 2)
            kv[i] = (k, v)
        k, v = kv[self.plan.src[i]]
        group = nh // nkv
        k = k.repeat_interleave(group, dim=1).to(q.dtype)
        v = v.repeat_interleave(group, dim=1).to(q.dtype)
        if self.masks_diagonal(i):
            # Query t sees keys 0..t-1: a causal attention of queries 1.. over keys ..T-2. The
            # first query sees nothing and gets a zero output.
            o = F.scaled_dot_product_attention(q[:, :, 1:], k[:, :, :-1], v[:, :, :-1], is_causal=True)
            o = torch.cat([torch.zeros_like(q[:, :, :1]), o], dim=2)
        else:
            o = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        h = h + attn.o_proj(o.transpose(1, 2).reshape(bsz, t, nh * d))
        return h + layer.mlp(layer.post_attention_layernorm(h))

    def forward_batch(self, tokens: torch.Tensor, grad_passes: int = 0, dtype=torch.float32) -> torch.Tensor:
        """Logits [B, T, vocab] of the final pass; `grad_passes` of the m + b passes keep gradient."""
        return self.logits(self.hidden_batch(tokens, grad_passes, dtype))

    def hidden_batch(self, tokens: torch.Tensor, grad_passes: int = 0, dtype=torch.float32) -> torch.Tensor:
        """The last layer's output [B, T, hidden] (before the final norm), as `forward_batch` runs it."""
        cfg = self.cfg
        passes = cfg.forward_passes + cfg.backward_passes
        if not 0 <= grad_passes <= passes:
            raise ValueError(f"grad_passes must be in 0..{passes}")
        bsz, t = tokens.shape
        rope = self.rope_tables(t, tokens.device, dtype)
        h = self.model.embed_tokens(tokens)
        kv: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
        for start, stop, cyclic in self.plan.slices():
            if not cyclic:
                for i in range(start, stop):
                    h = self._layer(i, h, rope, kv)
                continue
            zeros = torch.zeros(bsz, cfg.num_key_value_heads, t, cfg.head_dim, device=h.device, dtype=dtype)
            group_producers = [p for p in self.plan.producers if start <= p < stop]
            for p in group_producers:
                kv[p] = (zeros, zeros)
            out = h
            with torch.no_grad():
                for _ in range(passes - grad_passes):
                    out = h
                    for i in range(start, stop):
                        out = self._layer(i, out, rope, kv)
            for p in group_producers:
                kv[p] = (kv[p][0].detach(), kv[p][1].detach())
            for _ in range(grad_passes):
                out = h
                for i in range(start, stop):
                    out = self._layer(i, out, rope, kv)
            h = out
        return h


def from_smollm(base_cfg: dict, weights: dict[str, torch.Tensor], plan: str, m: int = 7, b: int = 2) -> BatchedLckv:
    """SmolLM2 (HF-layout weights) under a plan of `smollm_plans`."""
    layer_types, nodiag = smollm_plans(base_cfg["num_hidden_layers"])[plan]
    cfg = LckvConfig(**base_cfg, layer_types=layer_types, force_nodiag=nodiag, forward_passes=m, backward_passes=b)
    model = BatchedLckv(cfg)
    wanted = model.state_dict()
    sd = {k: v for k, v in weights.items() if k in wanted}
    if cfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    missing = set(wanted) - set(sd)
    if missing:
        raise ValueError(f"weights lack {sorted(missing)[:4]}")
    model.load_state_dict(sd, strict=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model
