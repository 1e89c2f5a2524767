"""Re-derive every LCKV fixture with a second implementation: plain numpy, float64, no torch.

Owns: a from-scratch reading of the checkpoints (safetensors parsed by hand, config.json) and of
the technique (DESIGN.md, "The technique, precisely"), written without the transformers modules
the PyTorch reference borrows. It recomputes all five logits files of each plan folder and
compares them with the stored float32 ones. Needs only numpy:

    /work/main/.venv/bin/python tests/reference/check_lckv_fixtures.py [tests/fixtures/lckv]
"""

from __future__ import annotations

import json
import os
import struct
import sys

import numpy as np

TOLERANCE = 2e-4  # float64 here vs float32 there, through up to 22 layers


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    with open(path, "rb") as f:
        data = f.read()
    (header_len,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + header_len])
    body = data[8 + header_len :]
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        assert info["dtype"] == "F32", f"{name}: {info['dtype']}"
        a, b = info["data_offsets"]
        out[name] = np.frombuffer(body[a:b], dtype="<f4").reshape(info["shape"]).astype(np.float64)
    return out


class Model:
    def __init__(self, folder: str):
        with open(os.path.join(folder, "config.json")) as f:
            c = json.load(f)
        self.w = read_safetensors(os.path.join(folder, "model.safetensors"))
        if "lm_head.weight" not in self.w:
            assert c["tie_word_embeddings"]
            self.w["lm_head.weight"] = self.w["model.embed_tokens.weight"]
        self.L = c["num_hidden_layers"]
        self.H = c["num_attention_heads"]
        self.Hkv = c["num_key_value_heads"]
        self.d = c["head_dim"]
        self.eps = c["rms_norm_eps"]
        self.window = c["sliding_window"]
        self.nodiag = c["force_nodiag"]
        self.passes = c["forward_passes"] + c["backward_passes"]
        toks = c["layer_types"].split("_")
        self.src = [int(t.rstrip("s")) for t in toks]
        self.sliding = [t.endswith("s") for t in toks]
        self.inv_freq = c["rope_theta"] ** (-np.arange(0, self.d, 2) / self.d)

    def p(self, name: str) -> np.ndarray:
        return self.w[name]

    def rms(self, x, name):
        return x / np.sqrt((x * x).mean(-1, keepdims=True) + self.eps) * self.p(name)

    def rope(self, x, pos):  # x [T, n, d]; halves rotated as pairs (i, i + d/2)
        ang = pos[:, None] * self.inv_freq[None, :]
        cos, sin = np.cos(ang)[:, None, :], np.sin(ang)[:, None, :]
        a, b = x[..., : self.d // 2], x[..., self.d // 2 :]
        return np.concatenate([a * cos - b * sin, b * cos + a * sin], axis=-1)

    def layer(self, i, h, pos, kv, replace):
        pre = f"model.layers.{i}."
        T = h.shape[0]
        x = self.rms(h, pre + "input_layernorm.weight")
        q = self.rope((x @ self.p(pre + "self_attn.q_proj.weight").T).reshape(T, self.H, self.d), pos)
        if i in self.src:
            k = self.rope((x @ self.p(pre + "self_attn.k_proj.weight").T).reshape(T, self.Hkv, self.d), pos)
            v = (x @ self.p(pre + "self_attn.v_proj.weight").T).reshape(T, self.Hkv, self.d)
            kv[i] = (k, v) if replace else (np.concatenate([kv[i][0], k]), np.concatenate([kv[i][1], v]))
        K, V = kv[self.src[i]]
        out = np.zeros((T, self.H, self.d))
        for a in range(T):
            t = pos[a]
            hi = t - 1 if (self.nodiag or self.src[i] > i) else t  # last visible key position
            lo = max(0, hi - self.window + 1) if self.sliding[i] else 0
            if hi < lo:
                continue  # sees nothing: zero attention output
            for head in range(self.H):
                g = head // (self.H // self.Hkv)
                s = K[lo : hi + 1, g] @ q[a, head] / np.sqrt(self.d)
                e = np.exp(s - s.max())
                out[a, head] = (e / e.sum()) @ V[lo : hi + 1, g]
        h = h + out.reshape(T, -1) @ self.p(pre + "self_attn.o_proj.weight").T
        y = self.rms(h, pre + "post_attention_layernorm.weight")
        gate = y @ self.p(pre + "mlp.gate_proj.weight").T
        up = y @ self.p(pre + "mlp.up_proj.weight").T
        return h + ((gate / (1 + np.exp(-gate))) * up) @ self.p(pre + "mlp.down_proj.weight").T

    def head(self, h):
        return self.rms(h, "model.norm.weight") @ self.p("lm_head.weight").T

    def empty_cache(self):
        z = np.zeros((0, self.Hkv, self.d))
        return {p: (z, z) for p in set(self.src)}

    def decode(self, cache, tok):
        t = cache[self.src[0]][0].shape[0]
        h = self.p("model.embed_tokens.weight")[[tok]]
        for i in range(self.L):
            h = self.layer(i, h, np.array([t]), cache, replace=False)
        return self.head(h)[0]

    def sequential(self, tokens):
        cache = self.empty_cache()
        return cache, np.stack([self.decode(cache, t) for t in tokens])

    def iterative(self, tokens):
        if len(tokens) <= self.passes:
            return self.sequential(tokens)
        T, cache = len(tokens), self.empty_cache()
        pos = np.arange(T)
        h = self.p("model.embed_tokens.weight")[tokens]
        i = 0
        while i < self.L:
            if self.src[i] <= i:  # reads itself or below: one pass, committed
                h = self.layer(i, h, pos, cache, replace=True)
                i += 1
                continue
            top = self.src[i]  # grow the cyclic group until nothing in it reads above it
            while max(self.src[i : top + 1]) > top:
                top = max(self.src[i : top + 1])
            group = range(i, top + 1)
            kv = dict(cache)
            zero = np.zeros((T, self.Hkv, self.d))
            kv.update({p: (zero, zero) for p in group if p in self.src})
            for _ in range(self.passes):  # every pass from the same input; attend-up reads last pass
                out = h
                for j in group:
                    out = self.layer(j, out, pos, kv, replace=True)
            cache.update({p: kv[p] for p in group if p in self.src})
            h, i = out, top + 1
        return cache, self.head(h)


def check_folder(folder: str) -> float:
    with open(os.path.join(folder, "cases.json")) as f:
        cases = json.load(f)["cases"]
    m = Model(folder)
    got = {}
    _, got["prefix5"] = m.sequential(cases["prefix5"]["tokens"])
    for mode in ("iterative", "sequential"):
        cache, got[f"prompt_{mode}"] = getattr(m, mode)(cases[f"prompt_{mode}"]["tokens"])
        case = cases[f"decode_after_{mode}"]
        got[f"decode_after_{mode}"] = np.stack([m.decode(cache, t) for t in case["input_tokens"]])
        assert int(got[f"decode_after_{mode}"][-1].argmax()) == case["next_token"]
    worst = 0.0
    for name, value in got.items():
        want = np.load(os.path.join(folder, cases[name]["logits"]))
        assert want.dtype == np.dtype("<f4") and want.shape == value.shape, (name, want.dtype, want.shape)
        diff = float(np.abs(want - value).max())
        assert diff <= TOLERANCE, f"{folder} {name}: max abs diff {diff} > {TOLERANCE}"
        worst = max(worst, diff)
    return worst


def main() -> None:
    root = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "fixtures", "lckv")
    folders = sorted(d for d in os.listdir(root) if os.path.isfile(os.path.join(root, d, "cases.json")))
    assert folders, f"no plan folders under {root}"
    for d in folders:
        print(f"{d:22s} max abs diff {check_folder(os.path.join(root, d)):.2e} (tolerance {TOLERANCE})", flush=True)
    print(f"{len(folders)} passed, 0 failed")


if __name__ == "__main__":
    main()
