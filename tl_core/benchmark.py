"""The LSTM benchmark: FusedLSTM against torch.nn.LSTM (oneDNN on the CPU, cuDNN on a GPU), nn.LSTM on a
PackedSequence, and a Python loop over nn.LSTMCell, all timed side by side in one run.

Every variant of a shape is timed in the same loop, round-robin, so that a machine shared with other work slows
them all alike and their ratios hold; each figure is the median of ``repeats`` runs after ``warmup`` runs. Achieved
GFLOP/s count the useful GEMM work only (the tokens inside each sequence's length) and are also given as a fraction
of this machine's sgemm throughput (``torch.mm`` of two 2048² matrices, measured in the same run). The command line
is ``benchmarks/lstm.py``; the table and chart are shown in ``notebooks/03_fused_lstm.ipynb``, which introduces
this module.
"""

from __future__ import annotations

import contextlib
import datetime
import io
import math
import os
import platform
import re
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Callable

import torch
from torch import nn
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from . import paths
from .lstm import FusedLSTM
from .ops import extension_info


@dataclass(frozen=True)
class BenchmarkShape:
    """One benchmarked configuration: a single-layer, unidirectional LSTM over a batch_first batch."""

    name: str  # key used in the JSON and on the command line
    batch: int  # B
    steps: int  # T: the padded length (the longest possible sequence)
    input_size: int  # I
    hidden_size: int  # H
    variable_lengths: bool = False  # lengths drawn from the IMDB train distribution, clipped to `steps`


SHAPES = {shape.name: shape for shape in (
    BenchmarkShape("tutorial", batch=64, steps=200, input_size=100, hidden_size=128),
    BenchmarkShape("long", batch=32, steps=512, input_size=300, hidden_size=256),
    BenchmarkShape("small", batch=16, steps=64, input_size=32, hidden_size=64),
    BenchmarkShape("imdb", batch=64, steps=400, input_size=100, hidden_size=128, variable_lengths=True),
    # The language model's LSTM layer in a window of 64 streams x 70 tokens: the GPU profile's (AWD-LSTM's first
    # layer, 400 -> 1150) and the quick profile's (notebook 04's defaults: 100 -> 256). tests/test_benchmark.py holds
    # both to the profiles, so that they follow a change of the notebooks' sizes.
    BenchmarkShape("lm", batch=64, steps=70, input_size=400, hidden_size=1150),
    BenchmarkShape("lm_quick", batch=64, steps=70, input_size=100, hidden_size=256),
)}
#: The shapes timed when none are named (``make benchmark``, about 1.5 min on 2 cores); ``lm`` alone takes minutes.
DEFAULT_SHAPES = ("tutorial", "long", "small", "imdb")

#: What each variant is, for the table and the JSON.
VARIANTS = {
    "fused": "tl_core.FusedLSTM (with lengths when they vary)",
    "fused_all_steps": "tl_core.FusedLSTM on the padded batch, no lengths: every step for every sequence",
    "nn_lstm": "torch.nn.LSTM on the padded batch (oneDNN on the CPU, cuDNN on a GPU)",
    "nn_lstm_packed": "torch.nn.LSTM on a PackedSequence (pack_padded_sequence, then pad_packed_sequence)",
    "lstmcell_loop": "a Python loop over torch.nn.LSTMCell (the active batch shrinks as sequences end)",
}

