"""Benchmark of the fused LSTM cell op against its pure-PyTorch reference (forward, and forward + backward).

    .venv/bin/python benchmarks/cell.py                      # JSON into benchmarks/results/, table on stdout
    .venv/bin/python benchmarks/cell.py --device cuda --out results.json

Both are measured side by side in one run (interleaved, median of many repetitions after warm-up), so their ratio
holds on a noisy machine. CUDA timings synchronise before reading the clock.
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch

from tl_core import ops
from tl_core.artifacts import write_json
from tl_core.environment import cpu_name

SHAPES = {"small": (16, 64), "tutorial": (64, 128), "long": (32, 256), "wide": (256, 512)}


def timed(function, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    started = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - started


def measure(variants: dict, device: torch.device, repeats: int, inner: int) -> dict[str, float]:
    """Median seconds per call of each variant; the variants take turns so that drift hits them alike."""
    for function in variants.values():
        for _ in range(inner):
            function()
    samples = {name: [] for name in variants}
    for _ in range(repeats):
        for name, function in variants.items():
            samples[name].append(timed(lambda: [function() for _ in range(inner)], device) / inner)
    return {name: statistics.median(values) for name, values in samples.items()}


def cell_variants(batch: int, hidden: int, device: torch.device) -> dict:
    generator = torch.Generator().manual_seed(0)
    gates = torch.randn(batch, 4 * hidden, generator=generator).to(device).requires_grad_()
    c_prev = torch.randn(batch, hidden, generator=generator).to(device).requires_grad_()

    def forward(cell):
        def run():
            with torch.no_grad():
                cell(gates, c_prev)
        return run

    def forward_backward(cell):
        def run():
            h, c = cell(gates, c_prev)
            torch.autograd.grad(h.sum() + c.sum(), (gates, c_prev))
        return run

    return {"fused forward": forward(ops.lstm_cell), "reference forward": forward(ops.lstm_cell_reference),
            "fused forward+backward": forward_backward(ops.lstm_cell),
            "reference forward+backward": forward_backward(ops.lstm_cell_reference)}


def run(device: torch.device, repeats: int, inner: int) -> dict:
    results = {}
    for shape_name, (batch, hidden) in SHAPES.items():
        times = measure(cell_variants(batch, hidden, device), device, repeats, inner)
        results[shape_name] = {
            "batch": batch, "hidden": hidden,
            "microseconds": {name: round(seconds * 1e6, 2) for name, seconds in times.items()},
            "speedup_forward": round(times["reference forward"] / times["fused forward"], 2),
            "speedup_forward_backward": round(
                times["reference forward+backward"] / times["fused forward+backward"], 2),
        }
    return {
        "benchmark": "lstm cell op: fused (tl_core.ops.lstm_cell) vs reference (tl_core.ops.lstm_cell_reference)",
        "date": datetime.date.today().isoformat(),
        "machine": {"device": device.type,
                    "name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
                    "threads": torch.get_num_threads(), "platform": platform.platform()},
        "torch": torch.__version__, "extension": ops.extension_info(),
        "method": f"median over {repeats} repetitions of {inner} calls each, after {inner} warm-up calls; "
                  "variants interleaved; float32",
        "shapes": results,
    }


def table(report: dict) -> str:
    lines = [f"{'shape':<9} {'B':>4} {'H':>4} | {'fwd fused':>10} {'fwd ref':>10} {'x':>5} | "
             f"{'f+b fused':>10} {'f+b ref':>10} {'x':>5}   (microseconds per call)"]
    for name, row in report["shapes"].items():
        us = row["microseconds"]
        lines.append(f"{name:<9} {row['batch']:>4} {row['hidden']:>4} | {us['fused forward']:>10.1f} "
                     f"{us['reference forward']:>10.1f} {row['speedup_forward']:>5.2f} | "
                     f"{us['fused forward+backward']:>10.1f} {us['reference forward+backward']:>10.1f} "
                     f"{row['speedup_forward_backward']:>5.2f}")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--repeats", type=int, default=25, help="timed repetitions per variant (median taken)")
    parser.add_argument("--inner", type=int, default=50, help="calls per repetition")
    parser.add_argument("--out", type=Path, help="JSON file (default: benchmarks/results/cell-<device>-<date>.json)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not (torch.cuda.is_available() and ops.extension_info()["with_cuda"]):
        print("error: --device cuda needs a GPU and tl_core._C built with CUDA", file=sys.stderr)
        return 2
    report = run(device, args.repeats, args.inner)
    out = args.out or Path(__file__).parent / "results" / f"cell-{device.type}-{report['date']}.json"
    write_json(out, report)
    print(table(report))
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
