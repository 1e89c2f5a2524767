"""Plots held-out perplexity against KV-cache bytes per token for every trained run and the
original SmolLM2, from the collected results. Writes train/results/ppl_vs_kv.png.

    python train/plot.py

Perplexity is PyTorch's on held-out Emma (40 chunks of 512, second halves scored); lckv's agrees
with it within 0.05% wherever both were run (see train/README.md). Both axes are logarithmic.
"""

from __future__ import annotations

import json
import os

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RES = os.path.join(HERE, "results")
COLORS = {"baseline": "black", "standard": "tab:blue", "cla2": "tab:green",
          "lckv-w2": "tab:red", "sandwich-middle": "tab:purple"}
LABELS = {"baseline": "SmolLM2 (original)", "standard": "standard (control)", "cla2": "CLA pairs",
          "lckv-w2": "LCKV w=2 (top)", "sandwich-middle": "sandwich-middle"}


def main():
    runs = [("run 1, 600 steps", "o", json.load(open(os.path.join(RES, "results.json")))),
            ("run 2, 600 steps", "x", json.load(open(os.path.join(RES, "run2", "results.json"))))]
    longer = json.load(open(os.path.join(RES, "long_runs.json")))
    fig, ax = plt.subplots(figsize=(7.5, 5))
    seen = set()
    for run_label, marker, rows in runs:
        for r in rows:
            name = r["name"]
            if name == "baseline" and "baseline" in seen:
                continue  # the original model is the same in both runs
            label = LABELS[name] if name not in seen else None
            seen.add(name)
            ax.scatter(r["kv_bytes_per_token_f16"], r["torch_ppl_40"], marker=marker, s=60,
                       color=COLORS[name], label=label)
    for r in longer:
        ax.scatter(2304, r["torch_ppl_40"], marker="s", s=40, facecolors="none",
                   edgecolors=COLORS["sandwich-middle"])
        ax.annotate(f"{r['steps']} steps", (2304, r["torch_ppl_40"]), textcoords="offset points",
                    xytext=(-58, -3), fontsize=8)
    ax.set_xscale("log")
    ax.set_xlim(1500, 30000)
    ax.set_yscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_yticks([25, 30, 40, 60, 100, 150, 200])
    ax.yaxis.set_major_formatter(matplotlib.ticker.ScalarFormatter())
    ax.set_xticks([2304, 11520, 23040])
    ax.set_xticklabels(["2,304\n(3 of 30 layers)", "11,520\n(15 layers)", "23,040\n(30 layers)"])
    ax.set_xlabel("KV cache bytes per token (f16)")
    ax.set_ylabel("held-out perplexity (Emma)")
    ax.set_title("SmolLM2-135M under condensed KV plans, uptrained 600 steps (4.9M tokens)")
    handles, labels = ax.get_legend_handles_labels()
    handles += [plt.Line2D([], [], marker="o", ls="", color="gray"),
                plt.Line2D([], [], marker="x", ls="", color="gray"),
                plt.Line2D([], [], marker="s", ls="", markerfacecolor="none", color="gray")]
    labels += ["run 1 (shipped model)", "run 2 (same recipe)", "longer runs (sandwich-middle)"]
    ax.legend(handles, labels, fontsize=8, loc="upper right")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    out = os.path.join(RES, "ppl_vs_kv.png")
    fig.savefig(out, dpi=110)
    print(f"plot: wrote {out}")


if __name__ == "__main__":
    main()