#: The CPU targets (issues #3 and #10), as (name, shape, variant, reference variant, maximum time ratio). A ratio
#: is median(variant) / median(reference) for forward+backward.
CPU_TARGETS = (
    ("tutorial: FusedLSTM / nn.LSTM", "tutorial", "fused", "nn_lstm", 0.8),
    ("small: FusedLSTM / nn.LSTM", "small", "fused", "nn_lstm", 1.0),
    ("long: FusedLSTM / nn.LSTM", "long", "fused", "nn_lstm", 1.0),
    ("imdb: FusedLSTM / nn.LSTM on packed input", "imdb", "fused", "nn_lstm_packed", 0.3),
    ("imdb: FusedLSTM / nn.LSTM padded to the longest", "imdb", "fused", "nn_lstm", 0.6),
    *((f"{name}: FusedLSTM / LSTMCell loop", name, "fused", "lstmcell_loop", 1 / 1.8) for name in DEFAULT_SHAPES),
    ("lm: FusedLSTM / nn.LSTM", "lm", "fused", "nn_lstm", 0.8),
    ("lm_quick: FusedLSTM / nn.LSTM", "lm_quick", "fused", "nn_lstm", 1.0),
)
CUDA_TARGETS = tuple((f"{name}: FusedLSTM / nn.LSTM (cuDNN)", name, "fused", "nn_lstm", 1.5)
                     for name in DEFAULT_SHAPES) + (
    ("imdb: FusedLSTM / nn.LSTM (cuDNN) on packed input", "imdb", "fused", "nn_lstm_packed", 1.5),
)

#: Stand-in for the IMDB train length distribution when the data is not there: log-normal with roughly the real
#: median and spread of review lengths in tokens. Recorded as such in the JSON.
FALLBACK_LENGTHS = {"median": 201, "sigma": 0.77, "count": 25_000}


def imdb_train_lengths(data_dir: str | None = None) -> tuple[list[int], str]:
    """Token counts of the 25,000 IMDB train reviews (the course tokenizer, ``tl_core.text.tokenize``), and where
    they came from.

    Reads IMDB through ``tl_core.data.load_imdb`` (the data path rule), never downloading; when IMDB is not
    there, draws the same number of lengths from the labelled log-normal ``FALLBACK_LENGTHS`` instead.
    """
    from . import data, text

    try:
        location = paths.dataset_path("imdb", data_dir, download=False)
    except paths.DatasetNotFoundError:
        generator = torch.Generator().manual_seed(0)
        draws = torch.randn(FALLBACK_LENGTHS["count"], generator=generator) * FALLBACK_LENGTHS["sigma"]
        lengths = (draws + math.log(FALLBACK_LENGTHS["median"])).exp().round().clamp(min=1).long().tolist()
        return lengths, (f"fallback: log-normal (median {FALLBACK_LENGTHS['median']} tokens, sigma "
                         f"{FALLBACK_LENGTHS['sigma']}); IMDB was not found by the data path rule")
    reviews = data.load_imdb("train", data_dir)
    lengths = [len(tokens) for tokens in text.tokenize_all(reviews.texts)]
    return lengths, f"IMDB train reviews ({len(lengths)}) in {location.name}, tl_core.text.tokenize tokens"


def draw_lengths(distribution: list[int], batch: int, max_length: int, seed: int = 0) -> torch.Tensor:
    """``batch`` lengths drawn (with replacement) from ``distribution``, clipped to [1, max_length]."""
    generator = torch.Generator().manual_seed(seed)
    picks = torch.randint(len(distribution), (batch,), generator=generator)
    return torch.tensor(distribution, dtype=torch.int64)[picks].clamp(1, max_length)


def lstm_gflop(tokens: int, input_size: int, hidden_size: int, backward: bool) -> float:
    """GEMM work of one LSTM layer over ``tokens`` time steps of single sequences: the forward is
    2 * tokens * 4H * (I + H) flops; backward adds twice that (gradients of the inputs and of the weights)."""
    forward = 2 * tokens * 4 * hidden_size * (input_size + hidden_size)
    return forward * (3 if backward else 1) / 1e9


def memory_traffic(function: Callable, *args) -> list[tuple[str, int]]:
    """(ATen op, bytes it reads and writes) for each op that ``function(*args)`` runs, in order.

    Every op of an unfused implementation reads its input tensors from memory and writes its outputs back; a
    fused kernel does that once for the whole computation. Ops that only make a view (chunk, transpose, ...)
    move nothing and are listed with 0 bytes. Used in ``notebooks/03_fused_lstm.ipynb``.
    """
    from torch.utils._python_dispatch import TorchDispatchMode
    from torch.utils._pytree import tree_leaves

    records = []

    def storages(tree):
        return {t.untyped_storage().data_ptr() for t in tree_leaves(tree) if isinstance(t, torch.Tensor)}

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            output = func(*args, **(kwargs or {}))
            tensors = [t for t in tree_leaves((args, kwargs, output)) if isinstance(t, torch.Tensor)]
            is_view = bool(storages(output) & storages((args, kwargs)))
            moved = 0 if is_view else sum(t.numel() * t.element_size() for t in tensors)
            records.append((func.overloadpacket.__name__, moved))
            return output

    with Recorder():
        function(*args)
    return records


