"""The LSTM benchmark's pieces (tl_core/benchmark.py): lengths, work counts, timing, targets, presentation."""

import math
import re

import pytest
import torch

from tl_core import benchmark, ops
from conftest import REPO


@pytest.mark.slow
def test_imdb_train_lengths_from_the_real_archive(shared_data_dir):
    from tl_core import data, text

    lengths, source = benchmark.imdb_train_lengths(str(shared_data_dir))
    assert len(lengths) == 25_000 and "IMDB train reviews (25000)" in source and "tl_core.text" in source
    first = data.load_imdb("train", str(shared_data_dir)).texts[0]
    assert lengths[0] == len(text.tokenize(first)), "the course tokenizer counts the tokens"
    assert min(lengths) >= 1 and 150 < sorted(lengths)[12_500] < 300  # the median review is a few hundred tokens


def test_imdb_train_lengths_fall_back_with_a_label(tmp_path):
    lengths, source = benchmark.imdb_train_lengths(str(tmp_path))
    assert source.startswith("fallback: log-normal") and "not found" in source
    assert len(lengths) == benchmark.FALLBACK_LENGTHS["count"] and min(lengths) >= 1
    median = sorted(lengths)[len(lengths) // 2]
    assert abs(median - benchmark.FALLBACK_LENGTHS["median"]) < 10


def test_draw_lengths_is_reproducible_and_clipped():
    distribution = [1, 5, 1000, 30]
    first = benchmark.draw_lengths(distribution, 50, 400, seed=3)
    assert torch.equal(first, benchmark.draw_lengths(distribution, 50, 400, seed=3))
    assert first.dtype == torch.int64 and first.shape == (50,)
    assert set(first.tolist()) <= {1, 5, 400, 30} and 400 in first.tolist()


def test_lstm_gflop_counts_the_four_gemms_of_a_step():
    # forward: (tokens x I) @ (I x 4H) and (tokens x H) @ (H x 4H); backward twice that.
    assert benchmark.lstm_gflop(10, 3, 2, backward=False) == pytest.approx(2 * 10 * 8 * 5 / 1e9)
    assert benchmark.lstm_gflop(10, 3, 2, backward=True) == pytest.approx(3 * 2 * 10 * 8 * 5 / 1e9)


def test_memory_traffic_of_the_fused_cell_is_one_pass():
    """The fused forward reads 5H and writes 6H numbers per row; the reference writes and re-reads intermediates."""
    gates, c_prev = torch.randn(4, 4 * 8), torch.randn(4, 8)
    with torch.no_grad():
        fused = benchmark.memory_traffic(ops.lstm_cell, gates, c_prev)
        reference = benchmark.memory_traffic(ops.lstm_cell_reference, gates, c_prev)
    assert fused == [("lstm_cell_forward", 4 * 11 * 8 * 4)]
    assert ("split", 0) in reference and sum(b for _, b in reference) == 2 * 4 * 11 * 8 * 4


def test_time_side_by_side_runs_each_function_warmup_plus_repeats_times():
    calls = {"a": 0, "b": 0}

    def count(name):
        def run():
            calls[name] += 1
        return run

    seconds = benchmark.time_side_by_side({name: count(name) for name in calls}, torch.device("cpu"), 4, 2)
    assert calls == {"a": 6, "b": 6} and all(len(times) == 4 for times in seconds.values())


def test_run_benchmark_small_shape_end_to_end():
    result = benchmark.run_benchmark(["small"], "cpu", repeats=1, warmup=0, log=lambda message: None, sgemm_size=128)
    rows = {(row["variant"], row["mode"]) for row in result["results"]}
    assert rows == {(v, m) for v in ("fused", "nn_lstm", "lstmcell_loop") for m in ("forward", "forward_backward")}
    assert all(row["median_ms"] > 0 and math.isfinite(row["gflops"]) for row in result["results"])
    assert [t["target"] for t in result["targets"]] == ["small: FusedLSTM / nn.LSTM", "small: FusedLSTM / LSTMCell loop"]
    table = benchmark.format_table(result)
    assert "small" in table and "lstmcell_loop" in table and "targets" in table
    assert benchmark.result_file_name(result).startswith(f"lstm-cpu-{result['date']}-")


def test_run_benchmark_with_given_imdb_lengths_uses_them():
    lengths = [12, 3] + [1] * 62
    result = benchmark.run_benchmark(["imdb"], "cpu", repeats=1, warmup=0, imdb_lengths=lengths,
                                     log=lambda message: None, sgemm_size=128)
    assert result["shapes"]["imdb"]["lengths"] == lengths and result["lengths_source"].startswith("given")
    assert result["shapes"]["imdb"]["tokens"] == sum(lengths) and result["shapes"]["imdb"]["padded_to"] == 12


def test_targets_compare_forward_backward_ratios():
    result = {"device": "cpu", "results": [
        {"shape": "tutorial", "variant": "fused", "mode": "forward_backward", "median_ms": 75.0},
        {"shape": "tutorial", "variant": "nn_lstm", "mode": "forward_backward", "median_ms": 100.0},
        {"shape": "tutorial", "variant": "lstmcell_loop", "mode": "forward_backward", "median_ms": 120.0},
    ]}
    targets = {t["target"]: t for t in benchmark.evaluate_targets(result)}
    assert targets["tutorial: FusedLSTM / nn.LSTM"]["met"] and targets["tutorial: FusedLSTM / nn.LSTM"]["ratio"] == 0.75
    assert not targets["tutorial: FusedLSTM / LSTMCell loop"]["met"]  # 0.625 > 1 / 1.8


def test_a_limit_below_the_reference_share_of_sgemm_is_reported_out_of_reach():
    """nn.LSTM at 86 % of sgemm (lm, as measured): FusedLSTM does the same GEMM work, so at the sgemm rate it would
    take 0.86 of nn.LSTM's time; a limit of 0.8 needs 107 % of sgemm. At 42 % (0.8 needs 53 %) nothing is said."""
    def rows(shape, fused_share, reference_share):
        return [{"shape": shape, "variant": "fused", "mode": "forward_backward", "median_ms": 100.0,
                 "fraction_of_sgemm": fused_share},
                {"shape": shape, "variant": "nn_lstm", "mode": "forward_backward",
                 "median_ms": 100.0 * fused_share / reference_share, "fraction_of_sgemm": reference_share}]

    result = {"device": "cpu", "results": rows("lm", 0.774, 0.858) + rows("tutorial", 0.64, 0.42)}
    targets = {t["target"]: t for t in benchmark.evaluate_targets(result)}
    assert targets["lm: FusedLSTM / nn.LSTM"]["ratio_at_sgemm_rate"] == pytest.approx(0.858)
    assert targets["lm: FusedLSTM / nn.LSTM"]["ratio"] == pytest.approx(0.858 / 0.774)  # 1.11, as measured
    assert not targets["lm: FusedLSTM / nn.LSTM"]["met"]
    assert targets["tutorial: FusedLSTM / nn.LSTM"]["met"]  # 0.66, as measured
    (sentence,) = benchmark.out_of_reach(result)
    assert sentence.startswith("lm: FusedLSTM / nn.LSTM") and "86% of this run's sgemm" in sentence
    assert "would need FusedLSTM at 107% of it" in sentence


def test_unknown_shape_is_a_clear_error():
    with pytest.raises(ValueError, match=r"unknown shape\(s\) \['huge'\]"):
        benchmark.run_benchmark(["huge"], "cpu", log=lambda message: None)


def test_committed_results_are_valid(tmp_path):
    """Every committed result has >= 10 runs and names its machine: lstm-<device>-<date>-<machine>, the machine as
    machine_slug words it from the recorded CPU (or GPU), core count and kernels' instruction set (-avx2 on the
    AVX2-only machines; the AVX-512 ones keep the bare name, benchmarks/results/README.md), and -busy<N> exactly
    for runs with busy processes. It meets the layout the notebook reads: its table names the machine and the
    repeats and has one row per shape and variant measured, with that row's forward+backward median."""
    assert benchmark.committed_results("cpu"), "benchmarks/results/ holds CPU results: none were found"
    for path, result in benchmark.committed_results("cpu") + benchmark.committed_results("cuda"):
        assert result["repeats"] >= 10, path.name
        machine = result["machine"]
        prefix = f"lstm-{result['device']}-{result['date']}-{benchmark.machine_slug(machine)}"
        assert path.name.startswith(prefix), path.name
        assert not re.match(r"-(avx2|avx512|baseline)\b", path.name[len(prefix):]), path.name  # one set, the right one
        if not machine.get("gpu"):
            assert f"-{machine['cpu_cores']}c" in prefix, prefix
        assert ("-busy" in path.name) == bool(result.get("busy")), path.name
        if result.get("busy"):
            assert path.name.endswith(f"-busy{result['busy']}.json"), path.name
        table = benchmark.format_table(result)
        header = table.splitlines()[0]
        assert (machine.get("gpu") or machine["cpu"]) in header and f"medians of {result['repeats']} runs" in header
        rows = {tuple(line.split()[:2]): line for line in table.splitlines() if line.strip()}
        measured = [row for row in result["results"] if row["mode"] == "forward_backward"]
        assert {row["shape"] for row in measured} == set(result["shapes"]), path.name
        for row in measured:
            line = rows[(row["shape"], row["variant"])]
            assert line.split()[3] == f"{row['median_ms']:.1f}", (path.name, line)


def test_committed_results_newest_first_by_date_then_idle_then_time_of_day(tmp_path, monkeypatch):
    """Two machines' runs of one day: the one that records the later time of day comes first, whatever the names;
    a later run with a busy process beside it comes after the day's idle runs, and before an older day's."""
    import json
    runs = {"lstm-cpu-2026-12-04-amd-epyc-2c.json": {"date": "2026-12-04"},
            "lstm-cpu-2026-12-05-amd-epyc-2c.json": {"date": "2026-12-05", "busy": 0},
            "lstm-cpu-2026-12-05-amd-epyc-2c-avx2.json": {"date": "2026-12-05", "time": "06:33:00 UTC", "busy": 0},
            "lstm-cpu-2026-12-05-amd-epyc-2c-avx2-busy1.json": {"date": "2026-12-05", "time": "07:10:00 UTC",
                                                                "busy": 1},
            "lstm-cuda-2026-12-06-nvidia-h200.json": {"date": "2026-12-06"}}
    for name, result in runs.items():
        (tmp_path / name).write_text(json.dumps(result))
    monkeypatch.setattr(benchmark, "results_dir", lambda: tmp_path)
    assert [path.name for path, _ in benchmark.committed_results("cpu")] == [
        "lstm-cpu-2026-12-05-amd-epyc-2c-avx2.json", "lstm-cpu-2026-12-05-amd-epyc-2c.json",
        "lstm-cpu-2026-12-05-amd-epyc-2c-avx2-busy1.json", "lstm-cpu-2026-12-04-amd-epyc-2c.json"]


def test_a_cpus_file_name_carries_its_kernels_instruction_set():
    machine = {"cpu": "AMD EPYC", "cpu_cores": 2}
    assert benchmark.machine_slug(machine) == "amd-epyc-2c"
    assert benchmark.machine_slug({**machine, "cpu_kernel_isa": "avx2"}) == "amd-epyc-2c-avx2"
    assert benchmark.machine_slug({**machine, "cpu_kernel_isa": "avx512"}) == "amd-epyc-2c"  # the first machine's
    assert benchmark.machine_slug({**machine, "cpu_kernel_isa": "baseline"}) == "amd-epyc-2c-baseline"
    assert benchmark.machine_slug({"gpu": "NVIDIA H200", "cpu": "x", "cpu_cores": 16}) == "nvidia-h200"


def test_lm_shapes_are_in_the_table_but_not_timed_by_default():
    assert benchmark.SHAPES["lm"] == benchmark.BenchmarkShape("lm", 64, 70, 400, 1150)
    assert benchmark.SHAPES["lm_quick"] == benchmark.BenchmarkShape("lm_quick", 64, 70, 100, 256)
    assert set(benchmark.DEFAULT_SHAPES) == {"tutorial", "long", "small", "imdb"}
    assert benchmark.parse_args([]).shapes.split(",") == list(benchmark.DEFAULT_SHAPES)
    assert benchmark.parse_args(["--shapes", "lm,lm_quick"]).shapes == "lm,lm_quick"


@pytest.mark.parametrize("shape, profile", [("lm_quick", "quick"), ("lm", "gpu")])
def test_lm_shapes_are_the_profiles_language_model_layers(shape, profile):
    """lm_quick is the quick profile's language model layer and lm the GPU profile's first one (AWD-LSTM's): a
    window of lm_batch_size streams x lm_bptt tokens, from word vectors of w2v_vector_size (notebook 02) into
    lm_hidden_size units (notebook 04). Changing a notebook's sizes without the shape fails here."""
    from tl_core.course import notebook_values

    lm_values = notebook_values("04", profile, REPO / "notebooks")
    width = notebook_values("02", profile, REPO / "notebooks")["w2v_vector_size"]
    expected = benchmark.BenchmarkShape(shape, batch=lm_values["lm_batch_size"], steps=lm_values["lm_bptt"],
                                        input_size=width, hidden_size=lm_values["lm_hidden_size"])
    assert benchmark.SHAPES[shape] == expected


def test_busy_option_parsing(capsys):
    assert benchmark.parse_args([]).busy == 0
    assert benchmark.parse_args(["--busy", "2"]).busy == 2
    assert benchmark.parse_args(["--busy=0"]).busy == 0
    for bad in ("-1", "two", "1.5"):
        with pytest.raises(SystemExit):
            benchmark.parse_args(["--busy", bad])
        assert "--busy" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        benchmark.parse_args(["--shapes", "tutorial,huge"])
    assert "unknown shape(s) ['huge']" in capsys.readouterr().err


def test_busy_processes_spin_and_are_stopped():
    with benchmark.busy_processes(2) as spinners:
        assert len(spinners) == 2 and all(spinner.poll() is None for spinner in spinners)
    assert all(spinner.poll() is not None for spinner in spinners)
    with benchmark.busy_processes(0) as spinners:
        assert spinners == []
    with pytest.raises(ValueError, match="busy must be >= 0"):
        with benchmark.busy_processes(-1):
            pass


@pytest.mark.parametrize("error", [RuntimeError, KeyboardInterrupt])
def test_busy_processes_are_stopped_on_an_exception_and_on_ctrl_c(error):
    with pytest.raises(error):
        with benchmark.busy_processes(1) as spinners:
            assert spinners[0].poll() is None
            raise error()
    assert spinners[0].poll() is not None


def test_spinner_ends_by_itself_when_its_parent_is_gone(tmp_path):
    """A benchmark killed outright (no cleanup) leaves no spinner behind: each watches its parent."""
    import subprocess
    import sys

    pid_file = tmp_path / "spinner.pid"
    launcher = ("import os, subprocess, sys\n"
                f"p = subprocess.Popen([sys.executable, '-I', '-c', {benchmark.SPINNER!r}, str(os.getpid())])\n"
                f"open({str(pid_file)!r}, 'w').write(str(p.pid))\n")
    subprocess.run([sys.executable, "-c", launcher], check=True, timeout=60)  # exits at once, spinner orphaned
    pid = int(pid_file.read_text())
    import os
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)
    else:
        os.kill(pid, 9)
        pytest.fail("the orphaned spinner kept running")


