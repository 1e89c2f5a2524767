#!/usr/bin/env python3
"""Load generator for OpenAI-compatible servers (lckv serve, llama.cpp's llama-server).

N client threads each send R streaming POST /v1/chat/completions requests back to back
(temperature 0, a fixed seed, a fixed max_tokens, prompts that make the model write at length),
and one JSON line is printed with:

  agg_tok_s           all generated tokens / wall time of the run (first request sent to last
                      stream closed, all clients together)
  ttft_ms_median/p95  time to first token per request: request sent to the first SSE chunk that
                      carries content (p95 by nearest rank)
  requests_completed  requests whose stream ended with [DONE]

Generated tokens are counted from `usage.completion_tokens` when the server sends it
(stream_options.include_usage is requested), else as the number of content chunks; the line says
which (`token_count`) and gives the chunk count too (`content_chunks`). Any failed request makes the exit status 1 (the line is still printed).

  scripts/serve_bench.py --url http://127.0.0.1:8080 --clients 4 --requests 3 --max-tokens 128
  scripts/serve_bench.py --table results.jsonl     # markdown table of scripts/serve_bench.sh runs

Options: --model (the "model" field sent), --prompts FILE (one prompt a line; default a built-in
list), --warmup K (untimed short requests first, default 1), --server-pid PID (adds the server's
peak RSS, VmHWM from /proc/PID/status, read after the run), --meta JSON (fields merged into the
line), --timeout S (socket timeout per request). Standard library only.
"""
import argparse
import http.client
import json
import math
import statistics
import sys
import threading
import time
import urllib.parse

PROMPTS = [
    "Write a long story about a lighthouse keeper who finds a message in a bottle.",
    "Write a long story about a young inventor who builds a clockwork bird.",
    "Write a long story about two friends crossing a desert on camels.",
    "Write a long story about a city where it never stops raining.",
    "Write a long story about a dragon who is afraid of heights.",
    "Write a long story about a sailor lost in a storm who reaches an unknown island.",
    "Write a long story about a baker whose bread grants wishes.",
    "Write a long story about the last train leaving a snowed-in mountain village.",
    "Write a long story about a robot learning to paint.",
    "Write a long story about a family moving to a farm far from the city.",
    "Write a long story about an astronaut repairing a broken space station alone.",
    "Write a long story about a detective searching for a stolen violin.",
    "Write a long story about a girl who can talk to the trees in her garden.",
    "Write a long story about a knight who refuses to fight.",
    "Write a long story about a small town preparing for its yearly festival.",
    "Write a long story about a cat who travels around the world on ships.",
]


def percentile(values, p):
    """Nearest-rank percentile (p in 0..100) of a non-empty list."""
    s = sorted(values)
    return s[max(0, math.ceil(p / 100 * len(s)) - 1)]


def one_request(url, model, prompt, max_tokens, seed, timeout):
    """Sends one streaming chat completion; returns a dict of timings and counts."""
    u = urllib.parse.urlsplit(url)
    conn_cls = http.client.HTTPSConnection if u.scheme == "https" else http.client.HTTPConnection
    path = (u.path.rstrip("/") or "") + "/v1/chat/completions"
    body = json.dumps({
        "model": model,
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": max_tokens,
        "temperature": 0,
        "seed": seed,
        "stream": True,
        "stream_options": {"include_usage": True},
    })
    conn = conn_cls(u.hostname, u.port, timeout=timeout)
    t0 = time.perf_counter()
    t_first = t_last = None
    chunks = 0
    usage_tokens = None
    finish = None
    done = False
    try:
        conn.request("POST", path, body=body,
                     headers={"Content-Type": "application/json", "Accept": "text/event-stream"})
        resp = conn.getresponse()
        if resp.status != 200:
            raise RuntimeError(f"HTTP {resp.status}: {resp.read(500).decode('utf-8', 'replace')}")
        while True:
            line = resp.readline()
            if not line:
                break
            line = line.strip()
            if not line.startswith(b"data:"):
                continue  # blank separators, comments, event: lines
            data = line[5:].strip()
            if data == b"[DONE]":
                done = True
                break
            msg = json.loads(data)
            if "error" in msg:
                raise RuntimeError(f"server error: {json.dumps(msg['error'])[:500]}")
            usage = msg.get("usage")
            if usage and usage.get("completion_tokens") is not None:
                usage_tokens = usage["completion_tokens"]
            for choice in msg.get("choices") or []:
                content = (choice.get("delta") or {}).get("content")
                if content:
                    now = time.perf_counter()
                    if t_first is None:
                        t_first = now
                    t_last = now
                    chunks += 1
                if choice.get("finish_reason"):
                    finish = choice["finish_reason"]
    finally:
        conn.close()
    t_end = time.perf_counter()
    if not done:
        raise RuntimeError("stream ended without data: [DONE]")
    if t_first is None:
        raise RuntimeError("stream carried no content")
    return {
        "t0": t0, "t_end": t_end, "ttft": t_first - t0, "t_first": t_first, "t_last": t_last,
        "chunks": chunks, "usage_tokens": usage_tokens, "finish": finish,
    }


def peak_rss_kib(pid):
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmHWM in /proc/{pid}/status")