# ---- timing -------------------------------------------------------------------------------------------------------

def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_side_by_side(functions: dict[str, Callable[[], None]], device: torch.device, repeats: int,
                      warmup: int) -> dict[str, list[float]]:
    """Seconds per call of each function, measured round-robin (the order rotating every round) so that drifting
    load on the machine hits every function alike. CUDA work is synchronised before and after each call."""
    names = list(functions)
    for _ in range(warmup):
        for name in names:
            functions[name]()
    _synchronize(device)
    seconds = {name: [] for name in names}
    for round_index in range(repeats):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            _synchronize(device)
            start = time.perf_counter()
            functions[name]()
            _synchronize(device)
            seconds[name].append(time.perf_counter() - start)
    return seconds


#: One busy process of ``--busy``: pure Python arithmetic on one core (no torch, no I/O, no memory to speak of).
#: It ignores Ctrl-C (the benchmark stops it, see :func:`busy_processes`) and ends by itself, within milliseconds,
#: when its parent is gone (killed without a chance to clean up). Its argument: the parent's pid.
SPINNER = ("import os, signal, sys\n"
           "signal.signal(signal.SIGINT, signal.SIG_IGN)\n"
           "parent = int(sys.argv[1])  # the starter's pid: it may be gone before this line runs\n"
           "while os.getppid() == parent:\n"
           "    for _ in range(100_000):\n"
           "        pass\n")


def stop_processes(processes: list[subprocess.Popen], timeout: float = 5.0) -> None:
    """Terminate each process still running and wait for it; one that outlives ``timeout`` seconds is killed."""
    for process in processes:
        if process.poll() is None:
            process.terminate()
    for process in processes:
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def busy_processes(count: int):
    """``count`` CPU spinners (:data:`SPINNER`) running while the block runs: a shared machine on demand. They
    are stopped when the block ends, however it ends (an exception, Ctrl-C); yields their ``Popen`` objects."""
    if count < 0:
        raise ValueError(f"busy must be >= 0, got {count}")
    processes = []
    try:
        for _ in range(count):
            processes.append(subprocess.Popen([sys.executable, "-I", "-c", SPINNER, str(os.getpid())],
                                              stdin=subprocess.DEVNULL))
        yield processes
    finally:
        stop_processes(processes)


def sgemm_gflops(device: torch.device, size: int = 2048, repeats: int = 10) -> float:
    """This machine's float32 GEMM throughput: median over ``repeats`` of ``torch.mm`` on two size² matrices."""
    a, b = (torch.randn(size, size, device=device) for _ in range(2))
    times = time_side_by_side({"mm": lambda: torch.mm(a, b)}, device, repeats, warmup=2)["mm"]
    return 2 * size**3 / statistics.median(times) / 1e9


# ---- the variants ---------------------------------------------------------------------------------------------

def _cell_loop(cell: nn.LSTMCell, input: torch.Tensor, lengths: torch.Tensor | None):
    """nn.LSTMCell one step at a time over a batch_first batch; with lengths the batch is sorted by length and
    only the sequences still running take part in each step."""
    batch, steps, _ = input.shape
    order = None
    if lengths is not None:
        lengths, order = torch.sort(lengths, descending=True)
        input = input.index_select(0, order.to(input.device))
    h = input.new_zeros(batch, cell.hidden_size)
    c = input.new_zeros(batch, cell.hidden_size)
    active_counts = [batch] * steps if lengths is None else (lengths.unsqueeze(0) > torch.arange(steps).unsqueeze(1)
                                                             ).sum(1).tolist()
    outputs = []
    for t, active in enumerate(active_counts):
        if active == 0:
            break
        h_t, c_t = cell(input[:active, t], (h[:active], c[:active]))
        h = torch.cat([h_t, h[active:]]) if active < batch else h_t
        c = torch.cat([c_t, c[active:]]) if active < batch else c_t
        outputs.append(h_t)
    return outputs, h


