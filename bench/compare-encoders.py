#!/usr/bin/env python3
"""gllm beside onnxruntime on one sentence-embedding model, in one run.

    compare-encoders.py GLLM MANIFEST MODEL_DIR CORPUS WORK_DIR

Measures, on the same corpus and the same 2 threads:
- onnxruntime f32: the model exported by torch.onnx (transformers' AutoModel,
  dynamic batch and sequence axes), graph optimizations on;
- onnxruntime int8: that export through onnxruntime's dynamic int8 quantization
  (`quantize_dynamic`, int8 weights);
- gllm f32 and gllm int8 (`gllm bench embed` on the manifest's `minilm` and
  `minilm-int8`).
Both engines tokenize inside the timing (onnxruntime with the model's fast
tokenizer), take length-sorted batches of 32, and mean-pool and normalize as the
sentence-transformers chain does. The single-query latency is the median of 50
embeddings of one short query. The four engines run in turn, GLLM_BENCH_ROUNDS
times (default 3); the table has each engine's best round (throughput: best of
its three corpus runs; latency: the lowest median) and the ratios gllm /
onnxruntime.

Needs torch, transformers, onnx and onnxruntime (scripts/bench.sh makes a venv).
"""

import os
import re
import statistics
import subprocess
import sys
import time

THREADS = 2
BATCH = 32
QUERY = "How do I bake sourdough bread at home?"
# Rounds of all four engines, taken in turn (GLLM_BENCH_ROUNDS, default 3).
ROUNDS = int(os.environ.get("GLLM_BENCH_ROUNDS", "3"))


def export(model_dir, work):
    import torch
    from transformers import AutoModel

    f32 = os.path.join(work, "model-f32.onnx")
    int8 = os.path.join(work, "model-int8.onnx")
    if not os.path.exists(f32):
        model = AutoModel.from_pretrained(model_dir).eval()

        class Encoder(torch.nn.Module):
            def __init__(self, inner):
                super().__init__()
                self.inner = inner

            def forward(self, input_ids, attention_mask, token_type_ids):
                return self.inner(
                    input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids
                ).last_hidden_state

        ids = torch.ones(2, 8, dtype=torch.long)
        with torch.no_grad():
            torch.onnx.export(
                Encoder(model),
                (ids, torch.ones_like(ids), torch.zeros_like(ids)),
                f32,
                input_names=["input_ids", "attention_mask", "token_type_ids"],
                output_names=["last_hidden_state"],
                dynamic_axes={
                    n: {0: "batch", 1: "sequence"}
                    for n in ["input_ids", "attention_mask", "token_type_ids", "last_hidden_state"]
                },
                opset_version=17,
                dynamo=False,
            )
    if not os.path.exists(int8):
        from onnxruntime.quantization import QuantType, quantize_dynamic

        quantize_dynamic(f32, int8, weight_type=QuantType.QInt8)
    return f32, int8


def onnx_engine(path, model_dir, sentences):
    """A function that measures `path` once: (sentences/s, tokens/s, query ms)."""
    import numpy as np
    import onnxruntime as ort
    from transformers import AutoTokenizer

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    tok = AutoTokenizer.from_pretrained(model_dir)
    max_len = 256

    def embed(texts):
        enc = tok(texts, padding=True, truncation=True, max_length=max_len, return_tensors="np")
        feed = {k: enc[k].astype(np.int64) for k in ["input_ids", "attention_mask", "token_type_ids"]}
        (h,) = session.run(None, feed)
        mask = feed["attention_mask"][..., None].astype(np.float32)
        pooled = (h * mask).sum(1) / np.maximum(mask.sum(1), 1e-9)
        return pooled / np.linalg.norm(pooled, axis=1, keepdims=True), int(mask.sum())

    def corpus_run():
        lengths = [len(tok(s, truncation=True, max_length=max_len)["input_ids"]) for s in sentences]
        order = sorted(range(len(sentences)), key=lambda i: -lengths[i])
        tokens = 0
        for b in range(0, len(order), BATCH):
            _, n = embed([sentences[i] for i in order[b : b + BATCH]])
            tokens += n
        return tokens

    def measure():
        corpus_run()  # warm-up
        best, tokens = float("inf"), 0
        for _ in range(3):
            start = time.perf_counter()
            tokens = corpus_run()
            best = min(best, time.perf_counter() - start)
        lat = []
        for _ in range(50):
            t = time.perf_counter()
            embed([QUERY])
            lat.append((time.perf_counter() - t) * 1e3)
        return len(sentences) / best, tokens / best, statistics.median(lat)

    return measure


def gllm_engine(gllm, manifest, model, corpus):
    env = dict(os.environ, XDG_RUNTIME_DIR=os.environ.get("XDG_RUNTIME_DIR", "/tmp"))
    out = subprocess.run(
        [gllm, "--manifest", manifest, "bench", "embed", "--model", model, "--corpus", corpus, "--repeat", "3"],
        check=True,
        capture_output=True,
        text=True,
        env=env,
    ).stdout
    row = [l for l in out.splitlines() if l.startswith("| gllm")][-1]
    m = re.match(r"\| gllm [^|]+\| ([\d.]+) \| ([\d.]+) \| ([\d.]+) ms \|", row)
    if not m:
        sys.exit(f"cannot read gllm's figures from: {row}")
    return tuple(float(x) for x in m.groups())


def main():
    if len(sys.argv) != 6:
        sys.exit(__doc__)
    gllm, manifest, model_dir, corpus, work = sys.argv[1:]
    os.makedirs(work, exist_ok=True)
    sentences = [l for l in open(corpus, encoding="utf-8").read().splitlines() if l.strip()]
    f32_path, int8_path = export(model_dir, work)
    import onnxruntime

    engines = {
        "onnxruntime f32": onnx_engine(f32_path, model_dir, sentences),
        "onnxruntime int8": onnx_engine(int8_path, model_dir, sentences),
        "gllm f32": lambda: gllm_engine(gllm, manifest, "minilm", corpus),
        "gllm int8": lambda: gllm_engine(gllm, manifest, "minilm-int8", corpus),
    }
    # The engines take turns, round after round, and each keeps its best round: on a
    # shared machine whose speed drifts, no engine gets all the fast or slow minutes.
    rounds = {name: [] for name in engines}
    for r in range(ROUNDS):
        for name, measure in engines.items():
            sps, tps, lat = measure()
            rounds[name].append((sps, tps, lat))
            print(f"round {r + 1}: {name}: {sps:.1f} sentences/s, query {lat:.1f} ms", flush=True)
    rows = {
        name: (max(x[0] for x in rs), max(x[1] for x in rs), min(x[2] for x in rs))
        for name, rs in rounds.items()
    }
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"{os.path.basename(model_dir)}, {len(sentences)} sentences, batches of {BATCH}, {THREADS} threads, "
          f"onnxruntime {onnxruntime.__version__}, {cpu}, best of {ROUNDS} rounds")
    print("| engine | sentences/s | tokens/s | single query (median) | gllm / onnxruntime |")
    print("|---|---|---|---|---|")
    for name, (sps, tps, lat) in rows.items():
        ratio = ""
        if name.startswith("gllm"):
            peer = rows["onnxruntime " + name.split()[1]]
            ratio = f"{sps / peer[0]:.2f}× throughput, {peer[2] / lat:.2f}× latency"
        print(f"| {name} | {sps:.1f} | {tps:.0f} | {lat:.1f} ms | {ratio} |")


if __name__ == "__main__":
    main()
