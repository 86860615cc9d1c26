#!/usr/bin/env python3
"""Soak: mixed traffic against one `gantry serve` for a bounded time, sampling its resources.

usage: bench/soak.py [--seconds 1800] [--sample-s 10] [--binary build/gantry] [--docs FILE]

Traffic (threads, all on 127.0.0.1): streamed chats read to the end; streams cancelled after a
few events (the client closes mid-stream); clients that stall (open a stream and stop reading for
a while); non-streamed completions at temperature 0 that become response-cache hits; a key with a
small RPM limit hammered into 429s; jobs submitted with `Prefer: wait` and without (then polled);
embeddings; Idempotency-Key retries.

Every --sample-s seconds it records the server's RSS, open file descriptors, threads and the
SQLite WAL size. After the warm-up (the first fifth of the run, at least one sample) it fails if
RSS, fds or threads at the end exceed their post-warm-up value by more than 10% (fds and threads
with a floor of +4 and +2 for what is in flight at the instant of a sample), or if the WAL keeps
growing (least-squares slope over the second half > 0 and the end above 64 MiB). The curve is
written to bench/out/soak.csv and summarised as Markdown; --docs appends the summary to FILE.
Standard library only. Exit status 1 when a bound failed, 2 when the server died.
"""
import argparse
import http.client
import json
import os
import pathlib
import random
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


# The caches and the idempotency store fill towards their byte bounds (64 MiB and more by
# default) and only then stay flat; with the defaults that takes longer than a soak, so RSS would
# look like a leak. The soak gives them small bounds, reached during the warm-up, so the run shows
# each bound being enforced (their byte gauges are reported against the bounds at the end).
SMALL_BOUNDS = """
idempotency_max_bytes = 2097152
[cache]
max_bytes = 2097152
embedding_max_bytes = 1048576
"""
BOUNDED = [("gantry:idempotency_bytes", "idempotency_max_bytes", 2097152),
           ('gantry:cache_bytes{cache="response"}', "cache.max_bytes", 2097152),
           ('gantry:cache_bytes{cache="embedding"}', "cache.embedding_max_bytes", 1048576)]


class Server:
    def __init__(self, binary, data_dir, port):
        self.port = port
        self.log = open(os.path.join(data_dir, "server.log"), "wb")
        config = os.path.join(data_dir, "soak.toml")
        with open(config, "w") as f:
            f.write(SMALL_BOUNDS)
        self.proc = subprocess.Popen(
            [binary, "serve", "--port", str(port), "--data-dir", data_dir, "--config", config,
             "--model", "stories260K=" + str(ROOT / "models/stories260K.gguf")],
            stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 60
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit("soak: server exited at start; see " + self.log.name)
            try:
                c = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
                c.request("GET", "/readyz")
                if c.getresponse().status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise SystemExit("soak: server not ready after 60 s")

    def sample(self, data_dir):
        pid = self.proc.pid
        rss = threads = 0
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    rss = int(line.split()[1]) // 1024
                elif line.startswith("Threads:"):
                    threads = int(line.split()[1])
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        wal = os.path.join(data_dir, "gantry.db-wal")
        wal_mb = os.path.getsize(wal) / 2**20 if os.path.exists(wal) else 0.0
        return {"rss_mb": rss, "fds": fds, "threads": threads, "wal_mb": round(wal_mb, 2)}

    def metrics(self):
        try:
            c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=5)
            c.request("GET", "/metrics")
            text = c.getresponse().read().decode()
        except OSError:
            return {}
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = value
        return out

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=40)
            except subprocess.TimeoutExpired:
                self.proc.kill()


def create_key(binary, data_dir, *args):
    out = subprocess.check_output([binary, "keys", "create", "--data-dir", data_dir, "--json",
                                   *args])
    doc = json.loads(out)
    return doc.get("key") or doc.get("secret")