def build_variants(shape: BenchmarkShape, device: torch.device, lengths: torch.Tensor | None, seed: int = 0):
    """The callables to time for ``shape``: {variant: (forward, forward_backward)}. Weights are shared (copied
    from one nn.LSTM) so that every variant computes the same function."""
    torch.manual_seed(seed)
    reference = nn.LSTM(shape.input_size, shape.hidden_size, batch_first=True).to(device)
    fused = FusedLSTM(shape.input_size, shape.hidden_size, batch_first=True).to(device)
    fused.load_state_dict(reference.state_dict())
    cell = nn.LSTMCell(shape.input_size, shape.hidden_size).to(device)
    with torch.no_grad():
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(cell, name).copy_(getattr(reference, f"{name}_l0"))
    # Padded to the longest sequence of the batch, as a data loader that pads per batch would.
    steps = int(lengths.max()) if lengths is not None else shape.steps
    input = torch.randn(shape.batch, steps, shape.input_size, device=device, requires_grad=True)

    def fused_call():
        return fused(input, lengths=lengths)

    def fused_all_steps_call():
        return fused(input)

    def nn_lstm_call():
        return reference(input)

    def nn_lstm_packed_call():
        packed = pack_padded_sequence(input, lengths, batch_first=True, enforce_sorted=False)
        output, state = reference(packed)
        return pad_packed_sequence(output, batch_first=True, total_length=steps)[0], state

    def cell_loop_call():
        outputs, h = _cell_loop(cell, input, lengths)
        # The steps' outputs in the packed layout (what the loss sums over; no padding to restore).
        return torch.cat(outputs), (h.unsqueeze(0), None)

    calls = {"fused": fused_call, "nn_lstm": nn_lstm_call, "lstmcell_loop": cell_loop_call}
    if lengths is not None:
        calls.update({"fused_all_steps": fused_all_steps_call, "nn_lstm_packed": nn_lstm_packed_call})

    def forward_only(call):
        def run():
            with torch.no_grad():
                call()
        return run

    def forward_backward(call):
        def run():
            output, (h_n, _) = call()
            (output.sum() + h_n.sum()).backward()
            input.grad = None
        return run

    order = [name for name in VARIANTS if name in calls]
    return {name: (forward_only(calls[name]), forward_backward(calls[name])) for name in order}


# ---- the whole benchmark --------------------------------------------------------------------------------------

def results_dir() -> Path:
    """Where the committed results are: ``benchmarks/results/`` of the course folder, found from the current folder
    upwards (course.find_course)."""
    from .course import find_course

    return find_course() / "benchmarks" / "results"


def committed_results(device: str) -> list[tuple[Path, dict]]:
    """The results under benchmarks/results/ for ``device`` ("cpu" or "cuda"), newest first: by date; within a day
    the runs on an idle machine before those with busy processes beside them (``--busy``: one shape, a robustness
    check, not the table to read first), then by the time of day where the result records one (two machines' runs of
    the same day), then by name."""
    from .artifacts import read_json

    results = [(path, read_json(path)) for path in results_dir().glob(f"lstm-{device}-*.json")]
    return sorted(results, key=lambda item: (item[1]["date"], not item[1].get("busy", 0), item[1].get("time", ""),
                                             item[0].name), reverse=True)


