"""The 216M SpikeGPT on CPU: parallel forward time and peak memory, streaming time per token.

    python benchmarks/bench_model.py [--preset 216m] [--json out.json]
    python benchmarks/bench_model.py --gemm-ratio [--tokens 256] [--threads 2] [--repeats 9]

``--gemm-ratio`` (issue 24, target 1): the plain parallel forward against its GEMMs alone (every
``nn.Linear`` of the model applied to an input of the shape it sees in the forward: 127 for the
216M), interleaved in one process, median and best of ``--repeats``; the machine's matmul speed
at 1 and 2 threads and the load average are printed beside the ratio.

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
from common import gemm_inputs, load_average, matmul_gflops, peak_rss_mb, reset_peak_rss, rss_mb, run_gemms

from spikegpt import SpikeGPT, cpu_kernels, preset


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="216m")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--stream-tokens", type=int, default=32)
    p.add_argument("--json")
    p.add_argument("--gemm-ratio", action="store_true", help="plain forward / its GEMMs alone (issue 24)")
    p.add_argument("--tokens", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--torch-loops", action="store_true",
                   help="with --gemm-ratio: also time the forward with the torch loops, interleaved")  # fmt: skip
    a = p.parse_args()
    if a.gemm_ratio:
        return gemm_ratio(a)
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


def gemm_ratio(a) -> None:
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    dtype = getattr(torch, a.dtype)
    model = SpikeGPT(preset(a.preset)).eval().to(dtype)
    idx = torch.randint(0, model.config.vocab_size, (1, a.tokens), generator=torch.Generator().manual_seed(1))
    pairs = [(m, x.to(dtype)) for m, x in gemm_inputs(model, 1, a.tokens)]
    gf1, gf2 = matmul_gflops(1), matmul_gflops(2)
    load0 = load_average()
    with torch.no_grad():
        t0 = time.perf_counter()
        model(idx)  # warm-up (and any JIT compile)
        first = time.perf_counter() - t0
        run_gemms(pairs)
        fwd, gemm, torch_loops = [], [], []
        for _ in range(a.repeats):
            t0 = time.perf_counter()
            model(idx)
            fwd.append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            run_gemms(pairs)
            gemm.append(time.perf_counter() - t0)
            if a.torch_loops:  # the same forward with the model's torch loops (the code before issue 24)
                with cpu_kernels.disabled():
                    t0 = time.perf_counter()
                    model(idx)
                    torch_loops.append(time.perf_counter() - t0)
    med = statistics.median(fwd) / statistics.median(gemm)
    best = min(fwd) / min(gemm)
    if torch_loops:
        tl, g = statistics.median(torch_loops), statistics.median(gemm)
        print(f"torch loops (cpu_kernels.disabled): forward {tl:.3f} s (best {min(torch_loops):.3f}); "
              f"forward/GEMMs median {tl / g:.2f}, best {min(torch_loops) / min(gemm):.2f}")  # fmt: skip
    res = {"preset": a.preset, "tokens": a.tokens, "threads": a.threads, "dtype": a.dtype, "gemms": len(pairs),
           "forward_s": fwd, "gemms_s": gemm, "first_forward_s": first, "ratio_median": med, "ratio_best": best,
           "matmul_gflops_1_thread": gf1, "matmul_gflops_2_threads": gf2, "load_before": load0,
           "load_after": load_average(), "torch": torch.__version__, "torch_loops_s": torch_loops,
           "compiled_loops": cpu_kernels.available()}  # fmt: skip
    print(
        f"{a.preset}, {a.tokens} tokens, {a.threads} threads, {a.dtype}: forward {statistics.median(fwd):.3f} s "
        f"(best {min(fwd):.3f}), its {len(pairs)} GEMMs {statistics.median(gemm):.3f} s (best {min(gemm):.3f}); "
        f"forward/GEMMs median {med:.2f}, best {best:.2f} (target <= 1.3); first forward {first:.2f} s"
    )
    print(
        f"matmul 1024^3 float32: {gf1:.0f} GFLOP/s at 1 thread, {gf2:.0f} GFLOP/s at 2 threads; "
        f"load average {load0:.2f} before, {res['load_after']:.2f} after"
    )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=1)


if __name__ == "__main__":
    main()