def test_run_benchmark_records_busy_and_stops_its_spinners(monkeypatch):
    started = []
    real = benchmark.busy_processes

    def recording(count):
        context = real(count)
        spinners = context.__enter__()
        started.extend(spinners)

        class Wrapper:
            def __enter__(self):
                return spinners

            def __exit__(self, *exc):
                return context.__exit__(*exc)
        return Wrapper()

    monkeypatch.setattr(benchmark, "busy_processes", recording)
    result = benchmark.run_benchmark(["small"], "cpu", repeats=1, warmup=0, log=lambda message: None,
                                     sgemm_size=64, busy=1)
    assert result["busy"] == 1 and len(started) == 1 and started[0].poll() is not None
    assert "1 busy processes alongside" in benchmark.format_table(result)
    assert benchmark.result_file_name(result).endswith("-busy1.json")

    def failing_log(message):
        if message.startswith("small:"):
            raise RuntimeError("interrupted")

    with pytest.raises(RuntimeError, match="interrupted"):
        benchmark.run_benchmark(["small"], "cpu", repeats=1, warmup=0, log=failing_log, sgemm_size=64, busy=2)
    assert len(started) == 3 and all(spinner.poll() is not None for spinner in started)
    with pytest.raises(ValueError, match="busy must be >= 0"):
        benchmark.run_benchmark(["small"], "cpu", log=lambda message: None, busy=-1)


def test_run_benchmark_without_busy_records_zero():
    result = benchmark.run_benchmark(["lm_quick"], "cpu", repeats=1, warmup=0, log=lambda message: None,
                                     sgemm_size=64)
    assert result["busy"] == 0 and "busy" not in benchmark.format_table(result)
    assert not benchmark.result_file_name(result).endswith("busy0.json")
    assert [t["target"] for t in result["targets"]] == ["lm_quick: FusedLSTM / nn.LSTM"]


def test_the_allocator_settings_are_recorded_when_they_differ_from_the_defaults(monkeypatch):
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    assert "glibc_tunables" not in benchmark.machine_description(torch.device("cpu"))
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=4294967295")
    machine = benchmark.machine_description(torch.device("cpu"))
    assert machine["glibc_tunables"] == "glibc.malloc.trim_threshold=4294967295"