def machine_description(device: torch.device) -> dict:
    cpu_model = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").exists():
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    description = {
        "cpu": cpu_model,
        "cpu_cores": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        **extension_info(),
        "device": str(device),
    }
    if os.environ.get("GLIBC_TUNABLES"):
        # The allocator's settings change what nn.LSTM pays for its workspace (fresh pages, zeroed by the kernel,
        # on every call under glibc's defaults), so a run made with other settings says so.
        description["glibc_tunables"] = os.environ["GLIBC_TUNABLES"]
    if device.type == "cuda":
        description["gpu"] = torch.cuda.get_device_name(device)
        description["cudnn"] = torch.backends.cudnn.version()
        # PyTorch's defaults, recorded because they decide whether float32 runs on TF32 tensor cores.
        description["cudnn_allow_tf32"] = torch.backends.cudnn.allow_tf32
        description["matmul_allow_tf32"] = torch.backends.cuda.matmul.allow_tf32
    return description


def machine_slug(machine: dict) -> str:
    """Short name of the machine for result file names: e.g. amd-epyc-2c, amd-epyc-2c-avx2, nvidia-h200. A CPU's
    name carries the instruction set of the extension's kernels where it is not AVX-512 (the course's first
    machine, whose results kept the bare name): machines sold under one name differ in it."""
    name = machine.get("gpu") or machine["cpu"]
    words = re.findall(r"[a-z0-9]+", name.lower())
    words = [w for w in words if w not in {"processor", "core", "cpu", "with", "radeon", "graphics", "tm", "r"}
             and not re.fullmatch(r"\d+", w)][:3]
    slug = "-".join(words) or "machine"
    if machine.get("gpu"):
        return slug
    isa = machine.get("cpu_kernel_isa")
    return f"{slug}-{machine['cpu_cores']}c" + (f"-{isa}" if isa in ("avx2", "baseline") else "")


def result_file_name(result: dict) -> str:
    """lstm-<device>-<date>-<machine>.json, as committed under benchmarks/results/; -busy<N> before .json for a
    run with N busy processes."""
    busy = f"-busy{result['busy']}" if result.get("busy") else ""
    return f"lstm-{result['device']}-{result['date']}-{machine_slug(result['machine'])}{busy}.json"


def run_benchmark(shape_names: list[str] | None = None, device: str = "cpu", repeats: int = 10, warmup: int = 3,
                  data_dir: str | None = None, imdb_lengths: list[int] | None = None, log=print,
                  sgemm_size: int = 2048, busy: int = 0) -> dict:
    """Time every variant of every shape (forward, and forward+backward) and return the JSON-ready result.

    The IMDB-like batch draws its lengths from the IMDB train reviews (:func:`imdb_train_lengths`), unless
    ``imdb_lengths`` gives the batch's lengths directly (e.g. those of an earlier result, to time the same batch
    on another device). ``busy`` > 0 runs that many CPU spinners (:func:`busy_processes`) through the whole
    benchmark, the sgemm figure included: the comparison on a shared machine. No shapes: ``DEFAULT_SHAPES``.
    """
    device = torch.device(device)
    shape_names = list(shape_names or DEFAULT_SHAPES)
    unknown = [name for name in shape_names if name not in SHAPES]
    if unknown:
        raise ValueError(f"unknown shape(s) {unknown}; known: {sorted(SHAPES)}")
    if repeats < 1 or warmup < 0:
        raise ValueError(f"repeats must be >= 1 and warmup >= 0, got repeats={repeats}, warmup={warmup}")
    if busy < 0:
        raise ValueError(f"busy must be >= 0, got {busy}")
    with busy_processes(busy):
        if busy:
            log(f"busy: {busy} CPU spinner process(es) running")
        return _run_benchmark(shape_names, device, repeats, warmup, data_dir, imdb_lengths, log, sgemm_size, busy)


