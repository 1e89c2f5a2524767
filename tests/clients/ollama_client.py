"""Drives `lckv serve` with the official `ollama` client (pinned in scripts/setup_venv.sh), the
way Home Assistant's integration does: list/show/ps, greedy chat (with tools, keep_alive and
num_ctx as that integration sends them) and generate, streamed and not, a stop string, a request
the server refuses, and four clients at once. The client's pydantic models check every
response's shape; the texts are printed as one JSON object for tests/serve_clients.rs to compare
with `lckv run`.

usage: ollama_client.py BASE_URL API_KEY MAX_TOKENS CASES_JSON [--concurrent]
CASES_JSON: {"chat": [prompt, ...], "text": [prompt, ...], "stop": [prompt, stop]}
--concurrent: only the four clients at once (one per chat prompt).
"""

import json
import sys
import threading

import ollama
from ollama import Client

TOOLS = [{
    "type": "function",
    "function": {
        "name": "turn_on",
        "description": "Turn on a light",
        "parameters": {"type": "object", "properties": {"name": {"type": "string"}},
                       "required": ["name"]},
    },
}]


def options(n, **more):
    return {"temperature": 0, "num_predict": n, "num_ctx": 8192, **more}


def check_last(r, n):
    assert r.done is True and r.done_reason in ("stop", "length"), r
    assert 0 < r.eval_count <= n and r.prompt_eval_count > 0, r
    for d in (r.total_duration, r.prompt_eval_duration, r.eval_duration):
        assert isinstance(d, int) and d >= 0, r
    assert r.total_duration >= r.eval_duration, r
    assert r.created_at and r.model, r


def chat(client, prompt, n, stream):
    kw = dict(model="lckv", messages=[{"role": "user", "content": prompt}],
              options=options(n), tools=TOOLS, keep_alive=-1)
    if not stream:
        r = client.chat(**kw)
        check_last(r, n)
        assert r.message.role == "assistant", r
        return {"text": r.message.content, "finish": r.done_reason, "tokens": r.eval_count}
    pieces, last = [], None
    for part in client.chat(stream=True, **kw):
        assert part.message.role == "assistant", part
        pieces.append(part.message.content or "")
        last = part
    check_last(last, n)
    return {"text": "".join(pieces), "finish": last.done_reason, "tokens": last.eval_count}


def generate(client, prompt, n, stream, raw, stop=None):
    kw = dict(model="lckv", prompt=prompt, raw=raw,
              options=options(n, **({"stop": [stop]} if stop else {})))
    if not stream:
        r = client.generate(**kw)
        check_last(r, n)
        return {"text": r.response, "finish": r.done_reason, "tokens": r.eval_count}
    pieces, last = [], None
    for part in client.generate(stream=True, **kw):
        pieces.append(part.response or "")
        last = part
    check_last(last, n)
    return {"text": "".join(pieces), "finish": last.done_reason, "tokens": last.eval_count}


def concurrent(base, headers, n, prompts):
    """Four clients at once, each its own prompt and its own connection."""
    out, errors = {}, []

    def worker(p):
        try:
            own = Client(host=base, headers=headers, timeout=60)
            out[p] = chat(own, p, n, stream=True)
        except Exception as e:  # reported below; a thread's exception would be lost
            errors.append(f"{p!r}: {e!r}")

    threads = [threading.Thread(target=worker, args=(p,)) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    return out


def one_at_a_time(client, n, cases):
    out = {k: {} for k in ("chat", "chat_stream", "raw", "raw_stream", "templated")}
    listed = client.list()
    assert len(listed.models) == 1, listed
    m = listed.models[0]
    assert m.model and m.size > 0 and m.modified_at is not None, m
    assert m.details.format == "gguf" and m.details.quantization_level, m
    out["model"] = m.model
    shown = client.show(m.model)
    assert shown.modelinfo["general.architecture"] == m.details.family, shown
    assert shown.capabilities == ["completion"], shown
    running = client.ps()
    assert running.models[0].context_length > 0 and running.models[0].size > 0, running
    loaded = client.generate(model=m.model)  # no prompt: Ollama's "load the model"
    assert loaded.done and loaded.done_reason == "load", loaded

    for p in cases["chat"]:
        out["chat"][p] = chat(client, p, n, stream=False)
        out["chat_stream"][p] = chat(client, p, n, stream=True)
        out["templated"][p] = generate(client, p, n, stream=False, raw=False)
    for p in cases["text"]:
        out["raw"][p] = generate(client, p, n, stream=False, raw=True)
        out["raw_stream"][p] = generate(client, p, n, stream=True, raw=True)
    prompt, stop = cases["stop"]
    out["stop"] = generate(client, prompt, n, stream=True, raw=True, stop=stop)

    # A field of the wrong type: the server's 400 reaches the caller as ResponseError.
    try:
        client.chat(model="lckv", messages=[{"role": "user", "content": "hi"}],
                    options={"temperature": "hot"})
        raise AssertionError("a string temperature was accepted")
    except ollama.ResponseError as e:
        assert e.status_code == 400 and "temperature" in e.error, e
    return out


def main():
    base, key, n, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    headers = {"Authorization": f"Bearer {key}"}
    if sys.argv[5:] == ["--concurrent"]:
        out = {"concurrent": concurrent(base, headers, n, cases["chat"])}
    else:
        out = one_at_a_time(Client(host=base, headers=headers, timeout=60), n, cases)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
