"""Distil SmolLM2-135M-Instruct into condensed-KV students; the command line of the recipe.

  gen       --weights W.pt --gguf G --out DIR [--seconds S --max-tokens N --batch B ...]
            the teacher answers the prompt set (distill_gen.py): DIR/gen_{train,heldout}.npy, ...
  distill   --weights W.pt --gen DIR --prose P.npy --plan PLAN --out RUN [--seconds S --tokens N ...]
            trains one plan against the teacher (distill_train.py): RUN/hf, RUN/train.json
  evaluate  --weights W.pt --hf RUN/hf --gen DIR --data D --out RUN/eval.json
            held-out perplexity and KL to the teacher (distill_eval.py)

W.pt is `train_lckv.py setup`'s torch file of SmolLM2's dequantized weights. `--layers N` keeps
only the first N layers (a small model for CPU tests); `--device cpu` forces the CPU.
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import distill_eval  # noqa: E402
import distill_gen  # noqa: E402
import distill_train  # noqa: E402
from lckv_batched import from_smollm  # noqa: E402


def load_weights(path: str, layers: int | None) -> tuple[dict, dict[str, torch.Tensor]]:
    blob = torch.load(path, weights_only=False)
    cfg, weights = dict(blob["cfg"]), blob["weights"]
    if layers:
        cfg["num_hidden_layers"] = layers
        keep = lambda k: not k.startswith("model.layers.") or int(k.split(".")[2]) < layers  # noqa: E731
        weights = {k: v for k, v in weights.items() if keep(k)}
    return cfg, weights


def pick_device(name: str) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    return torch.device(name)


def cmd_gen(a, cfg, weights, device):
    from tokenize_data import build_tokenizer

    distill_gen.run(a, cfg, weights, device, build_tokenizer(a.gguf))


def cmd_distill(a, cfg, weights, device):
    gen_ids = np.load(os.path.join(a.gen, "gen_train.npy"))
    prose = np.load(a.prose) if a.prose else None
    print(f"distill {a.plan}: {len(gen_ids)} generated tokens, {0 if prose is None else len(prose)} prose tokens, "
          f"{a.rows} x {a.seq} tokens a step, m={a.m} b={a.b}, {device}", flush=True)
    distill_train.run(a, cfg, weights, device, gen_ids, prose)


def cmd_evaluate(a, cfg, weights, device):
    sets = {"gen_heldout": os.path.join(a.gen, "gen_heldout.npy"),
            "answers_heldout": os.path.join(a.gen, "heldout_answers.npy"),
            "prose_heldout": os.path.join(a.data, "prose_heldout.npy"),
            "emma": os.path.join(a.data, "emma.npy")}
    arrays = {k: np.load(p) for k, p in sets.items() if os.path.exists(p)}
    teacher = from_smollm(cfg, weights, "standard")
    distill_eval.run(a, teacher, device, arrays)


def add_gen(sub):
    p = sub.add_parser("gen")
    p.add_argument("--gguf", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--batch", type=int, default=4096)
    p.add_argument("--temperature", type=float, default=0.9)
    p.add_argument("--top-p", dest="top_p", type=float, default=0.95)
    p.add_argument("--max-new", dest="max_new", type=int, default=320)
    p.add_argument("--seconds", type=float, default=270)
    p.add_argument("--max-tokens", dest="max_tokens", type=int, default=100_000_000)
    p.add_argument("--rounds", type=int, default=12, help="passes over the training prompts at most")
    p.add_argument("--max-prompts", dest="max_prompts", type=int, default=0, help="tests: this many prompts")
    p.add_argument("--seed", type=int, default=1234)


def add_distill(sub):
    p = sub.add_parser("distill")
    for k in ("--gen", "--plan", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--prose", help="prose_train.npy (mixed in with --prose-frac)")
    p.add_argument("--m", type=int, default=7, help="passes without gradient")
    p.add_argument("--b", type=int, default=2, help="passes with gradient")
    p.add_argument("--seq", type=int, default=512)
    p.add_argument("--rows", type=int, default=64, help="sequences per step")
    p.add_argument("--micro", type=int, default=32, help="sequences per forward/backward (accumulated)")
    p.add_argument("--chunk", type=int, default=4096, help="positions per head/softmax chunk")
    p.add_argument("--lr", type=float, default=2e-4)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--ce", type=float, default=0.0, help="weight of the next-token cross-entropy")
    p.add_argument("--prose-frac", dest="prose_frac", type=float, default=0.2)
    p.add_argument("--clip", type=float, default=1.0)
    p.add_argument("--weight-decay", dest="weight_decay", type=float, default=0.01)
    p.add_argument("--spike-ratio", dest="spike_ratio", type=float, default=1.5)
    p.add_argument("--tokens", type=int, default=100_000_000, help="planned tokens (the schedule's length)")
    p.add_argument("--seconds", type=float, default=780, help="time cap; the schedule is fitted to it")
    p.add_argument("--ckpt-dir", dest="ckpt_dir", default="/tmp/distill_ckpt")
    p.add_argument("--ckpt-every", dest="ckpt_every", type=float, default=180)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--guard-settle", dest="guard_settle", type=int, default=10, help="steps before the guard judges")
    p.add_argument("--snapshot-every", dest="snapshot_every", type=int, default=25)
    p.add_argument("--log-every", dest="log_every", type=int, default=10)
    p.add_argument("--inject-spike", dest="inject_spike", type=int, help="tests: wreck the weights at this step")
    p.add_argument("--seed", type=int, default=1234)


def add_evaluate(sub):
    p = sub.add_parser("evaluate")
    for k in ("--hf", "--gen", "--data", "--out"):
        p.add_argument(k, required=True)
    p.add_argument("--ctx", type=int, default=512)
    p.add_argument("--chunks", type=int, default=40, help="chunks per held-out set at most")
    p.add_argument("--rows", type=int, default=8)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("--weights", required=True)
    ap.add_argument("--layers", type=int, help="keep the first N layers (tests)")
    ap.add_argument("--device", default="auto")
    ap.add_argument("--threads", type=int, default=0)
    sub = ap.add_subparsers(dest="cmd", required=True)
    add_gen(sub)
    add_distill(sub)
    add_evaluate(sub)
    a = ap.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    cfg, weights = load_weights(a.weights, a.layers)
    device = pick_device(a.device)
    {"gen": cmd_gen, "distill": cmd_distill, "evaluate": cmd_evaluate}[a.cmd](a, cfg, weights, device)


if __name__ == "__main__":
    main()