def _run_benchmark(shape_names, device, repeats, warmup, data_dir, imdb_lengths, log, sgemm_size, busy) -> dict:
    started = datetime.datetime.now(datetime.timezone.utc)
    result = {
        "benchmark": "lstm",
        "date": started.date().isoformat(),
        "time": started.strftime("%H:%M:%S UTC"),
        "device": device.type,
        "machine": machine_description(device),
        "repeats": repeats,
        "warmup": warmup,
        "busy": busy,  # CPU spinner processes running alongside (--busy), 0 on a machine left to the benchmark
        "timing": "median_ms: median of the timed runs; forward under torch.no_grad(); forward+backward of "
                  "output.sum() + h_n.sum(); all variants of a shape timed round-robin in one loop",
        "variants": {name: text for name, text in VARIANTS.items()},
        "shapes": {},
        "results": [],
    }
    log(f"sgemm: torch.mm {sgemm_size}x{sgemm_size} on {device} ...")
    result["sgemm_size"] = sgemm_size
    result["sgemm_gflops"] = sgemm_gflops(device, sgemm_size)
    log(f"sgemm: {result['sgemm_gflops']:.1f} GFLOP/s")
    for name in shape_names:
        shape = SHAPES[name]
        lengths = None
        shape_record = asdict(shape)
        if shape.variable_lengths and imdb_lengths is not None:
            if len(imdb_lengths) != shape.batch:
                raise ValueError(f"imdb_lengths must hold {shape.batch} lengths, got {len(imdb_lengths)}")
            result["lengths_source"] = "given: the lengths of an earlier result's imdb batch"
            lengths = torch.tensor(imdb_lengths, dtype=torch.int64).clamp(1, shape.steps)
        elif shape.variable_lengths:
            distribution, result["lengths_source"] = imdb_train_lengths(data_dir)
            result["lengths_distribution"] = _summary(distribution)
            log(f"lengths: {result['lengths_source']}")
            lengths = draw_lengths(distribution, shape.batch, shape.steps)
        if lengths is not None:
            shape_record.update(lengths=lengths.tolist(), padded_to=int(lengths.max()),
                                useful_fraction=float(lengths.sum()) / (shape.batch * int(lengths.max())))
        tokens = int(lengths.sum()) if lengths is not None else shape.batch * shape.steps
        shape_record["tokens"] = tokens
        result["shapes"][name] = shape_record
        variants = build_variants(shape, device, lengths)
        for mode, index in (("forward", 0), ("forward_backward", 1)):
            log(f"{name}: {mode} x {repeats} ({', '.join(variants)}) ...")
            seconds = time_side_by_side({v: calls[index] for v, calls in variants.items()}, device, repeats, warmup)
            gflop = lstm_gflop(tokens, shape.input_size, shape.hidden_size, backward=index == 1)
            for variant, times in seconds.items():
                median = statistics.median(times)
                result["results"].append({
                    "shape": name, "variant": variant, "mode": mode, "median_ms": median * 1e3,
                    "min_ms": min(times) * 1e3, "max_ms": max(times) * 1e3, "runs": len(times),
                    "gflops": gflop / median, "fraction_of_sgemm": gflop / median / result["sgemm_gflops"],
                })
    result["targets"] = evaluate_targets(result)
    return result


def _summary(lengths: list[int]) -> dict:
    ordered = sorted(lengths)
    return {"count": len(ordered), "mean": statistics.fmean(ordered), "median": statistics.median(ordered),
            "p90": ordered[int(0.9 * (len(ordered) - 1))], "max": ordered[-1],
            "share_over_400": sum(length > 400 for length in ordered) / len(ordered)}


def _row(result: dict, shape: str, variant: str, mode: str = "forward_backward") -> dict | None:
    return next((row for row in result["results"] if (row["shape"], row["variant"], row["mode"]) ==
                 (shape, variant, mode)), None)


def median_ms(result: dict, shape: str, variant: str, mode: str = "forward_backward") -> float | None:
    row = _row(result, shape, variant, mode)
    return None if row is None else row["median_ms"]


