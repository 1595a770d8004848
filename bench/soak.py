"""Soak test (not CI): mixed embed, rerank and streamed chat load against a running
`gllm serve` on loopback, with the server's RSS sampled each minute.

usage: python3 bench/soak.py BASE_URL SERVER_PID MINUTES [CLIENTS]

Prints one line per minute (requests done by kind, errors, RSS, active generations from
/metrics) and a summary; exits non-zero if any request failed for a reason other than
429 (a full queue is back-pressure, not a failure) or if the server stopped answering.
"""

import json
import random
import sys
import threading
import time
import urllib.error
import urllib.request

base, pid, minutes = sys.argv[1].rstrip("/"), int(sys.argv[2]), float(sys.argv[3])
clients = int(sys.argv[4]) if len(sys.argv) > 4 else 6
deadline = time.time() + minutes * 60
lock = threading.Lock()
counts = {"embed": 0, "rerank": 0, "chat": 0, "busy": 0, "errors": 0}
failures = []

WORDS = "the quick brown fox jumps over a lazy dog while rust compiles kernels fast".split()


def text(rng, n):
    return " ".join(rng.choice(WORDS) for _ in range(n))


def post(path, body, stream=False):
    req = urllib.request.Request(
        base + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(req, timeout=120) as r:
        if stream:
            data = b""
            for line in r:
                data += line
            return data.decode()
        return json.loads(r.read())


def worker(seed):
    rng = random.Random(seed)
    while time.time() < deadline:
        kind = rng.choice(["embed", "rerank", "chat"])
        try:
            if kind == "embed":
                out = post("/v1/embeddings", {"input": [text(rng, rng.randint(1, 60)) for _ in range(rng.randint(1, 16))]})
                assert len(out["data"]) >= 1
            elif kind == "rerank":
                out = post(
                    "/v1/rerank",
                    {"query": text(rng, 8), "documents": [text(rng, rng.randint(1, 80)) for _ in range(rng.randint(1, 12))]},
                )
                assert out["results"]
            else:
                out = post(
                    "/v1/chat/completions",
                    {
                        "messages": [{"role": "user", "content": text(rng, rng.randint(1, 200))}],
                        "max_tokens": rng.randint(1, 64),
                        "temperature": rng.choice([0, 0.7, 1.0]),
                        "stream": True,
                    },
                    stream=True,
                )
                assert out.rstrip().endswith("data: [DONE]"), out[-200:]
            with lock:
                counts[kind] += 1
        except urllib.error.HTTPError as e:
            with lock:
                if e.code == 429:
                    counts["busy"] += 1
                else:
                    counts["errors"] += 1
                    failures.append(f"{kind}: HTTP {e.code}: {e.read()[:200]!r}")
        except Exception as e:  # noqa: BLE001 - every failure is reported
            with lock:
                counts["errors"] += 1
                failures.append(f"{kind}: {e!r}")


def rss_mib():
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def active_generations():
    with urllib.request.urlopen(base + "/metrics", timeout=10) as r:
        for line in r.read().decode().splitlines():
            if line.startswith("gllm_generations_active"):
                return float(line.rsplit(" ", 1)[1])
    return float("nan")


threads = [threading.Thread(target=worker, args=(i,), daemon=True) for i in range(clients)]
start = time.time()
for t in threads:
    t.start()
samples = [rss_mib()]
print(f"minute 0: RSS {samples[0]:.0f} MiB ({clients} clients)", flush=True)
minute = 0
while time.time() < deadline:
    time.sleep(min(60, max(0.0, deadline - time.time())))
    minute += 1
    samples.append(rss_mib())
    with lock:
        c = dict(counts)
    print(f"minute {minute}: {c}, RSS {samples[-1]:.0f} MiB, active {active_generations():.0f}", flush=True)
for t in threads:
    t.join(timeout=180)
time.sleep(2)
end_active = active_generations()
print(
    f"soak: {minutes:g} min, {sum(counts[k] for k in ('embed', 'rerank', 'chat'))} requests "
    f"({counts['embed']} embed, {counts['rerank']} rerank, {counts['chat']} streamed chat), "
    f"{counts['busy']} answered 429, {counts['errors']} errors; RSS {samples[0]:.0f} MiB at start, "
    f"{max(samples):.0f} MiB peak, {samples[-1]:.0f} MiB at the end; active generations at the end {end_active:.0f}"
)
for f in failures[:20]:
    print("  failure:", f)
sys.exit(1 if counts["errors"] or end_active != 0 else 0)
