"""Distillation of a condensed-KV student from SmolLM2 (`distill.py distill`).

Owns the training run:
  - data: windows of `seq` tokens cut from the teacher's generations (documents one after another)
    and from the training prose, each row of a batch drawn from the prose with `prose_frac`,
    each source reshuffled every epoch (fixed seed);
  - objective: forward KL(teacher || student) of the next-token distributions on every position,
    plus `ce` x the next-token cross-entropy, with the head and both softmaxes run over chunks of
    tokens under activation checkpointing, so no [tokens x vocab] tensor outlives its chunk;
  - the student as `BatchedLckv` under its plan (float32 weights, bf16 autocast, m passes without
    gradient then b with it), the teacher as the standard plan (the same precision) without
    gradient;
  - AdamW, warm-up and cosine (`distill_guard.Schedule`, its length fitted to the time cap from the
    measured step time), grad-norm clipping, the spike guard (`distill_guard.SpikeGuard`) with an
    in-memory snapshot of the last good state, and a checkpoint on disk every `ckpt_every` seconds
    that `--resume` continues from (same schedule);
  - at the end: DIR/hf (HF checkpoint, published LCKV layout) and DIR/train.json.
"""

from __future__ import annotations

import copy
import json
import os
import time

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from distill_guard import Schedule, SpikeGuard
from lckv_batched import BatchedLckv, from_smollm
from lckv_model import save_pretrained


class Windows:
    """Non-overlapping windows of one token stream, reshuffled each epoch."""

    def __init__(self, ids: np.ndarray, seq: int, gen: torch.Generator):
        n = len(ids) // seq
        if n == 0:
            raise ValueError(f"{len(ids)} tokens make no window of {seq}")
        self.windows = torch.from_numpy(ids[: n * seq].astype(np.int64)).view(n, seq)
        self.gen, self.order, self.pos, self.epoch = gen, torch.randperm(n, generator=gen), 0, 0

    def take(self, k: int) -> torch.Tensor:
        out = []
        while k > 0:
            if self.pos == len(self.order):
                self.order, self.pos, self.epoch = torch.randperm(len(self.windows), generator=self.gen), 0, self.epoch + 1
            got = self.order[self.pos : self.pos + k]
            self.pos += len(got)
            k -= len(got)
            out.append(self.windows[got])
        return torch.cat(out)


class Mixture:
    """Batches of `rows` windows, each from the prose with probability `prose_frac`."""

    def __init__(self, gen_ids: np.ndarray, prose_ids: np.ndarray | None, seq: int, prose_frac: float, seed: int):
        self.rng = torch.Generator().manual_seed(seed)
        self.gen = Windows(gen_ids, seq, self.rng)
        self.prose = Windows(prose_ids, seq, self.rng) if prose_ids is not None and prose_frac > 0 else None
        self.prose_frac = prose_frac if self.prose else 0.0

    def next(self, rows: int) -> torch.Tensor:
        n_prose = int((torch.rand(rows, generator=self.rng) < self.prose_frac).sum())
        parts = [self.gen.take(rows - n_prose)] + ([self.prose.take(n_prose)] if n_prose else [])
        return torch.cat(parts)

    def state(self) -> dict:
        return {"rng": self.rng.get_state(), "windows": [(w.order, w.pos, w.epoch) for w in (self.gen, self.prose) if w]}

    def load(self, st: dict):
        self.rng.set_state(st["rng"])
        for w, (order, pos, epoch) in zip([w for w in (self.gen, self.prose) if w], st["windows"]):
            w.order, w.pos, w.epoch = order, pos, epoch


def _chunk_losses(hs, ht, tgt, s_norm, s_head, t_norm, t_head):
    """Summed KL(teacher || student) and cross-entropy over one chunk of positions."""
    ls = F.log_softmax(s_head(s_norm(hs)).float(), dim=-1)
    with torch.no_grad():
        lt = F.log_softmax(t_head(t_norm(ht)).float(), dim=-1)
    kl = (lt.exp() * (lt - ls)).sum()
    ce = -ls.gather(-1, tgt[:, None]).sum()
    return kl, ce


