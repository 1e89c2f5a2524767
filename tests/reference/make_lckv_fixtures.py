"""Make the small LCKV fixtures the Rust runtime is tested against (tests/fixtures/lckv/<plan>/).

Owns: the plans, the random models (fixed seeds), the fixed prompt, the expected logits, and the
self-checks that must pass before anything is written. Run on the CPU in float32:

    python3 tests/reference/make_lckv_fixtures.py --out tests/fixtures/lckv

Each plan folder holds config.json + model.safetensors (HF format, published LCKV key names),
cases.json (token ids, what each .npy holds, the self-check figures) and float32 little-endian
.npy logits.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys

import numpy as np
import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from lckv_model import LckvConfig, LckvLlama, load_pretrained, plan_summary, save_pretrained  # noqa: E402

# Shape shared by every fixture model: small enough that seven plans fit in < 3 MiB, with every
# row length a multiple of 32 (so the same weights can later be block-quantized), GQA groups of 2.
SHAPE = dict(
    vocab_size=128,
    hidden_size=32,
    num_attention_heads=4,
    num_key_value_heads=2,
    head_dim=8,
    intermediate_size=32,
    rope_theta=10000.0,
    rms_norm_eps=1e-5,
    max_position_embeddings=128,
    forward_passes=7,
    backward_passes=2,
)
PROMPT_LEN = 40
DECODE_STEPS = 16
PREFIX_LEN = 5
MAX_FIXTURE_BYTES = 3 * 1024 * 1024
# float32 reference vs float32 reference computed in another order (parallel vs token by token,
# or transformers' own Llama); logits are O(1..10).
TOLERANCE = 1e-4


def ids(*xs) -> str:
    return "_".join(str(x) for x in xs)


def plans() -> list[dict]:
    """The KV plans. L = 22 for the published LCKV plans, which then apply literally."""
    L = 22
    return [
        dict(
            name="standard",
            n_layers=8,
            layer_types=ids(*range(8)),
            force_nodiag=False,
            about="Identity plan with force_nodiag off: a plain Llama, checked against "
            "transformers' LlamaForCausalLM.",
        ),
        dict(
            name="lckv_top_w2",
            n_layers=L,
            layer_types=ids(0, *[L - 2] * (L - 2), L - 1),
            force_nodiag=True,
            about="LCKV top layer, w=2 sandwich warm-up: layers 0 and 21 own KV, layers 1-20 read "
            "layer 20 (the published tinyllama-lckv-w2 plan).",
        ),
        dict(
            name="lckv_w10",
            n_layers=L,
            layer_types=ids(0, 1, 2, 3, 4, *[16] * 12, 17, 18, 19, 20, 21),
            force_nodiag=True,
            about="LCKV w=10: the warm-up layers are split sandwich-style, w/2 = 5 at the bottom "
            "(0-4) and 5 at the top (17-21), each with its own KV; the condensed middle 5-16 reads "
            "layer 16, the top of the condensed block (as w=2 puts one warm-up layer at each end "
            "and the condensed block reads its own top layer).",
        ),
        dict(
            name="lckv_sandwich_middle",
            n_layers=L,
            layer_types=ids(0, *[10] * (L - 2), L - 1),
            force_nodiag=True,
            about="Sandwich-middle (LCKV repo README): warm-up layers 0 and 21 own KV, layers "
            "1-20 all read the middle layer 10; layers 1-9 attend up (one cyclic group 1-10), "
            "11-20 attend down.",
        ),
        dict(
            name="cla_pairs",
            n_layers=8,
            layer_types=ids(0, 0, 2, 2, 4, 4, 6, 6),
            force_nodiag=False,
            tie_word_embeddings=True,
            about="Cross-layer attention pairs: odd layers read the even layer below; diagonal "
            "visible (force_nodiag off); tied embeddings (no lm_head.weight in the checkpoint).",
        ),
        dict(
            name="yoco",
            n_layers=8,
            layer_types="0s_1s_2s_3s_4_4_4_4",
            sliding_window=8,
            force_nodiag=True,
            about="YOCO-like: bottom half own sliding-window KV (window 8), top half all read the "
            "middle layer 4; every layer masks the diagonal, so a window layer sees t-8..t-1.",
        ),
        dict(
            name="yoco_diag",
            n_layers=8,
            layer_types="0s_1s_2s_3s_4_4_4_4",
            sliding_window=8,
            force_nodiag=False,
            about="As yoco with force_nodiag off: a window layer sees t-7..t, the top half reads "
            "layer 4 at 0..t.",
        ),
    ]


def make_config(p: dict) -> LckvConfig:
    return LckvConfig(
        num_hidden_layers=p["n_layers"],
        layer_types=p["layer_types"],
        force_nodiag=p["force_nodiag"],
        sliding_window=p.get("sliding_window", 4096),
        tie_word_embeddings=p.get("tie_word_embeddings", False),
        **SHAPE,
    )


@torch.no_grad()
def init_weights(model: LckvLlama, seed: int) -> None:
    """Random weights scaled so attention is peaked and logits far from flat."""
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():
        if name.endswith("norm.weight"):
            p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))
        elif name == "model.embed_tokens.weight":
            p.copy_(torch.randn(p.shape, generator=g))
        elif name == "lm_head.weight":
            p.copy_(torch.randn(p.shape, generator=g) * 2.5 / math.sqrt(p.shape[1]))
        elif name.endswith(("q_proj.weight", "k_proj.weight")):
            p.copy_(torch.randn(p.shape, generator=g) * 1.5 / math.sqrt(p.shape[1]))
        else:
            p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))


def greedy_decode(model: LckvLlama, first: int, steps: int) -> tuple[list[int], int, torch.Tensor]:
    """Feed `first`, then each argmax, `steps` times. Returns (fed tokens, next token, logits)."""
    fed, rows, tok = [], [], first
    for _ in range(steps):
        fed.append(tok)
        row = model.decode(tok)
        rows.append(row)
        tok = int(row.argmax())
    return fed, tok, torch.stack(rows)


def top2_gap(logits: torch.Tensor) -> float:
    top = logits.topk(2, dim=-1).values
    return float((top[..., 0] - top[..., 1]).min())


def max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max()) if a.numel() else 0.0


def json_text(obj) -> str:
    """Indented JSON with each list of numbers kept on one line (token lists stay readable)."""
    text = json.dumps(obj, indent=1)
    return re.sub(r"\[\s+([-\w.,\s]*?)\s+\]", lambda m: "[" + ", ".join(x.strip() for x in m.group(1).split(",")) + "]", text) + "\n"


def save_npy(path: str, t: torch.Tensor) -> None:
    np.save(path, t.detach().cpu().numpy().astype("<f4"))


@torch.no_grad()
def hf_llama_logits(model: LckvLlama, tokens: list[int]) -> torch.Tensor:
    """The same weights through transformers' own LlamaForCausalLM (standard plan only)."""
    from transformers import LlamaForCausalLM

    hf = LlamaForCausalLM(model.cfg.llama_config()).eval()
    missing, unexpected = hf.load_state_dict(model.state_dict(), strict=False)
    missing = [k for k in missing if "rotary" not in k]
    unexpected = [k for k in unexpected if "rotary" not in k]
    assert not missing and not unexpected, f"HF Llama key mismatch: {missing} {unexpected}"
    return hf(input_ids=torch.tensor([tokens])).logits[0].float()


