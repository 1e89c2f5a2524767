"""Drives `lckv serve` with the official `openai` client (pinned in scripts/setup_venv.sh):
greedy chat and text completions, streamed and not, a stop string, a request the server
refuses, and four clients at once on different prompts. Checks the shapes the client parses,
and prints the texts it got as one JSON object; tests/serve_clients.rs compares them with
`lckv run`.

usage: openai_client.py BASE_URL API_KEY MAX_TOKENS CASES_JSON [--concurrent]
CASES_JSON: {"chat": [prompt, ...], "text": [prompt, ...], "stop": [prompt, stop]}
--concurrent: only the four clients at once (one per chat prompt).
"""

import json
import sys
import threading

import openai
from openai import OpenAI


def chat_whole(client, prompt, n):
    r = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_tokens=n,
    )
    assert r.object == "chat.completion", r
    assert r.id.startswith("chatcmpl-") and r.created > 0 and r.model, r
    c = r.choices[0]
    assert c.index == 0 and c.message.role == "assistant", r
    assert c.finish_reason in ("stop", "length"), r
    u = r.usage
    assert 0 < u.completion_tokens <= n and u.prompt_tokens > 0, u
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens, u
    return {"text": c.message.content, "finish": c.finish_reason, "tokens": u.completion_tokens}


def chat_stream(client, prompt, n, include_usage=True):
    stream = client.chat.completions.create(
        model="any",
        messages=[{"role": "user", "content": prompt}],
        temperature=0,
        max_completion_tokens=n,
        stream=True,
        stream_options={"include_usage": include_usage},
    )
    pieces, finish, usage, ids, roles = [], None, None, set(), []
    for chunk in stream:
        assert chunk.object == "chat.completion.chunk", chunk
        ids.add(chunk.id)
        if chunk.usage is not None:
            assert chunk.choices == [], chunk
            usage = chunk.usage
        for c in chunk.choices:
            if c.delta.role:
                roles.append(c.delta.role)
            if c.delta.content:
                pieces.append(c.delta.content)
            if c.finish_reason:
                finish = c.finish_reason
    assert len(ids) == 1, ids
    assert roles == ["assistant"], roles
    assert finish in ("stop", "length"), finish
    if include_usage:
        assert usage is not None and usage.completion_tokens <= n, usage
    return {"text": "".join(pieces), "finish": finish,
            "tokens": usage.completion_tokens if usage else None}


def text_whole(client, prompt, n, stop=None):
    r = client.completions.create(model="any", prompt=prompt, temperature=0, max_tokens=n,
                                  stop=stop)
    assert r.object == "text_completion", r
    assert r.id.startswith("cmpl-"), r
    c = r.choices[0]
    assert c.finish_reason in ("stop", "length"), r
    assert r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens
    return {"text": c.text, "finish": c.finish_reason, "tokens": r.usage.completion_tokens}


def text_stream(client, prompt, n):
    stream = client.completions.create(model="any", prompt=prompt, temperature=0,
                                       max_tokens=n, stream=True,
                                       stream_options={"include_usage": True})
    pieces, finish, usage = [], None, None
    for chunk in stream:
        assert chunk.object == "text_completion", chunk
        if chunk.usage is not None:
            usage = chunk.usage
        for c in chunk.choices:
            pieces.append(c.text)
            if c.finish_reason:
                finish = c.finish_reason
    assert finish in ("stop", "length") and usage is not None, (finish, usage)
    return {"text": "".join(pieces), "finish": finish, "tokens": usage.completion_tokens}


def concurrent(base, key, n, prompts):
    """Four clients at once, each its own prompt and its own connection."""
    out, errors = {}, []

    def worker(p):
        try:
            own = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
            out[p] = chat_stream(own, p, n, include_usage=False)
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
    out = {"chat": {}, "chat_stream": {}, "text": {}, "text_stream": {}}
    models = client.models.list()
    assert len(models.data) == 1 and models.data[0].object == "model", models
    out["model"] = models.data[0].id

    for p in cases["chat"]:
        out["chat"][p] = chat_whole(client, p, n)
        out["chat_stream"][p] = chat_stream(client, p, n)
    for p in cases["text"]:
        out["text"][p] = text_whole(client, p, n)
        out["text_stream"][p] = text_stream(client, p, n)
    prompt, stop = cases["stop"]
    out["stop"] = text_whole(client, prompt, n, stop=[stop])

    # A field of the wrong type: the client raises the server's 400 as BadRequestError.
    try:
        client.chat.completions.create(model="any", messages=[{"role": "user", "content": "hi"}],
                                       temperature="hot")
        raise AssertionError("a string temperature was accepted")
    except openai.BadRequestError as e:
        assert e.status_code == 400 and "temperature" in str(e), e
    return out


def main():
    base, key, n, cases = sys.argv[1], sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
    if sys.argv[5:] == ["--concurrent"]:
        out = {"concurrent": concurrent(base, key, n, cases["chat"])}
    else:
        client = OpenAI(base_url=base + "/v1", api_key=key, max_retries=0, timeout=60)
        out = one_at_a_time(client, n, cases)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