def distill_losses(student: BatchedLckv, teacher: BatchedLckv, hs, ht, tokens, chunk: int, grad: bool):
    """Mean KL and CE per predicted position of [B, T] tokens, from the two last hidden states."""
    hs, ht = hs[:, :-1].reshape(-1, hs.shape[-1]), ht[:, :-1].reshape(-1, ht.shape[-1])
    tgt = tokens[:, 1:].reshape(-1)
    mods = (student.model.norm, student.lm_head, teacher.model.norm, teacher.lm_head)
    kl = ce = 0.0
    for i in range(0, len(tgt), chunk):
        part = (hs[i : i + chunk], ht[i : i + chunk], tgt[i : i + chunk])
        if grad:
            k, c = checkpoint(_chunk_losses, *part, *mods, use_reentrant=False)
        else:
            k, c = _chunk_losses(*part, *mods)
        kl, ce = kl + k, ce + c
    return kl / len(tgt), ce / len(tgt)


def make_models(base_cfg, weights, plan, m, b, device):
    # float32 weights under the same bf16 autocast as the student: bf16 matmuls, float32 residual.
    teacher = from_smollm(base_cfg, weights, "standard").to(device)
    teacher.eval().requires_grad_(False)
    student = from_smollm(base_cfg, weights, plan, m=m, b=b).to(device).train()
    if student.cfg.tie_word_embeddings:
        student.lm_head.weight = student.model.embed_tokens.weight
    return teacher, student


def make_optimizer(student, a, device):
    decay = [p for p in student.parameters() if p.ndim >= 2]
    other = [p for p in student.parameters() if p.ndim < 2]
    return torch.optim.AdamW([{"params": decay, "weight_decay": a.weight_decay}, {"params": other, "weight_decay": 0.0}],
                             lr=a.lr, betas=(0.9, 0.95), fused=device.type == "cuda")


