"""Teacher data for distillation: SmolLM2 answers the prompt set in its chat template (`distill.py gen`).

Owns: the teacher as a transformers `LlamaForCausalLM` with the dequantized GGUF weights; batched
sampling with its KV cache (left padding, temperature, top-p, at most `max_new` new tokens, stop at
<|im_end|>); the held-out prompts first, then the training prompts in rounds (a prompt's later
rounds are new samples) until the token target or the time cap; and the files it writes in OUT:
  gen_train.npy, gen_train_offsets.npy       uint16 ids of system + user + assistant turns, one
  gen_heldout.npy, gen_heldout_offsets.npy   document after another (offsets: int64 starts)
  heldout_answers.txt, heldout_answers.npy   the held-out answers as plain text (no chat markup),
                                             and their ids as `lckv perplexity` tokenizes them
  gen.json                                   counts, tokens/s, settings
Files are rewritten after every batch, so a run cut short keeps what it made.
"""

from __future__ import annotations

import json
import os
import time

import numpy as np
import torch

from distill_prompts import build_prompts, chat_ids

IM_START, IM_END, ENDOFTEXT = 1, 2, 0


def hf_teacher(base_cfg: dict, weights: dict, device, dtype):
    """transformers' Llama with SmolLM2's weights (the standard plan's oracle), for generate()."""
    from lckv_model import LckvConfig
    from transformers import LlamaForCausalLM

    n = base_cfg["num_hidden_layers"]
    cfg = LckvConfig(**base_cfg, layer_types="_".join(map(str, range(n))), force_nodiag=False).llama_config()
    cfg.bos_token_id, cfg.eos_token_id, cfg.pad_token_id = IM_START, IM_END, IM_END
    cfg._attn_implementation = "sdpa"
    model = LlamaForCausalLM(cfg)
    missing, unexpected = model.load_state_dict(weights, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"teacher weights: missing {missing[:4]}, unexpected {unexpected[:4]}")
    if cfg.tie_word_embeddings:
        model.lm_head.weight = model.model.embed_tokens.weight
    return model.to(device=device, dtype=dtype).eval()


def answer_of(row: list[int]) -> tuple[list[int], bool]:
    """The new tokens up to the first stop token, and whether it stopped (else it hit max_new)."""
    for j, t in enumerate(row):
        if t in (IM_END, ENDOFTEXT):
            return row[:j], True
    return row, False


@torch.no_grad()
def sample_batch(model, prompt_ids: list[list[int]], a, seed: int) -> list[tuple[list[int], bool]]:
    width = max(map(len, prompt_ids))
    ids = torch.full((len(prompt_ids), width), IM_END, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for r, p in enumerate(prompt_ids):
        ids[r, width - len(p) :] = torch.tensor(p)
        mask[r, width - len(p) :] = 1
    device = next(model.parameters()).device
    torch.manual_seed(seed)
    out = model.generate(input_ids=ids.to(device), attention_mask=mask.to(device), do_sample=True,
                         temperature=a.temperature, top_p=a.top_p, top_k=0, max_new_tokens=a.max_new,
                         pad_token_id=IM_END, eos_token_id=[IM_END, ENDOFTEXT])
    return [answer_of(row) for row in out[:, width:].tolist()]


class Split:
    """One split's documents, written as flat uint16 ids plus int64 start offsets."""

    def __init__(self, out: str, name: str):
        self.out, self.name = out, name
        self.docs: list[np.ndarray] = []
        self.tokens = 0

    def add(self, doc: list[int]):
        self.docs.append(np.array(doc, dtype=np.uint16))
        self.tokens += len(doc)

    def save(self):
        if not self.docs:
            return
        starts = np.cumsum([0] + [len(d) for d in self.docs[:-1]]).astype(np.int64)
        np.save(os.path.join(self.out, f"gen_{self.name}.npy"), np.concatenate(self.docs))
        np.save(os.path.join(self.out, f"gen_{self.name}_offsets.npy"), starts)


def jobs(train: list[str], held: list[str], batch: int, rounds: int):
    """(split name, prompts, round) batches: every held-out prompt once, then the training rounds."""
    for i in range(0, len(held), batch):
        yield "heldout", held[i : i + batch], 0
    for r in range(rounds):
        for i in range(0, len(train), batch):
            yield "train", train[i : i + batch], r


def run(a, base_cfg: dict, weights: dict, device, tokenizer):
    os.makedirs(a.out, exist_ok=True)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model = hf_teacher(base_cfg, weights, device, dtype)
    train, held = build_prompts()
    if a.max_prompts:
        train, held = train[: a.max_prompts], held[: max(1, a.max_prompts // 8)]
    splits = {"train": Split(a.out, "train"), "heldout": Split(a.out, "heldout")}
    answers, stopped, n_docs, new_tokens, t0, last = [], 0, 0, 0, time.time(), 0.0
    newline = tokenizer.encode("\n", add_special_tokens=False).ids
    for b, (name, prompts, rnd) in enumerate(jobs(train, held, a.batch, a.rounds)):
        elapsed = time.time() - t0
        if name == "train" and (elapsed + last > a.seconds or splits["train"].tokens >= a.max_tokens):
            break
        tb = time.time()
        pids = [chat_ids(tokenizer, p) for p in prompts]
        for p, (ans, ok) in zip(pids, sample_batch(model, pids, a, seed=a.seed + b)):
            splits[name].add(p + ans + [IM_END] + newline)
            stopped += ok
            new_tokens += len(ans)
            n_docs += 1
            if name == "heldout":
                answers.append(tokenizer.decode(ans))
        last = time.time() - tb
        splits[name].save()
        total = splits["train"].tokens + splits["heldout"].tokens
        print(f"gen batch {b} ({name}, round {rnd}): {len(prompts)} prompts in {last:.1f} s; "
              f"{total} tokens so far, {total / (time.time() - t0):.0f} tok/s", flush=True)
    text = "\n\n".join(s.strip() for s in answers) + "\n"
    open(os.path.join(a.out, "heldout_answers.txt"), "w", encoding="utf-8").write(text)
    np.save(os.path.join(a.out, "heldout_answers.npy"),
            np.array(tokenizer.encode(text, add_special_tokens=False).ids, dtype=np.uint16))
    seconds = time.time() - t0
    info = {"train_tokens": splits["train"].tokens, "heldout_tokens": splits["heldout"].tokens,
            "train_docs": len(splits["train"].docs), "heldout_docs": len(splits["heldout"].docs),
            "stopped_fraction": stopped / max(1, n_docs), "seconds": seconds, "answer_tokens": new_tokens,
            "answer_tokens_per_s": new_tokens / seconds,
            "tokens_per_s": (splits["train"].tokens + splits["heldout"].tokens) / seconds,
            "prompts_train": len(train), "prompts_heldout": len(held),
            "settings": {k: getattr(a, k) for k in ("batch", "temperature", "top_p", "max_new", "seed", "rounds")}}
    json.dump(info, open(os.path.join(a.out, "gen.json"), "w"), indent=1)
    print("gen: " + json.dumps({k: v for k, v in info.items() if k != "settings"}), flush=True)