def check_rope(model: LckvLlama) -> None:
    d, theta = model.cfg.head_dim, model.cfg.rope_theta
    want = 1.0 / theta ** (torch.arange(0, d, 2, dtype=torch.float64) / d)
    got = model.rotary_emb.inv_freq.double()
    assert torch.allclose(got, want, rtol=1e-6), f"RoPE frequencies {got} != {want}"


def build_plan(p: dict, index: int, prompt: list[int], out_dir: str, log) -> dict:
    cfg = make_config(p)
    model = LckvLlama(cfg).eval()
    init_weights(model, seed=1000 + index)
    check_rope(model)
    m_plus_b = cfg.forward_passes + cfg.backward_passes
    cyclic = any(c for _, _, c in cfg.plan.slices())

    prefix = model.forward_sequential(prompt[:PREFIX_LEN])  # (a)
    iterative = model.forward_iterative(prompt)  # (b)
    it_fed, it_next, it_decode = greedy_decode(model, int(iterative[-1].argmax()), DECODE_STEPS)  # (c)
    sequential = model.forward_sequential(prompt)  # (d)
    sq_fed, sq_next, sq_decode = greedy_decode(model, int(sequential[-1].argmax()), DECODE_STEPS)

    checks = {
        "prefix_vs_sequential_max_abs": max_abs(prefix, sequential[:PREFIX_LEN]),
        "iterative_vs_sequential_first_m_plus_b_max_abs": max_abs(iterative[:m_plus_b], sequential[:m_plus_b]),
        "iterative_vs_sequential_after_m_plus_b_max_abs": max_abs(iterative[m_plus_b:], sequential[m_plus_b:]),
        "logit_std": float(iterative.std()),
        "min_top2_gap_decode": min(top2_gap(it_decode), top2_gap(sq_decode)),
    }
    assert checks["prefix_vs_sequential_max_abs"] <= TOLERANCE, checks
    # "After j passes the first j positions are exact": m + b passes, so m + b exact positions.
    assert checks["iterative_vs_sequential_first_m_plus_b_max_abs"] <= TOLERANCE, checks
    if not cyclic:
        # No layer reads a layer above it: the parallel prefill is exact everywhere.
        assert checks["iterative_vs_sequential_after_m_plus_b_max_abs"] <= TOLERANCE, checks
        assert it_fed == sq_fed, (it_fed, sq_fed)
        checks["decode_iterative_vs_sequential_max_abs"] = max_abs(it_decode, sq_decode)
        assert checks["decode_iterative_vs_sequential_max_abs"] <= TOLERANCE, checks
    if p["name"] == "standard":
        hf = hf_llama_logits(model, prompt + it_fed)
        ours = torch.cat([iterative, it_decode])
        checks["hf_llama_max_abs"] = max_abs(hf, ours)
        assert checks["hf_llama_max_abs"] <= TOLERANCE, checks
    assert checks["logit_std"] > 1.0, f"logits too flat: {checks}"

    plan_dir = os.path.join(out_dir, p["name"])
    os.makedirs(plan_dir, exist_ok=True)
    save_pretrained(model, plan_dir)
    # The checkpoint round-trips: reload and reproduce (b) bit for bit.
    again = load_pretrained(plan_dir).eval().forward_iterative(prompt)
    assert torch.equal(again, iterative), "reloaded checkpoint gives different logits"
    with open(os.path.join(plan_dir, "config.json")) as f:
        saved = json.load(f)
    from safetensors import safe_open

    with safe_open(os.path.join(plan_dir, "model.safetensors"), framework="pt") as f:
        keys = set(f.keys())
    for i in range(cfg.num_hidden_layers):
        has_kv = f"model.layers.{i}.self_attn.k_proj.weight" in keys
        assert has_kv == cfg.plan.is_producer(i), f"layer {i}: k_proj present={has_kv}"
    assert ("lm_head.weight" in keys) != cfg.tie_word_embeddings

    save_npy(os.path.join(plan_dir, "prefix5_logits.npy"), prefix)
    save_npy(os.path.join(plan_dir, "prompt_iterative_logits.npy"), iterative)
    save_npy(os.path.join(plan_dir, "decode_after_iterative_logits.npy"), it_decode)
    save_npy(os.path.join(plan_dir, "prompt_sequential_logits.npy"), sequential)
    save_npy(os.path.join(plan_dir, "decode_after_sequential_logits.npy"), sq_decode)

    cases = {
        "plan": p["name"],
        "about": p["about"],
        "layer_types": saved["layer_types"],
        "force_nodiag": saved["force_nodiag"],
        "sliding_window": saved["sliding_window"],
        "forward_passes": cfg.forward_passes,
        "backward_passes": cfg.backward_passes,
        "kv_plan": plan_summary(cfg),
        "seed": 1000 + index,
        "prompt_tokens": prompt,
        "cases": {
            "prefix5": {
                "what": f"logits of the first {PREFIX_LEN} prompt tokens, token by token from an empty cache "
                f"(<= m+b tokens, so this is also what the iterative prefill does)",
                "tokens": prompt[:PREFIX_LEN],
                "logits": "prefix5_logits.npy",
            },
            "prompt_iterative": {
                "what": "logits of all prompt positions through the iterative parallel prefill (m+b passes "
                "over each cyclic group); only the first m+b positions are exact",
                "tokens": prompt,
                "logits": "prompt_iterative_logits.npy",
            },
            "decode_after_iterative": {
                "what": f"after prompt_iterative, {DECODE_STEPS} one-token decode steps; step k feeds "
                f"input_tokens[k] at position {PROMPT_LEN}+k; input_tokens[0] is the argmax of the last "
                "prompt_iterative row, each next one the argmax of the previous step; next_token is the "
                "argmax of the last step",
                "input_tokens": it_fed,
                "next_token": it_next,
                "logits": "decode_after_iterative_logits.npy",
            },
            "prompt_sequential": {
                "what": "logits of all prompt positions, exact token-by-token prefill",
                "tokens": prompt,
                "logits": "prompt_sequential_logits.npy",
            },
            "decode_after_sequential": {
                "what": "as decode_after_iterative, after prompt_sequential",
                "input_tokens": sq_fed,
                "next_token": sq_next,
                "logits": "decode_after_sequential_logits.npy",
            },
        },
        "npy": "float32 little-endian, shape [positions, vocab_size]",
        "self_checks": checks,
        "tolerance": TOLERANCE,
    }
    with open(os.path.join(plan_dir, "cases.json"), "w") as f:
        f.write(json_text(cases))
    log(f"{p['name']:22s} {json.dumps(checks)}")
    return checks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="tests/fixtures/lckv", help="fixture folder to (re)write")
    args = ap.parse_args()

    torch.manual_seed(0)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(1)
    torch.set_default_dtype(torch.float32)

    prompt = torch.randint(0, SHAPE["vocab_size"], (PROMPT_LEN,), generator=torch.Generator().manual_seed(42))
    prompt = [int(x) for x in prompt]

    if os.path.isdir(args.out):
        shutil.rmtree(args.out)
    os.makedirs(args.out)
    import transformers

    print(f"torch {torch.__version__}, transformers {transformers.__version__}, CPU float32", flush=True)
    summary = {}
    for index, p in enumerate(plans()):
        summary[p["name"]] = build_plan(p, index, prompt, args.out, lambda s: print(s, flush=True))

    total = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(args.out) for f in fs)
    print(f"fixtures: {total} bytes", flush=True)
    assert total < MAX_FIXTURE_BYTES, f"fixtures are {total} bytes, over {MAX_FIXTURE_BYTES}"
    with open(os.path.join(args.out, "README.md"), "w") as f:
        f.write(
            "# LCKV fixtures\n\nMade by `tests/reference/make_lckv_fixtures.py` "
            f"(torch {torch.__version__}, transformers {transformers.__version__}, CPU float32). "
            "One folder per KV plan; its cases.json says what each .npy holds and records the "
            "self-checks. Do not edit by hand: regenerate (see tests/reference/README.md).\n"
        )


if __name__ == "__main__":
    main()
