"""The 216M SpikeGPT on CPU: parallel forward time and peak memory, streaming time per token.

    python benchmarks/bench_model.py [--preset 216m] [--json out.json]

Random weights (time and memory do not depend on them), float32, no autograd. Peak
memory is the process's resident high-water mark (VmHWM) during the forward, model
weights included; the target (issue 2) is the 1024-token parallel forward within 4 GB.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch
from common import peak_rss_mb, reset_peak_rss, rss_mb

from spikegpt import SpikeGPT, preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="216m")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stream-tokens", type=int, default=32)
    p.add_argument("--json")
    a = p.parse_args()
    torch.manual_seed(0)
    model = SpikeGPT(preset(a.preset)).eval()
    V = model.config.vocab_size
    res = {"preset": a.preset, "params": model.num_params(), "threads": torch.get_num_threads()}
    res["torch"] = torch.__version__
    res["model_rss_mb"] = rss_mb()
    with torch.no_grad():
        for T in (256, 1024):
            idx = torch.randint(0, V, (1, T))
            times = []
            reset_peak_rss()
            for _ in range(a.repeats):
                t0 = time.perf_counter()
                model(idx)
                times.append(time.perf_counter() - t0)
            med, peak = statistics.median(times), peak_rss_mb()
            res[f"parallel_{T}"] = {"median_s": med, "samples_s": times, "peak_rss_mb": peak}
            print(f"parallel forward {T:5d} tokens: {med:6.2f} s  peak RSS {peak:7.0f} MB")
        idx = torch.randint(0, V, (1, a.stream_tokens))
        t0 = time.perf_counter()
        model.run(idx, mode="streaming")
        per_tok = (time.perf_counter() - t0) / a.stream_tokens
        res["streaming_s_per_token"] = per_tok
        print(f"streaming: {per_tok * 1e3:.1f} ms per token ({a.stream_tokens} tokens)")
    ok = res["parallel_1024"]["peak_rss_mb"] < 4096
    print(f"1024-token forward within 4 GB: {'yes' if ok else 'NO'} ({res['parallel_1024']['peak_rss_mb']:.0f} MB)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