class Traffic:
    def __init__(self, port, key, limited_key, stop):
        self.port, self.key, self.limited, self.stop = port, key, limited_key, stop
        self.counts = {}
        self.lock = threading.Lock()

    def count(self, what):
        with self.lock:
            self.counts[what] = self.counts.get(what, 0) + 1

    def conn(self, timeout=30):
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def post(self, path, body, key=None, headers=None, timeout=30):
        c = self.conn(timeout)
        h = {"Content-Type": "application/json",
             "Authorization": "Bearer " + (key or self.key)}
        h.update(headers or {})
        c.request("POST", path, json.dumps(body), h)
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def chat(self, text, **kw):
        return dict(model="stories260K", messages=[{"role": "user", "content": text}], **kw)

    def loop(self, fn):
        rnd = random.Random(hash(fn.__name__))
        while not self.stop.is_set():
            try:
                fn(rnd)
            except (OSError, http.client.HTTPException) as e:
                self.count("client_error:" + type(e).__name__)
            time.sleep(rnd.uniform(0.01, 0.1))

    def stream_full(self, rnd):
        s, _ = self.post("/v1/chat/completions",
                         self.chat("Once upon a time %d" % rnd.randrange(10**6), max_tokens=48,
                                   stream=True, stream_options={"include_usage": True}))
        self.count("stream_%d" % s)

    def stream_cancel(self, rnd):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        body = json.dumps(self.chat("A long story %d" % rnd.randrange(10**6), max_tokens=256,
                                    stream=True, ignore_eos=True))
        sock.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s"
                      "\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (self.key, len(body), body)).encode())
        sock.recv(2048)
        sock.close()  # mid-stream: the engine must cancel the sequence
        self.count("stream_cancelled")

    def stream_stall(self, rnd):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=10)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        body = json.dumps(self.chat("Stall %d" % rnd.randrange(10**6), max_tokens=200,
                                    stream=True, ignore_eos=True))
        sock.sendall(("POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s"
                      "\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%s"
                      % (self.key, len(body), body)).encode())
        self.stop.wait(rnd.uniform(2, 6))  # a client that stops reading
        sock.close()
        self.count("stream_stalled")

    def cached(self, rnd):
        s, _ = self.post("/v1/completions",
                         dict(model="stories260K", prompt="Lily had a %d" % rnd.randrange(20),
                              max_tokens=16, temperature=0))
        self.count("cached_%d" % s)

    def limited_429(self, rnd):
        s, _ = self.post("/v1/completions",
                         dict(model="stories260K", prompt="x", max_tokens=2), key=self.limited)
        self.count("limited_%d" % s)

    def jobs(self, rnd):
        body = dict(endpoint="/v1/chat/completions",
                    body=self.chat("Job %d" % rnd.randrange(10**6), max_tokens=16))
        if rnd.random() < 0.5:
            s, _ = self.post("/v1/jobs", body, headers={"Prefer": "wait=10"}, timeout=20)
            self.count("job_wait_%d" % s)
            return
        s, data = self.post("/v1/jobs", body)
        self.count("job_%d" % s)
        if s == 202:
            jid = json.loads(data)["id"]
            for _ in range(50):
                c = self.conn()
                c.request("GET", "/v1/jobs/" + jid, headers={"Authorization": "Bearer " + self.key})
                r = c.getresponse()
                doc = json.loads(r.read())
                c.close()
                if doc.get("status") in ("succeeded", "failed", "canceled", "expired"):
                    break
                self.stop.wait(0.2)

    def embeddings(self, rnd):
        s, _ = self.post("/v1/embeddings",
                         dict(model="stories260K",
                              input=["text %d" % rnd.randrange(10**6), "the cat sat"]),
                         headers={"Cache-Control": "no-store"})
        self.count("embeddings_%d" % s)

    def idempotent(self, rnd):
        k = "soak-%d" % rnd.randrange(10**9)
        for _ in range(2):
            s, _ = self.post("/v1/completions",
                             dict(model="stories260K", prompt="Idem", max_tokens=8),
                             headers={"Idempotency-Key": k})
            self.count("idempotent_%d" % s)


