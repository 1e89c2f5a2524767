"""Held-out evaluation of a distilled student against its teacher, PyTorch side (`distill.py evaluate`).

Owns: for each held-out token file (the teacher's answers to held-out prompts in chat format, the
same answers as plain text, the held-out prose, Emma), the perplexity of the student and of the
teacher by llama-perplexity's method (chunks of `ctx` tokens, the second half of each scored, as
`lckv perplexity` does) and the student's mean KL(teacher || student) on the scored positions.
The student runs all m + b passes (the trained iterative prefill) in float32, the teacher once.
Writes one JSON file.
"""

from __future__ import annotations

import json
import os

import numpy as np
import torch

from distill_train import _chunk_losses
from lckv_batched import BatchedLckv
from lckv_model import LckvConfig


def load_student(hf_dir: str) -> BatchedLckv:
    from safetensors.torch import load_file

    cfg = LckvConfig.from_hf_dict(json.load(open(os.path.join(hf_dir, "config.json"))))
    model = BatchedLckv(cfg)
    sd = load_file(os.path.join(hf_dir, "model.safetensors"))
    if cfg.tie_word_embeddings:
        sd["lm_head.weight"] = sd["model.embed_tokens.weight"]
    model.load_state_dict(sd, strict=True)
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.eval()


@torch.no_grad()
def score(student: BatchedLckv, teacher: BatchedLckv, ids: np.ndarray, ctx: int, max_chunks: int, rows: int,
          device) -> dict:
    n = min(max_chunks, len(ids) // ctx)
    if n == 0:
        return {"chunks": 0}
    chunks = torch.from_numpy(ids[: n * ctx].astype(np.int64)).view(n, ctx)
    first = ctx // 2
    nll_s = nll_t = kl = 0.0
    count = 0
    for c in range(0, n, rows):
        x = chunks[c : c + rows].to(device)
        hs, ht = student.hidden_batch(x)[:, first:-1], teacher.hidden_batch(x)[:, first:-1]
        tgt = x[:, first + 1 :].reshape(-1)
        hs, ht = hs.reshape(-1, hs.shape[-1]), ht.reshape(-1, ht.shape[-1])
        k, ce_s = _chunk_losses(hs, ht, tgt, student.model.norm, student.lm_head, teacher.model.norm, teacher.lm_head)
        _, ce_t = _chunk_losses(ht, ht, tgt, teacher.model.norm, teacher.lm_head, teacher.model.norm, teacher.lm_head)
        nll_s, nll_t, kl, count = nll_s + ce_s.item(), nll_t + ce_t.item(), kl + k.item(), count + len(tgt)
    return {"chunks": n, "scored": count, "ppl": float(np.exp(nll_s / count)),
            "teacher_ppl": float(np.exp(nll_t / count)), "kl_to_teacher": kl / count}


def run(a, teacher: BatchedLckv, device, sets: dict[str, np.ndarray]):
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = False
    student = load_student(a.hf).to(device)
    teacher = teacher.to(device).float().eval()
    report = {"hf": a.hf, "layer_types": student.cfg.layer_types, "ctx": a.ctx, "max_chunks": a.chunks}
    for name, ids in sets.items():
        report[name] = score(student, teacher, ids, a.ctx, a.chunks, a.rows, device)
        r = report[name]
        if r["chunks"]:
            print(f"evaluate {name}: {r['chunks']} chunks, ppl {r['ppl']:.4f} (teacher {r['teacher_ppl']:.4f}), "
                  f"KL to teacher {r['kl_to_teacher']:.4f}", flush=True)
    json.dump(report, open(a.out, "w"), indent=1)
    return report