def run(args):
    prompts = PROMPTS
    if args.prompts:
        with open(args.prompts, encoding="utf-8") as fh:
            prompts = [p.strip() for p in fh if p.strip()]
        if not prompts:
            sys.exit(f"serve_bench: no prompts in {args.prompts}")

    for k in range(args.warmup):
        one_request(args.url, args.model, prompts[k % len(prompts)], 8, args.seed, args.timeout)

    results, errors = [], []
    lock = threading.Lock()
    start = threading.Barrier(args.clients + 1)

    def client(i):
        start.wait()
        for j in range(args.requests):
            prompt = prompts[(i * args.requests + j) % len(prompts)]
            try:
                r = one_request(args.url, args.model, prompt, args.max_tokens, args.seed,
                                args.timeout)
            except Exception as e:  # noqa: BLE001 -- reported in the JSON line
                with lock:
                    errors.append(f"client {i} request {j}: {type(e).__name__}: {e}")
                continue
            with lock:
                results.append(r)

    threads = [threading.Thread(target=client, args=(i,), daemon=True)
               for i in range(args.clients)]
    for t in threads:
        t.start()
    load_before = open("/proc/loadavg").read().split()[0]
    start.wait()
    t_start = time.perf_counter()
    for t in threads:
        t.join()
    t_stop = time.perf_counter()

    wall = (max(r["t_end"] for r in results) - t_start) if results else t_stop - t_start
    use_usage = bool(results) and all(r["usage_tokens"] is not None for r in results)
    tokens = sum(r["usage_tokens"] if use_usage else r["chunks"] for r in results)
    ttfts = [r["ttft"] * 1000 for r in results]
    decode = [(r["chunks"] - 1) / (r["t_last"] - r["t_first"])
              for r in results if r["chunks"] > 1 and r["t_last"] > r["t_first"]]
    finishes = {}
    for r in results:
        finishes[str(r["finish"])] = finishes.get(str(r["finish"]), 0) + 1

    out = {
        "url": args.url,
        "model": args.model,
        "clients": args.clients,
        "requests_per_client": args.requests,
        "max_tokens": args.max_tokens,
        "requests_completed": len(results),
        "requests_failed": len(errors),
        "tokens": tokens,
        "token_count": "usage" if use_usage else "chunks",
        "content_chunks": sum(r["chunks"] for r in results),
        "wall_s": round(wall, 3),
        "agg_tok_s": round(tokens / wall, 2) if wall > 0 else None,
        "ttft_ms_median": round(statistics.median(ttfts), 1) if ttfts else None,
        "ttft_ms_p95": round(percentile(ttfts, 95), 1) if ttfts else None,
        "stream_tok_s_median": round(statistics.median(decode), 2) if decode else None,
        "finish_reasons": finishes,
        "loadavg_1m_before": float(load_before),
    }
    if args.server_pid:
        out["peak_rss_kib"] = peak_rss_kib(args.server_pid)
    if errors:
        out["errors"] = errors[:5]
    if args.meta:
        out.update(json.loads(args.meta))
    print(json.dumps(out), flush=True)
    return 1 if errors else 0


def fmt(v, spec="{:.1f}"):
    return "–" if v is None else spec.format(v)


def table(path):
    """Markdown table of the JSON lines scripts/serve_bench.sh wrote (fields server, clients)."""
    rows = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                r = json.loads(line)
                rows[(r["clients"], r["server"])] = r
    ns = sorted({n for n, _ in rows})

    def get(n, s, k):
        return rows.get((n, s), {}).get(k)

    def mib(n, s):
        v = get(n, s, "peak_rss_kib")
        return None if v is None else v / 1024

    print("| N | lckv agg tok/s | llama-server agg tok/s | lckv / llama-server "
          "| lckv TTFT med / p95 ms | llama-server TTFT med / p95 ms "
          "| lckv peak RSS MiB | llama-server peak RSS MiB |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n in ns:
        a, b = get(n, "lckv", "agg_tok_s"), get(n, "llama-server", "agg_tok_s")
        ratio = a / b if a is not None and b else None
        print(f"| {n} | {fmt(a)} | {fmt(b)} | {fmt(ratio, '{:.2f}')} "
              f"| {fmt(get(n, 'lckv', 'ttft_ms_median'), '{:.0f}')} / "
              f"{fmt(get(n, 'lckv', 'ttft_ms_p95'), '{:.0f}')} "
              f"| {fmt(get(n, 'llama-server', 'ttft_ms_median'), '{:.0f}')} / "
              f"{fmt(get(n, 'llama-server', 'ttft_ms_p95'), '{:.0f}')} "
              f"| {fmt(mib(n, 'lckv'))} | {fmt(mib(n, 'llama-server'))} |")
    for s in ("lckv", "llama-server"):
        lo, hi = min(ns, default=None), max(ns, default=None)
        a, b = get(hi, s, "agg_tok_s"), get(lo, s, "agg_tok_s")
        if a is not None and b and hi != lo:
            print(f"\n{s}: {hi}-client aggregate rate / its own {lo}-client rate: {a / b:.2f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--url", default="http://127.0.0.1:8080")
    ap.add_argument("--model", default="default")
    ap.add_argument("--clients", type=int, default=1)
    ap.add_argument("--requests", type=int, default=2, help="requests per client, back to back")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--seed", type=int, default=42)
    ap.add_argument("--prompts")
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--server-pid", type=int)
    ap.add_argument("--meta")
    ap.add_argument("--table", metavar="RESULTS", help="print the markdown table of a results file")
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return 0
    if args.clients < 1 or args.requests < 1:
        ap.error("--clients and --requests must be at least 1")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
