#!/usr/bin/env python3
"""Turns bench/run.sh's raw outputs into tables with ratios against the recorded anchors.

usage: report.py RESULTS_DIR [--docs docs/BENCHMARKS.md]

Reads RESULTS_DIR/{meta.txt, engine-*.json, server.jsonl, wrk.txt}, prints Markdown tables, and
with --docs replaces the text between the results markers of that file. Standard library only.

The anchors are llama.cpp numbers recorded on a 2-core AMD EPYC (Zen 3): llama.cpp cannot be
downloaded here, so every ratio compares this machine against that one.
"""
import datetime
import json
import pathlib
import re
import sys

# llama-bench -t 2 -p 512 -n 128 (tok/s).
ENGINE_ANCHORS = {
    "tinyllama-q8_0": {"label": "TinyLlama-1.1B Q8_0 (synthetic)", "pp": 42.0, "tg": 12.7},
    "tinyllama-q4_0": {"label": "TinyLlama-1.1B Q4_0 (synthetic)", "pp": 51.7, "tg": 19.9},
    "tinyllama-f16": {"label": "TinyLlama-1.1B F16 (synthetic)", "pp": 59.6, "tg": 7.6},
    "stories260K": {"label": "stories260K (bundled)", "pp": 13000.0, "tg": 2900.0},
}
# llama-server -np 8 -t 2, TinyLlama Q8_0, chat, 64 generated tokens, temperature 0.
SERVER_ANCHORS = {1: (10.5, 0.73), 4: (18.7, 2.7), 8: (22.0, 2.9)}

GOAL_PP = 0.8  # pp >= 0.8x llama.cpp
GOAL_TG = 1.0  # tg >= 1.0x llama.cpp
GOAL_BATCHED = 4.0  # 8-sequence batched decode >= 4x the single-sequence rate
GOAL_WRK = 50_000  # GET /v1/models req/s with 64 keep-alive connections

BEGIN = "<!-- bench:results:begin (bench/report.py rewrites this section) -->"
END = "<!-- bench:results:end -->"


def verdict(ok):
    return "meets" if ok else "**misses**"


def fmt(x):
    if x is None:
        return "-"
    if x >= 1000:
        return f"{x:,.0f}"
    if x >= 100:
        return f"{x:.0f}"
    if x >= 10:
        return f"{x:.1f}"
    return f"{x:.2f}"


def read_meta(res):
    meta = {}
    path = res / "meta.txt"
    if path.exists():
        for line in path.read_text().splitlines():
            if "=" in line:
                k, v = line.split("=", 1)
                meta[k] = v
    return meta