def evaluate_targets(result: dict) -> list[dict]:
    """Each target of the device whose shapes were measured: the ratio, the limit, and whether it is met.

    Where the run measured the reference's share of sgemm, a target also gets ``ratio_at_sgemm_rate``: the ratio
    FusedLSTM would reach if it ran every FLOP of the shape at this run's sgemm rate (both do the same GEMM work, so
    that ratio is the reference's share of sgemm). A limit below it asks FusedLSTM to beat the machine's own
    matrix product: see :func:`out_of_reach`."""
    targets = CUDA_TARGETS if result["device"] == "cuda" else CPU_TARGETS
    evaluated = []
    for name, shape, variant, reference, limit in targets:
        mine, theirs = _row(result, shape, variant), _row(result, shape, reference)
        if mine is None or theirs is None:
            continue
        ratio = mine["median_ms"] / theirs["median_ms"]
        record = {"target": name, "ratio": ratio, "limit": limit, "met": ratio <= limit}
        share = theirs.get("fraction_of_sgemm")
        if share is not None:
            record["ratio_at_sgemm_rate"] = share
        evaluated.append(record)
    return evaluated


def out_of_reach(result: dict) -> list[str]:
    """One sentence per target whose limit lies below the ratio FusedLSTM would reach at this run's sgemm rate: the
    reference already runs closer to the machine's GEMM speed than the limit leaves room for (the sgemm rate is a
    measurement, not a hard ceiling: a well-blocked kernel can pass it by a little, so read it as a bound within
    the run's noise)."""
    sentences = []
    for target in evaluate_targets(result):
        floor = target.get("ratio_at_sgemm_rate")
        if floor is not None and target["limit"] < floor:
            sentences.append(f"{target['target']}: the reference runs at {100 * floor:.0f}% of this run's sgemm "
                             f"rate, so a ratio of {target['limit']:.2f} would need FusedLSTM at "
                             f"{100 * floor / target['limit']:.0f}% of it, faster than the machine's own large "
                             f"matrix product")
    return sentences


# ---- presentation ---------------------------------------------------------------------------------------------

def format_table(result: dict) -> str:
    """A readable table: per shape and variant, forward and forward+backward medians, GFLOP/s, share of sgemm,
    and the time relative to FusedLSTM; then the targets."""
    out = io.StringIO()
    machine = result["machine"]
    out.write(f"LSTM benchmark, {result['date']}, {machine.get('gpu') or machine['cpu']} "
              f"({machine['torch_threads']} threads), torch {machine['torch']}; medians of {result['repeats']} runs"
              + (f"; {result['busy']} busy processes alongside" if result.get("busy") else "") + "\n")
    out.write(f"sgemm (torch.mm {result.get('sgemm_size', 2048)}²): {result['sgemm_gflops']:.1f} GFLOP/s\n")
    if "lengths_source" in result:
        out.write(f"imdb lengths: {result['lengths_source']}\n")
    header = f"{'shape':<9} {'variant':<16} {'fwd ms':>9} {'fwd+bwd ms':>11} {'GFLOP/s':>8} {'% sgemm':>8} {'vs fused':>9}"
    out.write(header + "\n" + "-" * len(header) + "\n")
    for shape in result["shapes"]:
        fused_ms = median_ms(result, shape, "fused")
        for variant in VARIANTS:
            both = _row(result, shape, variant)
            if both is None:
                continue
            forward = median_ms(result, shape, variant, "forward")
            out.write(f"{shape:<9} {variant:<16} {forward:>9.1f} {both['median_ms']:>11.1f} {both['gflops']:>8.1f} "
                      f"{100 * both['fraction_of_sgemm']:>7.1f}% {both['median_ms'] / fused_ms:>8.2f}x\n")
    if result.get("targets"):
        out.write("\ntargets (forward+backward time ratios):\n")
        for target in result["targets"]:
            out.write(f"  {'met    ' if target['met'] else 'NOT MET'}  {target['target']:<50} "
                      f"{target['ratio']:.2f} (limit {target['limit']:.2f})\n")
    return out.getvalue()