def step_grads(student, teacher, batch, a, device) -> tuple[float, float, float]:
    """Forward and backward over micro-batches; returns (loss, kl, ce) of the whole batch."""
    autocast = torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
    micro = a.micro or len(batch)
    parts = batch.split(micro)
    loss_sum = kl_sum = ce_sum = 0.0
    for x in parts:
        x = x.to(device, non_blocking=True)
        with autocast:
            with torch.no_grad():
                ht = teacher.hidden_batch(x, dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
            hs = student.hidden_batch(x, grad_passes=student.cfg.backward_passes,
                                      dtype=torch.bfloat16 if device.type == "cuda" else torch.float32)
            kl, ce = distill_losses(student, teacher, hs, ht, x, a.chunk, grad=True)
            loss = kl + a.ce * ce
        (loss / len(parts)).backward()
        loss_sum, kl_sum, ce_sum = loss_sum + loss.item(), kl_sum + kl.item(), ce_sum + ce.item()
    n = len(parts)
    return loss_sum / n, kl_sum / n, ce_sum / n


def snapshot(student, opt) -> dict:
    return {"model": copy.deepcopy(student.state_dict()), "opt": copy.deepcopy(opt.state_dict())}


def save_ckpt(path, student, opt, step, sched, guard, data, log):
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = path + ".tmp"
    torch.save({"model": student.state_dict(), "opt": opt.state_dict(), "step": step, "sched": sched.state(),
                "guard": guard.state(), "data": data.state(), "log": log}, tmp)
    os.replace(tmp, path)


def run(a, base_cfg: dict, weights: dict, device, gen_ids: np.ndarray, prose_ids):
    torch.manual_seed(a.seed)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
    teacher, student = make_models(base_cfg, weights, a.plan, a.m, a.b, device)
    opt = make_optimizer(student, a, device)
    data = Mixture(gen_ids, prose_ids, a.seq, a.prose_frac, a.seed)
    tokens_per_step = a.rows * a.seq
    planned = max(2, a.tokens // tokens_per_step)
    sched = Schedule(a.lr, max(1, min(a.warmup, planned // 10)), planned)
    guard = SpikeGuard(ratio=a.spike_ratio, settle=a.guard_settle)
    step, log = 0, []
    ckpt = os.path.join(a.ckpt_dir, f"distill_{a.plan}.pt")
    if a.resume and os.path.exists(ckpt):
        st = torch.load(ckpt, weights_only=False, map_location=device)
        student.load_state_dict(st["model"])
        opt.load_state_dict(st["opt"])
        step, log = st["step"], st["log"]
        sched, guard = Schedule(**st["sched"]), SpikeGuard(**st["guard"])
        data.load(st["data"])
        print(f"resumed {a.plan} at step {step} of {sched.total}", flush=True)
    good = snapshot(student, opt)
    t0 = time.time()
    last_ckpt, timed_from, timed_step, first_step = t0, None, None, step
    while step < sched.total:
        if time.time() - t0 > a.seconds:
            print(f"time cap reached at step {step}", flush=True)
            break
        lr = sched.lr(step) * guard.lr_scale
        for g in opt.param_groups:
            g["lr"] = lr
        if a.inject_spike is not None and step == a.inject_spike:
            with torch.no_grad():  # a test of the guard: wreck the weights, see it recover
                for p in student.model.layers[0].mlp.parameters():
                    p.mul_(30.0)
        loss, kl, ce = step_grads(student, teacher, data.next(a.rows), a, device)
        gnorm = float(torch.nn.utils.clip_grad_norm_(student.parameters(), a.clip))
        verdict = guard.observe(loss if np.isfinite(gnorm) else float("nan"))
        if verdict == "ok":
            opt.step()
        opt.zero_grad(set_to_none=True)
        if verdict == "rewind":
            student.load_state_dict(good["model"])
            opt.load_state_dict(good["opt"])
        step += 1
        now = time.time()
        log.append({"step": step, "loss": loss, "kl": kl, "ce": ce, "gnorm": gnorm, "lr": lr, "verdict": verdict,
                    "t": now - t0})
        # Step time from steps 5..20 of this process (the first ones include warm-up of kernels).
        if step - first_step == 5:
            timed_from, timed_step = now, step
        if step - first_step in (20, 100, 300) or (step - first_step) % 500 == 0 and timed_from:
            per_step = (now - timed_from) / (step - timed_step)
            total = sched.fit_to_time(step, per_step, a.seconds - (now - t0))
            print(f"{per_step * 1000:.0f} ms/step, {tokens_per_step / per_step:.0f} tok/s; schedule: {total} steps "
                  f"({total * tokens_per_step / 1e6:.1f}M tokens)", flush=True)
        if verdict == "ok" and step % a.snapshot_every == 0 and guard.in_a_row == 0:
            good = snapshot(student, opt)
        if verdict != "ok" or step % a.log_every == 0 or step == sched.total:
            print(f"{a.plan} step {step}/{sched.total}: loss {loss:.4f} kl {kl:.4f} ce {ce:.4f} |g| {gnorm:.2f} "
                  f"lr {lr:.2e} {verdict} ({now - t0:.0f} s)", flush=True)
        if now - last_ckpt > a.ckpt_every:
            save_ckpt(ckpt, student, opt, step, sched, guard, data, log)
            last_ckpt = now
    seconds = time.time() - t0
    save_ckpt(ckpt, student, opt, step, sched, guard, data, log)
    os.makedirs(a.out, exist_ok=True)
    save_pretrained(copy.deepcopy(student).to("cpu"), os.path.join(a.out, "hf"))
    done = step - first_step
    info = {"plan": a.plan, "layer_types": student.cfg.layer_types, "force_nodiag": student.cfg.force_nodiag,
            "m": a.m, "b": a.b, "steps": step, "planned_steps": sched.total, "tokens_per_step": tokens_per_step,
            "tokens": step * tokens_per_step, "seconds_this_process": seconds,
            "tokens_per_s": done * tokens_per_step / max(seconds, 1e-9), "skipped": guard.skipped,
            "rewinds": guard.rewinds, "lr_scale": guard.lr_scale, "loss_first": log[:5], "loss_last": log[-5:],
            "log": log[:: max(1, len(log) // 400)], "epochs": {"gen": data.gen.epoch, "prose": data.prose.epoch if data.prose else 0},
            "settings": {k: getattr(a, k) for k in ("seq", "rows", "micro", "lr", "warmup", "ce", "prose_frac",
                                                     "clip", "weight_decay", "spike_ratio", "seed", "tokens", "seconds")}}
    json.dump(info, open(os.path.join(a.out, "train.json"), "w"), indent=1)
    print(f"{a.plan}: {step} steps, {info['tokens'] / 1e6:.1f}M tokens, {info['tokens_per_s']:.0f} tok/s, "
          f"{guard.skipped} skipped, {guard.rewinds} rewinds -> {a.out}/hf", flush=True)
    return student, teacher
