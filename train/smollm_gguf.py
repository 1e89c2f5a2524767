"""SmolLM2 weights from its llama.cpp GGUF, in Hugging Face Llama layout (numpy only).

Owns: dequantizing every tensor, renaming llama.cpp's tensor names to HF's, and undoing the
Q/K row permutation llama.cpp's converter applies for its RoPE layout (HF rotates the two halves
of each head; llama.cpp rotates adjacent pairs, so the converter interleaves each head's rows).
Used here and on the GPU machine, so it needs only numpy and the `gguf` package.
"""

from __future__ import annotations

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

HF_NAMES = {
    "attn_q": "self_attn.q_proj",
    "attn_k": "self_attn.k_proj",
    "attn_v": "self_attn.v_proj",
    "attn_output": "self_attn.o_proj",
    "ffn_gate": "mlp.gate_proj",
    "ffn_up": "mlp.up_proj",
    "ffn_down": "mlp.down_proj",
    "attn_norm": "input_layernorm",
    "ffn_norm": "post_attention_layernorm",
}


def _field(reader: GGUFReader, key: str):
    f = reader.fields[key]
    v = f.parts[f.data[0]]
    return v.tobytes().decode() if v.dtype == np.uint8 else v.item()


def unpermute(w: np.ndarray, n_head: int) -> np.ndarray:
    """Inverse of llama.cpp's `permute`: rows (head, pair, 2) back to (head, 2, half)."""
    rows = w.shape[0]
    half = rows // n_head // 2
    return w.reshape(n_head, half, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str) -> tuple[dict, dict[str, np.ndarray]]:
    """Returns (config fields for LckvConfig, {HF tensor name: float32 array})."""
    r = GGUFReader(path)
    arch = _field(r, "general.architecture")
    if arch != "llama":
        raise ValueError(f"{path} is a {arch!r} model; this loader reads llama GGUFs only")
    n_head = _field(r, "llama.attention.head_count")
    n_kv = _field(r, "llama.attention.head_count_kv")
    hidden = _field(r, "llama.embedding_length")
    cfg = dict(
        vocab_size=int(r.fields["tokenizer.ggml.tokens"].data.__len__()),
        hidden_size=hidden,
        num_hidden_layers=_field(r, "llama.block_count"),
        num_attention_heads=n_head,
        num_key_value_heads=n_kv,
        head_dim=hidden // n_head,
        intermediate_size=_field(r, "llama.feed_forward_length"),
        rope_theta=float(_field(r, "llama.rope.freq_base")),
        rms_norm_eps=float(_field(r, "llama.attention.layer_norm_rms_epsilon")),
        max_position_embeddings=_field(r, "llama.context_length"),
    )
    out: dict[str, np.ndarray] = {}
    for t in r.tensors:
        w = dequantize(t.data, t.tensor_type).astype(np.float32).reshape([int(x) for x in reversed(t.shape)])
        parts = t.name.split(".")
        if t.name == "token_embd.weight":
            name = "model.embed_tokens.weight"
        elif t.name == "output_norm.weight":
            name = "model.norm.weight"
        elif t.name == "output.weight":
            name = "lm_head.weight"
        elif parts[0] == "blk":
            kind = parts[2]
            if kind == "attn_q":
                w = unpermute(w, n_head)
            elif kind == "attn_k":
                w = unpermute(w, n_kv)
            name = f"model.layers.{parts[1]}.{HF_NAMES[kind]}.weight"
        else:
            raise ValueError(f"unexpected tensor {t.name} in {path}")
        out[name] = np.ascontiguousarray(w)
    cfg["tie_word_embeddings"] = "lm_head.weight" not in out
    return cfg, out
