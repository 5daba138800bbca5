"""Time SpikeGPT-216M on a GPU: eager vs fused Triton kernels vs torch.compile vs its matmuls alone.

    python benchmarks/bench_gpu.py --out bench-216m.json [--batch 8 --tokens 1024 --dtype float32]

Random weights: every operation of the model is dense, so its timing does not depend on
the weights. Prints a table and the two targets of the fused path:

* non-matmul time (forward - matmuls alone) at least 5x smaller fused than eager;
* the whole fused forward within 1.3x of the matmuls alone.

Writes everything ``energy.app.timing.run_bench`` returns to ``--out`` as JSON. Without a
CUDA device it says so and exits with status 0, writing nothing.
"""

import argparse
import json
import logging
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from a checkout without installing

from energy.app.timing import MAX_COMPILE_STEPS, MODES, run_bench  # noqa: E402
from spikegpt import preset  # noqa: E402

NONMATMUL_SPEEDUP_TARGET = 5.0  # (eager non-matmul time) / (fused non-matmul time), at least
FUSED_OVER_MATMUL_TARGET = 1.3  # (fused forward time) / (matmuls alone), at most
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, required=True, help="JSON file for the results")
    p.add_argument("--preset", default="216m", help="model configuration (default 216m)")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--tokens", type=int, default=1024)
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    p.add_argument("--modes", default=",".join(MODES), help=f"comma-separated subset of {','.join(MODES)}")
    p.add_argument("--decode-batches", default="1,64", help="comma-separated batch sizes for streaming decode")
    p.add_argument("--decode-tokens", type=int, default=64)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument(
        "--max-compile-steps",
        type=int,
        default=MAX_COMPILE_STEPS,
        help="skip torch.compile when n_layer x tokens exceeds this (it unrolls the token loops)",
    )
    return p


def _fmt(x: float | None, unit: str = "", digits: int = 3) -> str:
    return "-" if x is None else f"{x:.{digits}g}{unit}"


def format_table(result: dict) -> str:
    """The results as plain text: forward and decode per mode, matmuls alone, ratios vs targets."""
    s = result["settings"]
    lines = [
        f"{result['device']} | torch {result['versions']['torch']} | triton {result['versions']['triton']}"
        f" | {s['dtype']} | matmul precision {s['float32_matmul_precision']}",
        f"parallel forward, batch {s['batch']} x {s['tokens']} tokens (median of {s['repeats']})",
        f"  {'mode':<10}{'time':>12}{'tokens/s':>14}{'non-matmul':>14}{'x matmul':>10}",
    ]
    derived = result["derived"]
    for mode, r in result["forward"].items():
        if r["status"] != "ok":
            lines.append(f"  {mode:<10}skipped: {r['reason']}")
            continue
        lines.append(
            f"  {mode:<10}{_fmt(r['median_s'], ' s'):>12}{_fmt(r['tokens_per_s']):>14}"
            f"{_fmt(derived['nonmatmul_s'][mode], ' s'):>14}{_fmt(derived['forward_over_matmul'][mode]):>10}"
        )
    m = result["matmul"]
    gemms = f"({m['n_linear']} GEMMs, {_fmt(m['flop_per_s'] / 1e12)} TFLOP/s)"
    lines.append(f"  {'matmuls':<10}{_fmt(m['median_s'], ' s'):>12}   {gemms}")
    lines.append(f"streaming decode, {s['decode_tokens']} tokens from an empty state (tokens/s)")
    for mode, rows in result["decode"].items():
        cells = [f"batch {d['batch']}: {_fmt(d['tokens_per_s'])}" for d in rows if d["status"] == "ok"]
        reasons = sorted({d["reason"] for d in rows if d["status"] != "ok"})
        lines.append(f"  {mode:<10}" + "   ".join(cells + [f"skipped: {r}" for r in reasons]))
    speedup, over = derived["eager_over_fused_nonmatmul"], derived["fused_over_matmul"]
    lines.append("targets")
    lines.append(
        f"  non-matmul eager/fused = {_fmt(speedup)} (target >= {NONMATMUL_SPEEDUP_TARGET}): "
        + ("-" if speedup is None else "met" if speedup >= NONMATMUL_SPEEDUP_TARGET else "NOT met")
    )
    lines.append(
        f"  fused/matmul-alone     = {_fmt(over)} (target <= {FUSED_OVER_MATMUL_TARGET}): "
        + ("-" if over is None else "met" if over <= FUSED_OVER_MATMUL_TARGET else "NOT met")
    )
    lines += [f"  note: {n}" for n in derived["notes"]]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    modes = tuple(m for m in args.modes.split(",") if m)
    if not torch.cuda.is_available():
        print("bench_gpu: no CUDA device: nothing to benchmark (the CPU path is covered by tests)", file=sys.stderr)
        return 0
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = run_bench(
        preset(args.preset),
        batch=args.batch,
        tokens=args.tokens,
        device="cuda",
        dtype=DTYPES[args.dtype],
        modes=modes,
        decode_batches=tuple(int(b) for b in args.decode_batches.split(",") if b),
        decode_tokens=args.decode_tokens,
        repeats=args.repeats,
        warmup=args.warmup,
        max_compile_steps=args.max_compile_steps,
    )
    result["targets"] = {
        "eager_over_fused_nonmatmul_min": NONMATMUL_SPEEDUP_TARGET,
        "fused_over_matmul_max": FUSED_OVER_MATMUL_TARGET,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, allow_nan=False) + "\n")
    print(format_table(result))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