def side_by_side_section(res):
    """bench/engine_vs_llama.sh's table: both engines measured in this run, on these files."""
    path = res / "side_by_side.json"
    if not path.exists():
        return [], []
    j = json.loads(path.read_text())
    out = [
        f"Both engines measured in this run, alternating, same files, medians of {j['rounds']} "
        f"rounds; llama.cpp commit {j['peer_commit']} (`bench/engine_vs_llama.sh`).",
        "",
        "| model | Gantry pp512 | llama.cpp pp512 | ratio | Gantry tg128 | llama.cpp tg128 | ratio |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    goals = []
    for m in j["models"]:
        out.append(f"| {m['model']} | {fmt(m['gantry_pp'])} | {fmt(m['llama_pp'])} "
                   f"| {m['pp_ratio']:.2f}x | {fmt(m['gantry_tg'])} | {fmt(m['llama_tg'])} "
                   f"| {m['tg_ratio']:.2f}x |")
        goals.append(f"{m['model']} vs llama.cpp here: pp {m['pp_ratio']:.2f}x, tg "
                     f"{m['tg_ratio']:.2f}x (goal 1.2x: pp {verdict(m['pp_ratio'] >= 1.2)}, "
                     f"tg {verdict(m['tg_ratio'] >= 1.2)})")
    # Issue 16's bandwidth goal, by Gantry's own step-by-step probe (decode steps each followed by
    # a plain read of the same weights), which the goal names for Q8_0 and F16.
    probed = [m for m in j["models"] if "decode_read_ratio" in m]
    if probed:
        out += ["", "Decode against a plain read of its own weights, step by step (`gantry bench "
                "engine --read-probe`, medians of the rounds):", ""]
        for m in probed:
            r = m["decode_read_ratio"]
            out.append(f"- {m['model']}: {m['probe_decode_gbps']:.1f} of {m['probe_read_gbps']:.1f} "
                       f"GB/s, {100 * r:.0f} %")
            if m["model"].endswith(("q8_0", "f16")):
                goals.append(f"{m['model']} decode at {100 * r:.0f} % of a read of its weights "
                             f"(goal 90 %: {verdict(r >= 0.9)})")
    return out, goals


def engine_section(res):
    if (res / "side_by_side.json").exists():
        return engine_own_section(res)
    rows = []
    for key in ENGINE_ANCHORS:
        path = res / f"engine-{key}.json"
        if not path.exists() or not path.read_text().strip():
            continue
        j = json.loads(path.read_text().strip().splitlines()[-1])
        a = ENGINE_ANCHORS[key]
        pp, tg, btg = j["pp_tokens_per_s"], j["tg_tokens_per_s"], j["batched_tg_tokens_per_s"]
        rows.append((a, j, pp, tg, btg))
    if not rows:
        return [], []
    out = [
        "No llama.cpp peer found (`GANTRY_PEER_DIR`, default `../peers/llama.cpp`): ratios are "
        "against the **recorded anchors**, measured once on a different machine.",
        "",
        "| model | pp512 tok/s | llama.cpp | ratio | tg tok/s | llama.cpp tg128 | ratio "
        "| 8-seq batched tg tok/s | batched / tg |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    goals = []
    for a, j, pp, tg, btg in rows:
        rp, rt, rb = pp / a["pp"], tg / a["tg"], (btg / tg if tg else 0)
        out.append(
            f"| {a['label']} | {fmt(pp)} | {fmt(a['pp'])} | {rp:.2f}x | {fmt(tg)} (tg{j['n_gen']}) "
            f"| {fmt(a['tg'])} | {rt:.2f}x | {fmt(btg)} | {rb:.2f}x |"
        )
        goals.append(f"{a['label']}: pp {rp:.2f}x (goal {GOAL_PP}x, {verdict(rp >= GOAL_PP)}), "
                     f"tg {rt:.2f}x (goal {GOAL_TG}x, {verdict(rt >= GOAL_TG)}), "
                     f"batched {rb:.2f}x (goal {GOAL_BATCHED}x, {verdict(rb >= GOAL_BATCHED)})")
    reps = rows[0][1]["repetitions"]
    out.append("")
    out.append(f"Medians of {reps} repetition{'s' if reps != 1 else ''} "
               f"(llama-bench uses 5), {rows[0][1]['threads']} threads, 8 sequences for batched tg; "
               "tg ratios compare tgN here with tg128 there.")
    return out, goals


def engine_own_section(res):
    """Gantry's own engine runs when the side-by-side table carries the llama.cpp ratios."""
    out = [
        "| model | pp512 tok/s | tg tok/s | 8-seq batched tg tok/s | batched / tg |",
        "|---|---:|---:|---:|---:|",
    ]
    goals = []
    for key in ENGINE_ANCHORS:
        path = res / f"engine-{key}.json"
        if not path.exists() or not path.read_text().strip():
            continue
        j = json.loads(path.read_text().strip().splitlines()[-1])
        pp, tg, btg = j["pp_tokens_per_s"], j["tg_tokens_per_s"], j["batched_tg_tokens_per_s"]
        rb = btg / tg if tg else 0
        out.append(f"| {ENGINE_ANCHORS[key]['label']} | {fmt(pp)} | {fmt(tg)} (tg{j['n_gen']}) "
                   f"| {fmt(btg)} | {rb:.2f}x |")
        goals.append(f"{ENGINE_ANCHORS[key]['label']}: batched {rb:.2f}x "
                     f"(goal {GOAL_BATCHED}x, {verdict(rb >= GOAL_BATCHED)})")
    if len(out) == 2:
        return [], []
    out += ["", "llama.cpp ratios: see the side-by-side table above (the recorded anchors are "
            "not used when the peer is present)."]
    return out, goals


def server_section(res):
    path = res / "server.jsonl"
    if not path.exists():
        return [], []
    levels = [json.loads(l) for l in path.read_text().splitlines() if l.strip()]
    if not levels:
        return [], []
    out = [
        "| clients | requests | errors | aggregate tok/s | llama-server | ratio | TTFT p50 s "
        "| llama-server | ratio (lower is better) | TTFT p99 s | per-request tok/s p50 |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    goals = []
    for l in levels:
        n = l["clients"]
        agg, p50 = l["agg_tokens_per_s"], l["ttft_p50_s"]
        anchor = SERVER_ANCHORS.get(n)
        if anchor:
            ra, rt = agg / anchor[0], p50 / anchor[1]
            cols = f"{fmt(anchor[0])} | {ra:.2f}x | {p50:.2f} | {fmt(anchor[1])} | {rt:.2f}x"
        else:
            cols = f"- | - | {p50:.2f} | - | -"
        out.append(f"| {n} | {l['requests']} | {l['errors']} | {fmt(agg)} | {cols} "
                   f"| {l['ttft_p99_s']:.2f} | {fmt(l['per_request_tokens_per_s_p50'])} |")
        if n == 8 and anchor:
            goals.append(f"server at 8 clients: aggregate {agg / anchor[0]:.2f}x llama-server "
                         f"(goal 1.0x, {verdict(agg >= anchor[0])}), TTFT p50 {p50:.2f} s vs "
                         f"{anchor[1]} s ({verdict(p50 <= anchor[1])})")
        if l["errors"]:
            goals.append(f"server at {n} clients: {l['errors']} failed requests "
                         f"({l.get('first_error', '')})")
    out.append("")
    out.append("TTFT p99 is the nearest-rank percentile; with this few requests per level it "
               "is the slowest request. No anchor exists for 16 clients.")
    return out, goals


def wrk_section(res):
    path = res / "wrk.txt"
    if not path.exists():
        return [], []
    text = path.read_text()
    m = re.search(r"Requests/sec:\s*([\d.]+)", text)
    if not m:
        return [f"wrk output unreadable: {path}"], []
    rps = float(m.group(1))
    lat = re.search(r"Latency\s+(\S+)\s+(\S+)\s+(\S+)", text)
    errs = re.search(r"Non-2xx or 3xx responses:\s*(\d+)", text)
    sock = re.search(r"Socket errors:.*", text)
    out = [
        "| endpoint | connections | req/s | goal | ratio | latency avg / max | errors |",
        "|---|---:|---:|---:|---:|---|---|",
        f"| GET /v1/models | 64 | {fmt(rps)} | {GOAL_WRK:,} | {rps / GOAL_WRK:.2f}x "
        f"| {lat.group(1) + ' / ' + lat.group(3) if lat else '-'} "
        f"| {(errs.group(1) + ' non-2xx') if errs else 'none'}"
        f"{'; ' + sock.group(0) if sock else ''} |",
    ]
    return out, [f"GET /v1/models: {rps:,.0f} req/s (goal {GOAL_WRK:,}, {verdict(rps >= GOAL_WRK)})"]


def build_report(res):
    meta = read_meta(res)
    lines = [
        f"Run of {meta.get('date', datetime.datetime.utcnow().strftime('%Y-%m-%d %H:%M UTC'))} "
        f"on **{meta.get('cpu', '?')}**, {meta.get('cores', '?')} cores "
        f"(anchors: 2-core AMD EPYC Zen 3), commit `{meta.get('commit', '?')}`; "
        f"build: {meta.get('build', '?')}; "
        f"load average (1/5/15 min) at start {meta.get('load_start', '?')}, "
        f"at end {meta.get('load_end', '?')}.",
        "",
        "Command: `make bench` (= `./bench/run.sh`; "
        f"THREADS={meta.get('threads', '2')} REPS={meta.get('reps', '3')} "
        f"GEN_TOKENS={meta.get('gen_tokens', '32')} LEVELS={meta.get('levels', '1,4,8,16')} "
        f"ROUNDS={meta.get('rounds', '2')} WRK_SECONDS={meta.get('wrk_seconds', '10')}).",
        "",
    ]
    goals = []
    for title, (body, g) in (
        ("Engine side by side with llama.cpp (`llama-bench`), this machine",
         side_by_side_section(res)),
        ("Engine (`gantry bench engine`) vs llama-bench", engine_section(res)),
        ("Server (`bench/stream_load`, TinyLlama Q8_0, 64 tokens per request) vs llama-server",
         server_section(res)),
        (f"HTTP (`wrk -t2 -c64 -d{meta.get('wrk_seconds', '10')}s`, bundled model server)",
         wrk_section(res)),
    ):
        if body:
            lines += [f"#### {title}", ""] + body + [""]
            goals += g
    if goals:
        lines += ["#### Goals", ""] + [f"- {g}" for g in goals] + [""]
    return "\n".join(lines)


def write_docs(path, report):
    text = path.read_text() if path.exists() else f"# Benchmarks\n\n{BEGIN}\n{END}\n"
    if BEGIN not in text or END not in text:
        text = text.rstrip("\n") + f"\n\n## Latest results\n\n{BEGIN}\n{END}\n"
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{report}\n{END}{tail}")


def main(argv):
    if len(argv) < 2:
        print(__doc__, file=sys.stderr)
        return 2
    res = pathlib.Path(argv[1])
    report = build_report(res)
    print(report)
    (res / "report.md").write_text(report + "\n")
    if len(argv) >= 4 and argv[2] == "--docs":
        write_docs(pathlib.Path(argv[3]), report)
        print(f"(results written to {argv[3]})", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
