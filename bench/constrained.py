#!/usr/bin/env python3
"""Constrained vs unconstrained decoding on one running `gantry serve` (issue 17): the same
prompt, greedy, streamed, alternating the two kinds of request in every round so drift on the
shared cores hits both alike.

  constrained.py --port P --model NAME [--rounds 7] [--tokens 64]

Per request it measures, from the SSE stream: decode ms per token (first content chunk to the
last, divided by the tokens between) and the request's wall time per generated token. The
unconstrained request runs with ignore_eos for exactly --tokens tokens; the constrained one asks
for a JSON schema whose documents are long (an array of up to 64 bounded records), with the
same max_tokens, and is measured over the tokens it generated. Prints medians and the
constrained/unconstrained ratios as one JSON line on stdout.
"""
import argparse
import http.client
import json
import statistics
import time

SCHEMA = {
    "type": "array",
    "minItems": 64,
    "maxItems": 64,
    "items": {
        "type": "object",
        "properties": {
            "name": {"type": "string", "maxLength": 12},
            "age": {"type": "integer", "minimum": 0, "maximum": 120},
            "tags": {"type": "array", "items": {"enum": ["red", "green", "blue"]},
                     "maxItems": 3},
        },
        "required": ["name", "age", "tags"],
        "additionalProperties": False,
    },
}


def stream(port, body):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    start = time.perf_counter()
    conn.request("POST", "/v1/chat/completions", json.dumps(body),
                 {"Content-Type": "application/json"})
    resp = conn.getresponse()
    if resp.status != 200:
        raise SystemExit(f"HTTP {resp.status}: {resp.read()[:300]!r}")
    stamps, usage, text = [], None, ""
    for raw in resp:
        line = raw.decode().strip()
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        chunk = json.loads(line[6:])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for c in chunk.get("choices", []):
            piece = c.get("delta", {}).get("content")
            if piece:
                stamps.append(time.perf_counter())
                text += piece
    end = time.perf_counter()
    conn.close()
    n = usage["completion_tokens"] if usage else 0
    decode = (stamps[-1] - stamps[0]) * 1000 / max(n - 1, 1) if len(stamps) > 1 else float("nan")
    return {"tokens": n, "decode_ms_per_token": decode,
            "wall_ms_per_token": (end - start) * 1000 / max(n, 1), "text": text}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0,
                    help="0: greedy; otherwise sampled with a fixed seed")
    a = ap.parse_args()
    base = {"model": a.model, "messages": [{"role": "user", "content": "Once upon a time"}],
            "max_tokens": a.tokens, "temperature": a.temperature, "seed": 1, "stream": True,
            "stream_options": {"include_usage": True}, "cache": False}
    free = dict(base, ignore_eos=True)
    constrained = dict(base, response_format={
        "type": "json_schema", "json_schema": {"name": "people", "strict": True, "schema": SCHEMA}})
    stream(a.port, free)  # warm-up: the prefix cache and first-touch pages
    stream(a.port, constrained)  # warm-up: the grammar is compiled once and cached
    res = {"free": [], "constrained": []}
    for _ in range(a.rounds):
        res["free"].append(stream(a.port, free))
        res["constrained"].append(stream(a.port, constrained))
    out = {"model": a.model, "rounds": a.rounds, "max_tokens": a.tokens,
           "temperature": a.temperature}
    for kind in ("free", "constrained"):
        for k in ("decode_ms_per_token", "wall_ms_per_token", "tokens"):
            out[f"{kind}_{k}"] = statistics.median(r[k] for r in res[kind])
    out["decode_ratio"] = out["constrained_decode_ms_per_token"] / out["free_decode_ms_per_token"]
    out["wall_ratio"] = out["constrained_wall_ms_per_token"] / out["free_wall_ms_per_token"]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
