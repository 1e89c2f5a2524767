"""HTTP-level checks of `lckv serve` with the standard library only (urllib, socket): the API
key, malformed and oversized bodies, unknown paths and methods, the /metrics counters, and that
a client that leaves in the middle of a generation frees its session (sessions_active back to 0
long before the generation could have ended). Exits non-zero with the failed assertion.

usage: http_checks.py BASE_URL API_KEY
"""

import json
import socket
import sys
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

BASE, KEY = sys.argv[1], sys.argv[2]
AUTH = {"Authorization": f"Bearer {KEY}"}
# A prompt a greedy model keeps counting after, for far longer than the checks wait.
COUNTING = "1, 2, 3, 4, 5, 6, 7, 8, 9, 10,"


def call(method, path, body=None, headers=None):
    """(status, headers, body bytes), whatever the status."""
    data = body if isinstance(body, (bytes, type(None))) else json.dumps(body).encode()
    req = urllib.request.Request(BASE + path, data=data, method=method,
                                 headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers, r.read()
    except urllib.error.HTTPError as e:
        return e.code, e.headers, e.read()


def metrics():
    status, _, body = call("GET", "/metrics", headers=AUTH)
    assert status == 200, status
    values = {}
    for line in body.decode().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split()
            values[name] = float(value)
    return values


def wait_idle(limit):
    """Seconds until no session is active, at most `limit`; None if it never happened."""
    t = time.monotonic()
    while time.monotonic() - t < limit:
        if metrics()["lckv_sessions_active"] == 0:
            return time.monotonic() - t
        time.sleep(0.05)
    return None


def check_auth():
    for path in ("/v1/models", "/api/tags", "/metrics"):
        status, headers, body = call("GET", path)
        assert status == 401, (path, status)
        assert headers["WWW-Authenticate"] == "Bearer", headers
    status, _, body = call("GET", "/v1/models", headers={"Authorization": "Bearer wrong"})
    assert status == 401 and b"API key" in body, (status, body)
    status, _, body = call("POST", "/v1/chat/completions", {"messages": []})
    assert status == 401, status
    # The health probe needs no key.
    status, _, body = call("GET", "/health")
    assert status == 200 and json.loads(body) == {"status": "ok"}, (status, body)


def check_bad_requests():
    status, _, body = call("POST", "/v1/chat/completions", b"{not json", AUTH)
    err = json.loads(body)["error"]
    assert status == 400 and err["type"] == "invalid_request_error", (status, body)
    assert "not valid JSON" in err["message"], err
    status, _, body = call("POST", "/api/chat", b"[1, 2]", AUTH)
    assert status == 400 and isinstance(json.loads(body)["error"], str), (status, body)
    status, _, body = call("POST", "/v1/completions", {"prompt": "x", "max_tokens": "many"}, AUTH)
    assert status == 400 and b"max_tokens" in body, (status, body)
    status, _, body = call("POST", "/api/generate",
                           {"prompt": "x", "options": {"num_predict": 1.5}}, AUTH)
    assert status == 400 and b"options.num_predict" in body, (status, body)
    status, _, body = call("POST", "/v1/completions", {"prompt": "x " * 5000, "max_tokens": 2},
                           AUTH)
    assert status == 400 and b"-c" in body, (status, body)  # longer than the context
    status, _, body = call("POST", "/v1/completions", b"x" * (2 << 20), AUTH)
    assert status == 413 and b"limit" in body, (status, body[:200])
    status, _, _ = call("GET", "/v1/nothing", headers=AUTH)
    assert status == 404, status
    status, headers, _ = call("GET", "/v1/chat/completions", headers=AUTH)
    assert status == 405 and headers["Allow"] == "POST", (status, headers)


def check_metrics():
    before = metrics()
    for name in ("lckv_prompt_tokens_total", "lckv_generated_tokens_total",
                 "lckv_requests_total", "lckv_sessions_active", "lckv_sessions_queued",
                 "lckv_kv_tokens", "lckv_kv_bytes", "lckv_kv_capacity_bytes",
                 "lckv_tokens_per_second", "lckv_requests_refused_busy_total"):
        assert name in before, name
    assert before["lckv_kv_capacity_bytes"] > 0 and before["lckv_sessions_max"] == 4, before
    status, _, body = call("POST", "/v1/completions",
                           {"prompt": "Hello", "max_tokens": 4, "temperature": 0}, AUTH)
    assert status == 200, (status, body)
    usage = json.loads(body)["usage"]
    after = metrics()
    assert after["lckv_requests_total"] == before["lckv_requests_total"] + 1, after
    # The engine counts a generated token when it is sampled, as usage does.
    generated = after["lckv_generated_tokens_total"] - before["lckv_generated_tokens_total"]
    assert generated == usage["completion_tokens"], (before, after, usage)
    assert after["lckv_prompt_tokens_total"] - before["lckv_prompt_tokens_total"] \
        == usage["prompt_tokens"], (before, after, usage)


def raw_request(path, body):
    u = urlparse(BASE)
    s = socket.create_connection((u.hostname, u.port), timeout=30)
    data = json.dumps(body).encode()
    s.sendall((f"POST {path} HTTP/1.1\r\nHost: {u.hostname}\r\n"
               f"Authorization: Bearer {KEY}\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\n\r\n").encode() + data)
    return s


def check_disconnect_mid_stream():
    s = raw_request("/v1/completions", {"prompt": COUNTING, "max_tokens": 1500,
                                         "temperature": 0, "stream": True})
    got = b""
    while got.count(b"data: ") < 4:
        chunk = s.recv(4096)
        assert chunk, got
        got += chunk
    assert b"[DONE]" not in got, got
    during = metrics()
    assert during["lckv_sessions_active"] == 1 and during["lckv_kv_tokens"] > 0, during
    s.close()
    took = wait_idle(5)
    assert took is not None, "the session of a client that left mid-stream is still active"
    after = metrics()
    generated = after["lckv_generated_tokens_total"] - during["lckv_generated_tokens_total"]
    assert generated < 300, f"{generated} tokens generated after the client left"
    assert after["lckv_kv_tokens"] == 0, after
    return took


def check_disconnect_while_waiting():
    # Not streamed: nothing is written until the end, so the server must notice the closed
    # socket by itself.
    s = raw_request("/v1/completions", {"prompt": COUNTING, "max_tokens": 1500,
                                         "temperature": 0})
    time.sleep(0.3)
    assert metrics()["lckv_sessions_active"] == 1
    s.close()
    took = wait_idle(5)
    assert took is not None, "the session of a client that left a whole request is still active"
    return took


def main():
    check_auth()
    check_bad_requests()
    check_metrics()
    stream_s = check_disconnect_mid_stream()
    whole_s = check_disconnect_while_waiting()
    print(json.dumps({"freed_after_stream_disconnect_s": round(stream_s, 3),
                      "freed_after_whole_disconnect_s": round(whole_s, 3)}))


if __name__ == "__main__":
    main()
