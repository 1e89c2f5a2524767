"""Gathers one results table from the run folders: PyTorch and lckv perplexity, their agreement,
KV bytes per token, the Q4_0 file's longest context in 512 MiB and its prompt/generation speed,
and the greedy answers. Writes results.json and results.md.

    python collect.py RUN_ROOT OUT_DIR
"""

from __future__ import annotations

import json
import os
import re
import sys

ORDER = ["baseline", "standard", "cla2", "lckv-w2", "sandwich-middle"]


def lckv_ppl(d: str):
    """(chunks done, cumulative perplexity) from lckv perplexity's progress line."""
    try:
        text = open(os.path.join(d, "ppl.err")).read()
    except FileNotFoundError:
        return None
    hits = re.findall(r"\[(\d+)\]([0-9.]+)", text)
    return (int(hits[-1][0]), float(hits[-1][1])) if hits else None


def main():
    root, out = sys.argv[1], sys.argv[2]
    prompts = [l.rstrip("\n") for l in open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "prompts.txt"))]
    rows = []
    for name in ORDER:
        d = os.path.join(root, name)
        if not os.path.exists(os.path.join(d, "torch.json")):
            continue
        t = json.load(open(os.path.join(d, "torch.json")))
        row = {k: t[k] for k in ("plan", "layer_types", "force_nodiag", "steps", "train_seconds", "loss_first", "loss_last")}
        row["name"] = name
        row["torch_ppl_40"] = t["torch_eval"]["ppl"]
        try:
            m = re.search(r"KV bytes per token \(f16\): (\d+)", open(os.path.join(d, "inspect.txt")).read())
            row["kv_bytes_per_token_f16"] = int(m.group(1)) if m else None
        except FileNotFoundError:
            row["kv_bytes_per_token_f16"] = None
        try:
            m = re.search(r"longest context in [^:]*: (\d+) tokens", open(os.path.join(d, "fit512.txt")).read())
            row["ctx_512mib_q4_0"] = int(m.group(1)) if m else None
        except FileNotFoundError:
            row["ctx_512mib_q4_0"] = None
        try:
            for line in open(os.path.join(d, "bench.jsonl")):
                b = json.loads(line)
                if "test" in b:
                    row[b["test"] + "_tps"] = b["tps"]
                    row[b["test"] + "_tps_sd"] = b["tps_sd"]
                    row["bench_kernels"] = b["kernels"]
                    row["bench_threads"] = b["threads"]
        except FileNotFoundError:
            pass
        lp = lckv_ppl(d)
        if lp:
            n, v = lp
            tp = t["torch_eval"]["ppl_cumulative"][n - 1]
            row.update(lckv_chunks=n, lckv_ppl=v, torch_ppl_same_chunks=tp, rel_diff=abs(v - tp) / tp)
        row["samples"] = []
        for i, p in enumerate(prompts, 1):
            try:
                row["samples"].append({"prompt": p, "text": open(os.path.join(d, f"sample{i}.txt")).read()})
            except FileNotFoundError:
                pass
        rows.append(row)
    os.makedirs(out, exist_ok=True)
    json.dump(rows, open(os.path.join(out, "results.json"), "w"), indent=1)
    md = ["| plan | steps | KV B/token (f16) | PyTorch ppl (40 chunks) | lckv ppl (chunks) | PyTorch ppl (same chunks) | rel. diff "
          "| ctx in 512 MiB (Q4_0) | pp t/s | tg t/s |",
          "|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        speed = " | ".join(f"{r[k]:.1f}" if r.get(k) is not None else "-" for k in ("pp128_tps", "tg64_tps"))
        md.append(f"| {r['name']} | {r['steps']} | {r['kv_bytes_per_token_f16']} | {r['torch_ppl_40']:.3f} | "
                  + (f"{r['lckv_ppl']:.3f} ({r['lckv_chunks']}) | {r['torch_ppl_same_chunks']:.3f} | {100 * r['rel_diff']:.3f}% |"
                     if "lckv_ppl" in r else "- | - | - |")
                  + f" {r.get('ctx_512mib_q4_0') or '-'} | {speed} |")
    md.append("")
    for r in rows:
        md.append(f"### {r['name']}")
        for s in r["samples"]:
            md.append(f"- `{s['prompt']}` -> {json.dumps(s['text'])}")
        md.append("")
    open(os.path.join(out, "results.md"), "w").write("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
