"""Make the Phi-3 fixtures `lckv convert` is tested against (tests/fixtures/phi3_tiny/ and
tests/fixtures/phi3_partial_rotary/).

Owns: the two random Phi-3 models (fixed seeds), the prompt, and the logits transformers'
`Phi3ForCausalLM` gives for it. Nothing here is lckv code: the oracle is transformers itself.
Run on the CPU in float32:

    python3 tests/reference/make_phi3_fixture.py --out tests/fixtures

Each folder holds what `save_pretrained` wrote (config.json, model.safetensors,
generation_config.json), cases.json (token ids, which RoPE factors each logits file used, the
library versions, the self-check figures) and float32 .npy logits:

- `logits_long.npy`   the whole prompt (longer than original_max_position_embeddings, so
                      transformers uses the long factors), sliding window as configured;
- `logits_short.npy`  the first `n_short` tokens (= original_max_position_embeddings, so the
                      short factors), sliding window as configured;
- `logits_long_nowindow.npy` (only where a window is set) the whole prompt with the window
                      switched off: what llama.cpp computes, since it ignores Phi-3's window.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import traceback

import numpy as np
import torch
import transformers
from transformers import Phi3Config, Phi3ForCausalLM

# phi3_tiny: every Phi-3 feature the converter handles (fused QKV with GQA, fused gate/up,
# LongRoPE with both factor sets and the attention factor, a sliding window shorter than the
# prompt). phi3_partial_rotary: Phi-4-mini's partial rotary embedding (half of each head rotated).
FIXTURES = [
    dict(
        name="phi3_tiny",
        seed=3,
        vocab=256,
        hidden=64,
        layers=3,
        heads=4,
        kv_heads=2,
        inter=128,
        max_pos=256,
        orig=16,
        window=12,
        partial_rotary=1.0,
        theta=25000.0,
        n_prompt=20,
    ),
    dict(
        name="phi3_partial_rotary",
        seed=5,
        vocab=128,
        hidden=32,
        layers=2,
        heads=2,
        kv_heads=1,
        inter=64,
        max_pos=64,
        orig=16,
        window=None,
        partial_rotary=0.5,
        theta=10000.0,
        n_prompt=20,
    ),
]
MAX_FIXTURE_BYTES = 1024 * 1024


def factors(g: torch.Generator, n: int, lo: float, hi: float) -> list[float]:
    """Increasing factors in [lo, hi], rounded so JSON and float32 hold the same values."""
    x = torch.sort(torch.rand(n, generator=g, dtype=torch.float64)).values
    return [round(float(lo + (hi - lo) * v), 3) for v in x]


def build(f: dict) -> tuple[Phi3ForCausalLM, dict]:
    g = torch.Generator().manual_seed(f["seed"])
    head_dim = f["hidden"] // f["heads"]
    n_fac = int(head_dim * f["partial_rotary"]) // 2
    rope = {
        "rope_type": "longrope",
        "rope_theta": f["theta"],
        "original_max_position_embeddings": f["orig"],
        "partial_rotary_factor": f["partial_rotary"],
        # Real checkpoints: short factors near 1, long ones growing to tens (Phi-3-mini-128k).
        "short_factor": factors(g, n_fac, 1.0, 1.5),
        "long_factor": factors(g, n_fac, 1.0, 24.0),
    }
    common = dict(
        vocab_size=f["vocab"],
        hidden_size=f["hidden"],
        intermediate_size=f["inter"],
        num_hidden_layers=f["layers"],
        num_attention_heads=f["heads"],
        num_key_value_heads=f["kv_heads"],
        max_position_embeddings=f["max_pos"],
        original_max_position_embeddings=f["orig"],
        sliding_window=f["window"],
        rms_norm_eps=1e-5,
        bos_token_id=1,
        eos_token_id=2,
        pad_token_id=0,
        tie_word_embeddings=False,
    )
    try:
        cfg = Phi3Config(rope_parameters=rope, **common)
    except TypeError:
        # transformers 4.x spells it rope_scaling, with rope_theta beside it.
        old = {
            k: v for k, v in rope.items() if k not in ("rope_theta", "partial_rotary_factor", "original_max_position_embeddings")
        }
        old["type"] = old.pop("rope_type")
        cfg = Phi3Config(
            rope_scaling=old,
            rope_theta=f["theta"],
            partial_rotary_factor=f["partial_rotary"],
            **common,
        )
    model = Phi3ForCausalLM(cfg).float().eval()
    impl = "default"
    try:
        model.set_attn_implementation("eager")
        impl = "eager"
    except Exception as e:  # older versions: the attribute alone
        print("set_attn_implementation failed:", e)
        try:
            model.config._attn_implementation = "eager"
            impl = "eager (attribute)"
        except Exception as e2:
            print("could not select eager attention:", e2)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.ndim == 1:
                # RMSNorm weights away from 1, so a norm applied to the wrong tensor shows.
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g))
            elif "embed_tokens" in name:
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                # Variance-preserving, so logits stay O(1..10) through the layers.
                p.copy_(torch.randn(p.shape, generator=g) / math.sqrt(p.shape[1]))
    prompt = torch.randint(3, f["vocab"], (f["n_prompt"],), generator=g).tolist()
    return model, {"prompt": prompt, "attn_implementation": impl}


def logits(model: Phi3ForCausalLM, ids: list[int]) -> np.ndarray:
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids]), use_cache=False)
    return out.logits[0].float().numpy().astype("<f4")


def make(f: dict, root: str) -> None:
    out = os.path.join(root, f["name"])
    shutil.rmtree(out, ignore_errors=True)
    model, meta = build(f)
    ids = meta["prompt"]
    n_short = f["orig"]
    assert len(ids) > n_short, "the whole prompt must need the long factors"
    short_a = logits(model, ids[:n_short])
    long_ = logits(model, ids)
    # The factor set is chosen per call from the sequence length; going back to a short prompt
    # must give the short-factor logits again (no state kept from the long call).
    short_b = logits(model, ids[:n_short])
    checks = {
        "short_repeatable_after_long": bool(np.array_equal(short_a, short_b)),
        # Positions before n_short differ only through the factor set: evidence both are used.
        "long_vs_short_first_positions_max_abs": float(np.abs(long_[:n_short] - short_a).max()),
        "max_abs_logit": float(np.abs(long_).max()),
    }
    files = {"logits_long.npy": long_, "logits_short.npy": short_a}
    if f["window"]:
        w = f["window"]
        saved = model.config.sliding_window
        model.config.sliding_window = None
        nowin = logits(model, ids)
        model.config.sliding_window = saved
        again = logits(model, ids)
        checks["window_restored"] = bool(np.array_equal(again, long_))
        checks["window_no_effect_before_w_max_abs"] = float(np.abs(nowin[:w] - long_[:w]).max())
        checks["window_effect_from_w_max_abs"] = float(np.abs(nowin[w:] - long_[w:]).max())
        files["logits_long_nowindow.npy"] = nowin
    print(f["name"], json.dumps(checks))
    model.save_pretrained(out)
    for n, a in files.items():
        np.save(os.path.join(out, n), a)
    cases = {
        "prompt": ids,
        "n_short": n_short,
        "what": {
            "logits_long.npy": f"all {len(ids)} prompt positions; long factors (length > original_max_position_embeddings)",
            "logits_short.npy": f"first {n_short} tokens alone; short factors (length <= original_max_position_embeddings)",
            "logits_long_nowindow.npy": "as logits_long.npy with config.sliding_window = None",
        },
        "attn_implementation": meta["attn_implementation"],
        "checks": checks,
        "spec": f,
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "numpy": np.__version__,
        },
    }
    with open(os.path.join(out, "cases.json"), "w") as fh:
        json.dump(cases, fh, indent=1)
    size = sum(os.path.getsize(os.path.join(out, n)) for n in os.listdir(out))
    print(f["name"], "bytes", size, sorted(os.listdir(out)))
    assert size < MAX_FIXTURE_BYTES, f"{f['name']} is {size} bytes"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="tests/fixtures")
    a = ap.parse_args()
    torch.set_num_threads(1)
    print("torch", torch.__version__, "transformers", transformers.__version__)
    for f in FIXTURES:
        try:
            make(f, a.out)
        except Exception:
            traceback.print_exc()
    for f in FIXTURES:
        path = os.path.join(a.out, f["name"], "config.json")
        if os.path.exists(path):
            with open(path) as fh:
                print(fh.read())


if __name__ == "__main__":
    main()