def slope(ys):
    n = len(ys)
    if n < 2:
        return 0.0
    mx = (n - 1) / 2
    my = sum(ys) / n
    den = sum((i - mx) ** 2 for i in range(n))
    return sum((i - mx) * (y - my) for i, y in enumerate(ys)) / den


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=int, default=int(os.environ.get("SOAK_SECONDS", 1800)))
    ap.add_argument("--sample-s", type=float, default=10)
    ap.add_argument("--binary", default=str(ROOT / "build/gantry"))
    ap.add_argument("--docs")
    a = ap.parse_args()
    # A soak stopped from outside still stops its server (the finally below runs on SystemExit).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(3))

    data_dir = tempfile.mkdtemp(prefix="gantry-soak-")
    key = create_key(a.binary, data_dir, "--project", "soak")
    limited = create_key(a.binary, data_dir, "--project", "limited", "--rpm", "5")
    srv = Server(a.binary, data_dir, free_port())
    stop = threading.Event()
    t = Traffic(srv.port, key, limited, stop)
    workers = [t.stream_full, t.stream_full, t.stream_cancel, t.stream_stall, t.cached,
               t.limited_429, t.jobs, t.embeddings, t.idempotent]
    threads = [threading.Thread(target=t.loop, args=(w,), daemon=True) for w in workers]
    for th in threads:
        th.start()

    samples = []
    start = time.time()
    died = False
    try:
        while time.time() - start < a.seconds:
            time.sleep(min(a.sample_s, max(0.0, a.seconds - (time.time() - start))))
            if srv.proc.poll() is not None:
                died = True
                break
            s = srv.sample(data_dir)
            s["t_s"] = round(time.time() - start)
            samples.append(s)
            print("soak t=%4ds rss=%dMB fds=%d threads=%d wal=%.1fMB" %
                  (s["t_s"], s["rss_mb"], s["fds"], s["threads"], s["wal_mb"]), flush=True)
    finally:
        stop.set()
        for th in threads:
            th.join(timeout=15)
        gauges = srv.metrics()
        srv.stop()

    out = ROOT / "bench/out"
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "soak.csv", "w") as f:
        f.write("t_s,rss_mb,fds,threads,wal_mb\n")
        for s in samples:
            f.write("%d,%d,%d,%d,%.2f\n" % (s["t_s"], s["rss_mb"], s["fds"], s["threads"],
                                           s["wal_mb"]))
    if died or len(samples) < 2:
        print("soak: the server died or too few samples; see " + srv.log.name)
        return 2

    # Each side is the median of a window (a tenth of the run, at least 3 samples): one sample
    # catches whatever connections are in flight at that instant, which is noise, not growth.
    warm = max(1, len(samples) // 5)
    w = max(3, len(samples) // 10)

    def window(rows):
        mid = {}
        for k in ("rss_mb", "fds", "threads"):
            vals = sorted(r[k] for r in rows)
            mid[k] = vals[len(vals) // 2]
        mid["t_s"] = rows[-1]["t_s"]
        mid["wal_mb"] = rows[-1]["wal_mb"]
        return mid

    base = window(samples[warm - 1:warm - 1 + w])
    end = window(samples[-w:])
    floors = {"rss_mb": 0, "fds": 4, "threads": 2}
    failures = []
    rows = []
    for k in ("rss_mb", "fds", "threads"):
        limit = max(base[k] * 1.10, base[k] + floors[k])
        ok = end[k] <= limit
        rows.append((k, base[k], end[k], limit, ok))
        if not ok:
            failures.append(k)
    half = [s["wal_mb"] for s in samples[len(samples) // 2:]]
    wal_ok = not (slope(half) > 0 and end["wal_mb"] > 64)
    if not wal_ok:
        failures.append("wal_mb")

    md = ["### Soak (`bench/soak.py --seconds %d`), %s" % (a.seconds,
                                                          time.strftime("%Y-%m-%d %H:%M UTC",
                                                                        time.gmtime())),
          "",
          "| resource | after warm-up (median to t=%ds) | end (median of the last samples, t=%ds) | bound | ok |" % (base["t_s"],
                                                                            end["t_s"]),
          "|---|---:|---:|---:|---|"]
    for k, b, e, lim, ok in rows:
        md.append("| %s | %s | %s | %.0f | %s |" % (k, b, e, lim, "yes" if ok else "**no**"))
    md.append("| wal_mb | %.1f | %.1f | no growth past 64 MiB | %s |" %
              (base["wal_mb"], end["wal_mb"], "yes" if wal_ok else "**no**"))
    md += ["", "Bounded structures at the end (the soak's small bounds): " + ", ".join(
        "%s %s of %d (%s)" % (name, gauges.get(name, "?"), bound, key)
        for name, key, bound in BOUNDED)]
    md += ["", "Traffic: " + ", ".join("%s %d" % kv for kv in sorted(t.counts.items())), "",
           "Curve (every %gs): " % a.sample_s +
           " ".join("%d/%d/%d" % (s["rss_mb"], s["fds"], s["threads"]) for s in samples) +
           " (RSS MB/fds/threads)", ""]
    print("\n".join(md))
    if a.docs:
        with open(a.docs, "a") as f:
            f.write("\n" + "\n".join(md))
    if failures:
        print("soak: FAILED bounds: " + ", ".join(failures))
        return 1
    print("soak: flat")
    return 0


if __name__ == "__main__":
    sys.exit(main())