def plot_results(result: dict, mode: str = "forward_backward"):
    """A bar chart of the median times (log scale): one group of bars per shape, one colour per variant."""
    import matplotlib.pyplot as plt

    shapes = list(result["shapes"])
    variants = [v for v in VARIANTS if any(r["variant"] == v for r in result["results"])]
    colours = {variant: f"C{index}" for index, variant in enumerate(variants)}
    width = 0.8 / max(sum(median_ms(result, shape, v, mode) is not None for v in variants) for shape in shapes)
    figure, axes = plt.subplots(figsize=(9, 4))
    labelled = set()
    for position, shape in enumerate(shapes):
        present = [v for v in variants if median_ms(result, shape, v, mode) is not None]
        for index, variant in enumerate(present):
            offset = (index - (len(present) - 1) / 2) * width
            axes.bar(position + offset, median_ms(result, shape, variant, mode), width, color=colours[variant],
                     label=None if variant in labelled else variant)
            labelled.add(variant)
    axes.set_xticks(range(len(shapes)), shapes)
    axes.set_yscale("log")
    axes.set_ylabel(f"{mode.replace('_', '+')} time, ms (median)")
    machine = result["machine"]
    axes.set_title(f"LSTM {mode.replace('_', '+')} on {machine.get('gpu') or machine['cpu']}")
    axes.legend(fontsize=8)
    figure.tight_layout()
    return figure


def _count(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a whole number: {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {value}")
    return value


def parse_args(argv: list[str] | None = None):
    """The options of benchmarks/lstm.py (see :func:`main`)."""
    import argparse

    parser = argparse.ArgumentParser(description="Time FusedLSTM against nn.LSTM, packed nn.LSTM and an LSTMCell "
                                                 "loop; write JSON and print a table.")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"], help="where to run (default: cpu)")
    parser.add_argument("--shapes", default=",".join(DEFAULT_SHAPES),
                        help=f"comma-separated, from {', '.join(SHAPES)} (default: {','.join(DEFAULT_SHAPES)})")
    parser.add_argument("--repeats", type=int, default=10, help="timed runs per variant (median; default 10)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed runs per variant first (default 3)")
    parser.add_argument("--data-dir", default=None, help="data folder for the IMDB lengths (default: the data "
                                                         "path rule, never downloading)")
    parser.add_argument("--imdb-lengths-from", default=None, metavar="RESULT_JSON",
                        help="time the imdb batch with the lengths recorded in an earlier result (e.g. the CPU one), "
                             "instead of drawing them from the IMDB archive")
    parser.add_argument("--output-dir", default=None, help="folder for the JSON, named "
                                                           "lstm-<device>-<date>-<machine>.json (default: "
                                                           "benchmarks/results/)")
    parser.add_argument("--output", default=None, help="exact JSON path (overrides --output-dir)")
    parser.add_argument("--busy", type=_count, default=0, metavar="N",
                        help="run N busy processes (pure CPU spinners, started and stopped by the benchmark) "
                             "alongside, as on a shared machine; recorded in the JSON (default 0)")
    args = parser.parse_args(argv)
    unknown = [name for name in args.shapes.split(",") if name and name not in SHAPES]
    if unknown:
        parser.error(f"unknown shape(s) {unknown}; known: {', '.join(SHAPES)}")
    if args.device == "cuda" and not (torch.cuda.is_available() and extension_info()["with_cuda"]):
        parser.error("--device cuda needs a GPU and tl_core._C built with CUDA")
    return args


def main(argv: list[str] | None = None) -> int:
    """The command line of benchmarks/lstm.py."""
    from .artifacts import write_json

    args = parse_args(argv)
    if args.repeats < 10:
        print(f"note: {args.repeats} repeats; the committed results use at least 10", file=sys.stderr)
    imdb_lengths = None
    if args.imdb_lengths_from:
        from .artifacts import read_json

        imdb_lengths = read_json(args.imdb_lengths_from)["shapes"]["imdb"]["lengths"]
    result = run_benchmark([s for s in args.shapes.split(",") if s], args.device, args.repeats, args.warmup,
                           args.data_dir, imdb_lengths, log=lambda message: print(message, file=sys.stderr, flush=True),
                           busy=args.busy)
    folder = Path(args.output_dir) if args.output_dir else results_dir()
    output = Path(args.output) if args.output else folder / result_file_name(result)
    write_json(output, result)
    print(format_table(result))
    for sentence in out_of_reach(result):
        print(f"note: {sentence}")
    print(f"wrote {output}")
    return 0
