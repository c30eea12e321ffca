"""The fused LSTM layer ops (csrc/layer.h, tl_core/ops.py) and FusedLSTM (tl_core/lstm.py) against torch.nn.LSTM."""

import itertools
import os
import warnings

import pytest
import torch
from torch import nn
from torch.library import opcheck
from torch.nn.utils.rnn import PackedSequence, pack_padded_sequence, pad_packed_sequence

from conftest import DEVICES
from tl_core import FusedLSTM, ops

TOLERANCE = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-10)}


@pytest.fixture(autouse=True)
def full_float32_precision():
    """cuDNN's LSTM may use TF32 tensor cores for float32 by default (about 1e-3 relative error); parity at 1e-5
    needs true float32 products on both sides."""
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved
INPUT_SIZE, HIDDEN_SIZE = 5, 4


def make_pair(dtype=torch.float64, device="cpu", **kwargs):
    """nn.LSTM and FusedLSTM with the same weights."""
    kwargs = {"input_size": INPUT_SIZE, "hidden_size": HIDDEN_SIZE, **kwargs}
    reference = nn.LSTM(**kwargs).to(device=device, dtype=dtype)
    fused = FusedLSTM(**kwargs).to(device=device, dtype=dtype)
    fused.load_state_dict(reference.state_dict())
    return reference, fused


def leaf(tensor):
    return tensor.detach().clone().requires_grad_(True)


def outputs_and_gradients(module, input, hx, call):
    """Run ``call(module, input, hx)``, backpropagate a random weighting of output, h_n and c_n, and return the
    outputs and the gradients of input, h0, c0 and every parameter (in state_dict order)."""
    input, hx = leaf(input), None if hx is None else tuple(leaf(t) for t in hx)
    output, (h_n, c_n) = call(module, input, hx)
    generator = torch.Generator().manual_seed(11)
    weights = [torch.randn(t.shape, generator=generator, dtype=t.dtype).to(t.device) for t in (output, h_n, c_n)]
    loss = sum((t * w).sum() for t, w in zip((output, h_n, c_n), weights))
    differentiable = [input, *(hx or ()), *module.parameters()]
    gradients = torch.autograd.grad(loss, differentiable)
    return [output, h_n, c_n], list(gradients)


def assert_all_close(fused, reference, dtype):
    for name, a, b in zip(("output", "h_n", "c_n"), fused[0], reference[0]):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype], msg=lambda m, name=name: f"{name}: {m}")
    assert len(fused[1]) == len(reference[1])
    for index, (a, b) in enumerate(zip(fused[1], reference[1])):
        torch.testing.assert_close(a, b, **TOLERANCE[dtype], msg=lambda m, index=index: f"gradient {index}: {m}")


def call_plain(module, input, hx):
    return module(input, hx)


def call_with_lengths(lengths, batch_first):
    """FusedLSTM with lengths, and nn.LSTM on the same batch packed (then padded back to the input's length)."""
    def call(module, input, hx):
        if isinstance(module, FusedLSTM):
            return module(input, hx, lengths=lengths)
        steps = input.shape[1] if batch_first else input.shape[0]
        packed = pack_padded_sequence(input, lengths, batch_first=batch_first, enforce_sorted=False)
        output, state = module(packed, hx)
        return pad_packed_sequence(output, batch_first=batch_first, total_length=steps)[0], state
    return call


def call_packed(lengths, batch_first):
    """Both modules on a PackedSequence; the packed output compared after padding."""
    def call(module, input, hx):
        steps = input.shape[1] if batch_first else input.shape[0]
        packed = pack_padded_sequence(input, lengths, batch_first=batch_first, enforce_sorted=False)
        output, state = module(packed, hx)
        assert isinstance(output, PackedSequence)
        return pad_packed_sequence(output, batch_first=batch_first, total_length=steps)[0], state
    return call


def random_batch(batch, steps, dtype, device, batch_first, num_states, hidden=HIDDEN_SIZE, with_hx=True, seed=0):
    generator = torch.Generator().manual_seed(seed)
    shape = (batch, steps, INPUT_SIZE) if batch_first else (steps, batch, INPUT_SIZE)
    input = torch.randn(shape, generator=generator, dtype=dtype).to(device)
    hx = None
    if with_hx:
        hx = tuple(torch.randn(num_states, batch, hidden, generator=generator, dtype=dtype).to(device)
                   for _ in range(2))
    return input, hx


# ---- the parity grid: FusedLSTM = nn.LSTM, outputs and every gradient -----------------------------------------

GRID = list(itertools.product([1, 2, 3], [False, True], [False, True], [True, False]))
MODES = ["padded", "lengths", "packed"]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("num_layers,bidirectional,batch_first,with_hx", GRID)
def test_parity_grid(num_layers, bidirectional, batch_first, with_hx, mode, dtype):
    reference, fused = make_pair(dtype, num_layers=num_layers, bidirectional=bidirectional, batch_first=batch_first)
    num_states = num_layers * (2 if bidirectional else 1)
    input, hx = random_batch(4, 6, dtype, "cpu", batch_first, num_states, with_hx=with_hx)
    lengths = torch.tensor([3, 6, 1, 5])
    call = {"padded": call_plain, "lengths": call_with_lengths(lengths, batch_first),
            "packed": call_packed(lengths, batch_first)}[mode]
    assert_all_close(outputs_and_gradients(fused, input, hx, call),
                     outputs_and_gradients(reference, input, hx, call), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch,steps,hidden", [(1, 1, 4), (1, 7, 4), (3, 1, 4), (3, 5, 1), (2, 3, 1), (9, 33, 17)])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parity_edge_shapes(batch, steps, hidden, bidirectional, dtype, device):
    """T=1, B=1, H=1 and one larger shape (wider than one SIMD vector, not a multiple of it)."""
    reference, fused = make_pair(dtype, device, hidden_size=hidden, num_layers=2, bidirectional=bidirectional)
    input, hx = random_batch(batch, steps, dtype, device, False, 2 * (2 if bidirectional else 1), hidden=hidden)
    assert_all_close(outputs_and_gradients(fused, input, hx, call_plain),
                     outputs_and_gradients(reference, input, hx, call_plain), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("lengths", [[6, 6, 6], [1, 1, 1], [1, 6, 2], [6, 1, 1], [2, 3, 6]])
@pytest.mark.parametrize("bidirectional", [False, True])
def test_parity_lengths(lengths, bidirectional, device):
    """All equal, all length 1, unsorted, sorted, ascending: equal to nn.LSTM on the packed batch."""
    dtype = torch.float64
    reference, fused = make_pair(dtype, device, num_layers=2, bidirectional=bidirectional, batch_first=True)
    input, hx = random_batch(3, 6, dtype, device, True, 2 * (2 if bidirectional else 1))
    call = call_with_lengths(torch.tensor(lengths), batch_first=True)
    assert_all_close(outputs_and_gradients(fused, input, hx, call),
                     outputs_and_gradients(reference, input, hx, call), dtype)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_parity_batch_split_across_threads(dtype, device):
    """Enough rows per step (37 x 64 units) for the CPU step kernels to split each step into several parallel
    chunks, with lengths that make the reverse direction's sequences start in the middle of a chunk."""
    reference, fused = make_pair(dtype, device, hidden_size=64, num_layers=2, bidirectional=True, batch_first=True)
    input, hx = random_batch(37, 9, dtype, device, True, 4, hidden=64)
    lengths = torch.randint(1, 10, (37,), generator=torch.Generator().manual_seed(2))
    for call in (call_plain, call_with_lengths(lengths, batch_first=True)):
        assert_all_close(outputs_and_gradients(fused, input, hx, call),
                         outputs_and_gradients(reference, input, hx, call), dtype)


def uneven_batch(dtype, hidden, steps, num_layers, seed, bias=True):
    """A bidirectional pair and a batch of 37 rows (no even split among 2 or 3 threads) with varied lengths: the
    pair, the input, (h0, c0) and the call with lengths."""
    reference, fused = make_pair(dtype, hidden_size=hidden, num_layers=num_layers, bidirectional=True,
                                 batch_first=True, bias=bias)
    input, hx = random_batch(37, steps, dtype, "cpu", True, 2 * num_layers, hidden=hidden)
    lengths = torch.randint(1, steps + 1, (37,), generator=torch.Generator().manual_seed(seed))
    return reference, fused, input, hx, call_with_lengths(lengths, batch_first=True)


def restoring(setter, probe):
    """A fixture's body for one of _C's global settings: hands the setter to the test, and puts back the setting the
    test found (a setter returns the previous value, so probing it and setting that back reads it)."""
    saved = setter(probe)
    setter(saved)
    yield setter
    setter(saved)


@pytest.fixture
def recurrent_gemm():
    """Switches the float layers' per-step GEMM (oneDNN, MKL's packed GEMM or ATen's) for one test; restored after."""
    from tl_core import _C
    yield from restoring(_C.set_recurrent_gemm, "auto")


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("gemm", ["onednn", "mkl_packed", "aten"])
def test_thread_windows_and_gemm_paths_agree(dtype, gemm, cpu_threads, recurrent_gemm):
    """With several threads the CPU layer gives each one a window of rows that runs every step; 37 rows do not
    divide among 2 or 3 threads, and varied lengths make the windows' active rows shrink unevenly. The results with
    1, 2 and 3 threads, with each per-step GEMM of float layers (oneDNN's, MKL's packed one, ATen's; float64 always
    takes ATen's), agree with each other and with nn.LSTM."""
    from tl_core import _C
    recurrent_gemm(gemm)
    if dtype == torch.float32 and _C.recurrent_gemm_in_use(16) != gemm:
        pytest.skip(f"this PyTorch build has no {gemm} GEMM")
    reference, fused, input, hx, call = uneven_batch(dtype, hidden=16, steps=12, num_layers=2, seed=3)
    cpu_threads(1)
    expected = outputs_and_gradients(reference, input, hx, call)
    one_thread = outputs_and_gradients(fused, input, hx, call)
    assert_all_close(one_thread, expected, dtype)
    for threads in (2, 3):
        cpu_threads(threads)
        assert_all_close(outputs_and_gradients(fused, input, hx, call), one_thread, dtype)


@pytest.fixture
def sequence_gemm():
    """Switches the float layers' whole-sequence GEMMs with W_ih (oneDNN's or ATen's) for one test; restored after."""
    from tl_core import _C
    yield from restoring(_C.set_sequence_gemm, "auto")


@pytest.mark.parametrize("kind", ["onednn", "aten"])
def test_sequence_gemms_agree(kind, cpu_threads, sequence_gemm):
    """The input projection (with the biases or none) and the input's gradient, through oneDNN or ATen (forced:
    the default picks by size), with 1 and 2 threads: the same outputs and gradients as nn.LSTM."""
    from tl_core import _C
    sequence_gemm(kind)
    if _C.sequence_gemm_in_use(1) != kind:
        pytest.skip(f"this PyTorch build has no {kind} GEMM")
    for bias in (True, False):
        reference, fused, input, hx, call = uneven_batch(torch.float32, hidden=16, steps=9, num_layers=2, seed=5,
                                                         bias=bias)
        for threads in (1, 2):
            cpu_threads(threads)
            assert_all_close(outputs_and_gradients(fused, input, hx, call),
                             outputs_and_gradients(reference, input, hx, call), torch.float32)


def test_sequence_gemm_choice_is_checked(sequence_gemm):
    """The default is "auto" (the setter returns the previous choice), which takes oneDNN's GEMM for large products
    (from 2**26 multiply-adds) where the build has it, ATen's for small ones; a named kind is used for every size;
    a bad name changes nothing."""
    from tl_core import _C
    with pytest.raises(RuntimeError, match="must be one of aten, onednn, auto"):
        sequence_gemm("mkl")
    assert sequence_gemm("auto") == "auto", "the default, still in place after the refused name"
    large = "onednn" if torch.backends.mkldnn.is_available() else "aten"
    assert _C.sequence_gemm_in_use(2**26 - 1) == "aten" and _C.sequence_gemm_in_use(2**26) == large
    assert sequence_gemm("aten") == "auto"
    assert _C.sequence_gemm_in_use(2**30) == "aten"
    assert sequence_gemm("onednn") == "aten"
    assert _C.sequence_gemm_in_use(1) == large


@pytest.fixture
def buffer_cache_limit():
    """Sets how many bytes of freed layer buffers the CPU layer keeps for its next calls; restored after."""
    from tl_core import _C
    yield from restoring(_C.set_buffer_cache_limit, 0)


def test_cached_buffers_are_reused_only_once_free(buffer_cache_limit):
    """The CPU layer's large buffers come back from a cache on the next call. Reused (dirty) buffers give the same
    results as fresh ones and as nn.LSTM; a buffer whose tensor is still alive (the output the caller kept: on a
    dense batch it is the last layer's buffer itself) is never handed out again; a limit of 0 empties the cache."""
    from tl_core import _C
    buffer_cache_limit(1 << 30)
    reference, fused = make_pair(torch.float32, hidden_size=16, num_layers=2)
    input, hx = random_batch(5, 7, torch.float32, "cpu", False, 2, hidden=16)
    other_input, _ = random_batch(5, 7, torch.float32, "cpu", False, 2, hidden=16, seed=1)
    expected = outputs_and_gradients(reference, input, hx, call_plain)
    first = outputs_and_gradients(fused, input, hx, call_plain)
    assert _C.cached_buffer_bytes() > 0
    kept = [tensor.clone() for tensor in first[0] + first[1]]
    assert_all_close(first, expected, torch.float32)
    outputs_and_gradients(fused, other_input, hx, call_plain)  # other numbers into the reused buffers
    again = outputs_and_gradients(fused, input, hx, call_plain)
    assert all(torch.equal(a, b) for a, b in zip(first[0] + first[1], kept))  # what the caller holds is intact
    assert all(torch.equal(a, b) for a, b in zip(again[0] + again[1], kept))
    assert buffer_cache_limit(0) == 1 << 30
    assert _C.cached_buffer_bytes() == 0
    assert_all_close(outputs_and_gradients(fused, input, hx, call_plain), expected, torch.float32)
    assert _C.cached_buffer_bytes() == 0
    buffer_cache_limit(1 << 30)
    outputs_and_gradients(fused, input, hx, call_plain)
    cached = _C.cached_buffer_bytes()
    assert cached > 0 and _C.release_buffers() == cached and _C.cached_buffer_bytes() == 0
    with pytest.raises(RuntimeError, match="bytes must be >= 0"):
        buffer_cache_limit(-1)


@pytest.fixture
def window_weight_limit():
    """Moves the W_hh size above which the CPU layer runs the whole batch per step on every thread; restored after."""
    from tl_core import _C
    yield from restoring(_C.set_window_weight_limit, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_whole_batch_steps_agree_with_thread_windows(dtype, cpu_threads, window_weight_limit):
    """Above the W_hh size limit (large hidden sizes) each step runs on every thread: the GEMM (oneDNN's) and the
    cell split by rows (448 units: chunks of 36 rows, so 37 rows split unevenly, and varied lengths put the
    rows that start from c0 on both sides of the cut). Forced here at a small size by a limit of 0 bytes: the
    results with 1 and 2 threads agree with the windowed path and with nn.LSTM."""
    reference, fused, input, hx, call = uneven_batch(dtype, hidden=448, steps=5, num_layers=1, seed=4)
    cpu_threads(2)
    windowed = outputs_and_gradients(fused, input, hx, call)
    assert window_weight_limit(0) > 0  # the default keeps small layers windowed
    for threads in (1, 2):
        cpu_threads(threads)
        whole_batch = outputs_and_gradients(fused, input, hx, call)
        assert_all_close(whole_batch, windowed, dtype)
        assert_all_close(whole_batch, outputs_and_gradients(reference, input, hx, call), dtype)
    with pytest.raises(RuntimeError, match="bytes must be >= 0"):
        window_weight_limit(-1)


@pytest.fixture
def window_stall():
    """Makes the CPU thread that runs the window holding row 0 sleep before each step (tl_core._C's test hook, as if
    the OS had descheduled it); restored after."""
    from tl_core import _C
    yield from restoring(_C.set_window_stall, 0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("equal_lengths", [True, False])
def test_a_stalled_threads_rows_are_taken_over_with_the_same_results(dtype, equal_lengths, cpu_threads,
                                                                      window_stall):
    """With 2 threads, the thread of row 0 stalls 300 us before every step: the other thread, done with its own
    window, takes over the tail of the stalled one, in both directions and both passes, mid-recurrence (and again,
    from the rows it took). Outputs and gradients agree with those of 1 thread and with nn.LSTM, for a batch of
    equal lengths and for 37 rows of varied lengths."""
    from tl_core import _C
    reference, fused, input, hx, call = uneven_batch(dtype, hidden=24, steps=60, num_layers=2, seed=5)
    if equal_lengths:
        call = call_plain
        fused.batch_first = reference.batch_first = False
        input = input[:32].transpose(0, 1).contiguous()
        hx = tuple(state[:, :32].contiguous() for state in hx)
    cpu_threads(1)
    alone = outputs_and_gradients(fused, input, hx, call)
    cpu_threads(2)
    window_stall(300)
    taken_before = _C.window_take_overs()
    shared = outputs_and_gradients(fused, input, hx, call)
    # 2 layers x 2 directions x forward and backward: each of the 8 recurrences hands rows over at least once.
    assert _C.window_take_overs() - taken_before >= 8
    assert_all_close(shared, alone, dtype)
    if dtype == torch.float64:  # float32's rounding differs from nn.LSTM's beyond 1e-5 over sums of 1,920 tokens
        assert_all_close(shared, outputs_and_gradients(reference, input, hx, call), dtype)
    with pytest.raises(RuntimeError, match="microseconds must be >= 0"):
        window_stall(-1)
    with pytest.raises(RuntimeError, match="iterations must be >= 1"):
        _C.set_take_over_iterations(0)


@pytest.fixture
def take_over_iterations():
    """Sets how many steps must be left in a window before another thread may take over its rows (a very large value
    turns taking over off); restored after."""
    from tl_core import _C
    yield from restoring(_C.set_take_over_iterations, 16)


def test_without_taking_over_the_results_do_not_depend_on_the_scheduler(cpu_threads, window_stall,
                                                                          take_over_iterations):
    """The README's "why runs differ": with taking over turned off, a 2-thread run whose row-0 thread stalls before
    every step (as a descheduled thread would) gives the same bits as one that runs freely, outputs and every
    gradient: which thread computes which rows no longer depends on timing, so seeded trainings repeat."""
    from tl_core import _C
    _, fused, input, hx, call = uneven_batch(torch.float32, hidden=24, steps=60, num_layers=2, seed=5)
    cpu_threads(2)
    take_over_iterations(2**40)
    taken_before = _C.window_take_overs()
    free = outputs_and_gradients(fused, input, hx, call)
    window_stall(300)
    stalled = outputs_and_gradients(fused, input, hx, call)
    assert _C.window_take_overs() == taken_before, "taking over was off: no rows changed threads"
    for free_part, stalled_part in zip(free, stalled):
        assert len(free_part) == len(stalled_part)
        assert all(torch.equal(a, b) for a, b in zip(free_part, stalled_part))


@pytest.mark.parametrize("batch_sizes,windows,expected", [
    ([8] * 5, 2, [0, 4, 8]),               # equal lengths: equal rows
    ([9] * 4, 2, [0, 5, 9]),               # odd batch: the first window takes the extra row
    ([8, 8, 2, 2, 2, 2, 2, 2], 2, [0, 2, 8]),  # rows 0-1 hold 16 of 28 tokens: they are a window of their own
    ([3, 3], 4, [0, 1, 2, 3]),             # more threads than rows: one row each
    ([5, 1], 3, [0, 1, 3, 5]),
])
def test_row_windows_balance_tokens(batch_sizes, windows, expected):
    from tl_core import _C
    assert _C.row_windows(torch.tensor(batch_sizes), windows) == expected


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_hx", [True, False])
@pytest.mark.parametrize("batch_first", [False, True])
def test_parity_unbatched(with_hx, batch_first, dtype, device):
    reference, fused = make_pair(dtype, device, num_layers=2, bidirectional=True, batch_first=batch_first)
    generator = torch.Generator().manual_seed(3)
    input = torch.randn(7, INPUT_SIZE, generator=generator, dtype=dtype).to(device)
    hx = tuple(torch.randn(4, HIDDEN_SIZE, generator=generator, dtype=dtype).to(device) for _ in range(2))
    hx = hx if with_hx else None
    fused_result = outputs_and_gradients(fused, input, hx, call_plain)
    assert fused_result[0][0].shape == (7, 2 * HIDDEN_SIZE) and fused_result[0][1].shape == (4, HIDDEN_SIZE)
    assert_all_close(fused_result, outputs_and_gradients(reference, input, hx, call_plain), dtype)


def test_parity_without_bias_and_with_non_contiguous_input():
    reference, fused = make_pair(bias=False, num_layers=2, batch_first=True, bidirectional=True)
    assert [name for name, _ in fused.named_parameters()] == [name for name, _ in reference.named_parameters()]
    input = torch.randn(6, 3, INPUT_SIZE, dtype=torch.float64).transpose(0, 1)  # (B, T, I), not contiguous
    assert not input.is_contiguous()
    for call in (call_plain, call_with_lengths(torch.tensor([2, 6, 4]), batch_first=True)):
        assert_all_close(outputs_and_gradients(fused, input, None, call),
                         outputs_and_gradients(reference, input, None, call), torch.float64)


def test_packed_input_sorted_in_advance():
    """A PackedSequence built with enforce_sorted=True has no sorted_indices."""
    reference, fused = make_pair(bidirectional=True)
    input, hx = random_batch(3, 5, torch.float64, "cpu", False, 2)
    packed = pack_padded_sequence(input, torch.tensor([5, 3, 2]), enforce_sorted=True)
    assert packed.sorted_indices is None
    (fused_output, fused_state), (ref_output, ref_state) = fused(packed, hx), reference(packed, hx)
    assert isinstance(fused_output, PackedSequence) and fused_output.sorted_indices is None
    torch.testing.assert_close(fused_output.data, ref_output.data, atol=1e-10, rtol=1e-10)
    torch.testing.assert_close(fused_state, ref_state, atol=1e-10, rtol=1e-10)


def test_output_is_zero_past_each_length_and_state_is_the_last_valid_one():
    _, fused = make_pair(batch_first=True)
    input, _ = random_batch(3, 6, torch.float64, "cpu", True, 1)
    lengths = torch.tensor([2, 6, 4])
    output, (h_n, _) = fused(input, lengths=lengths)
    assert output.shape[1] == 6  # the padded length: rows 0 and 2 have padding, row 1 has none
    for row, length in enumerate(lengths.tolist()):
        assert torch.count_nonzero(output[row, length:]) == 0  # an empty slice for row 1, which fills all 6 steps
        assert output[row, :length].abs().min() > 0
        torch.testing.assert_close(h_n[0, row], output[row, length - 1], atol=0, rtol=0)
        # The padding does not matter: another value there gives the same result.
        alone, (h_alone, _) = fused(input[row:row + 1, :length])
        torch.testing.assert_close(output[row:row + 1, :length], alone, atol=1e-12, rtol=0)
        torch.testing.assert_close(h_n[:, row:row + 1], h_alone, atol=1e-12, rtol=0)


def test_lengths_as_a_list_and_all_equal_lengths_match_no_lengths():
    _, fused = make_pair(num_layers=2, bidirectional=True, batch_first=True)
    input, hx = random_batch(3, 5, torch.float64, "cpu", True, 4)
    without = fused(input, hx)
    with_list = fused(input, hx, lengths=[5, 5, 5])
    torch.testing.assert_close(with_list, without, atol=1e-12, rtol=0)


def test_empty_batch():
    reference, fused = make_pair(bidirectional=True)
    input = torch.randn(4, 0, INPUT_SIZE, dtype=torch.float64)
    (output, (h_n, c_n)), (ref_output, (ref_h_n, _)) = fused(input), reference(input)
    assert output.shape == ref_output.shape and h_n.shape == ref_h_n.shape == c_n.shape
    output, (h_n, _) = fused(input, lengths=torch.empty(0, dtype=torch.int64))
    assert output.shape == ref_output.shape and h_n.shape == ref_h_n.shape


# ---- the module: constructor, parameters, init, state_dict, dropout --------------------------------------------

@pytest.mark.parametrize("kwargs", [{}, {"num_layers": 3, "bidirectional": True}, {"bias": False, "num_layers": 2}])
def test_same_parameters_and_initialisation_as_nn_lstm(kwargs):
    torch.manual_seed(123)
    reference = nn.LSTM(7, 6, **kwargs)
    torch.manual_seed(123)
    fused = FusedLSTM(7, 6, **kwargs)
    reference_state, fused_state = reference.state_dict(), fused.state_dict()
    assert list(fused_state) == list(reference_state)
    for name in reference_state:
        assert torch.equal(fused_state[name], reference_state[name]), name
    assert repr(fused).replace("FusedLSTM", "LSTM") == repr(reference)
    assert [[p.shape for p in layer] for layer in fused.all_weights] == [
        [p.shape for p in layer] for layer in reference.all_weights]


def test_load_state_dict_both_ways_strict():
    reference = nn.LSTM(7, 6, num_layers=2, bidirectional=True)
    fused = FusedLSTM(7, 6, num_layers=2, bidirectional=True)
    fused.load_state_dict(reference.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(fused.parameters(), reference.parameters()))
    other = nn.LSTM(7, 6, num_layers=2, bidirectional=True)
    other.load_state_dict(fused.state_dict(), strict=True)
    assert all(torch.equal(a, b) for a, b in zip(other.parameters(), reference.parameters()))
    with pytest.raises(RuntimeError, match="Missing key"):
        FusedLSTM(7, 6, num_layers=3, bidirectional=True).load_state_dict(reference.state_dict())


def test_dropout_between_layers_only():
    """With p=1 every inter-layer output is zeroed, deterministically: the result must equal nn.LSTM's, and the
    last layer's output must not be dropped."""
    reference, fused = make_pair(num_layers=2, dropout=1.0)
    input, hx = random_batch(3, 5, torch.float64, "cpu", False, 2)
    assert_all_close(outputs_and_gradients(fused, input, hx, call_plain),
                     outputs_and_gradients(reference, input, hx, call_plain), torch.float64)
    output, _ = fused(input, hx)
    assert output.abs().min() > 0


def test_dropout_is_random_in_training_and_off_in_eval():
    _, fused = make_pair(num_layers=2, dropout=0.5, batch_first=True)
    input, _ = random_batch(3, 5, torch.float64, "cpu", True, 2)
    torch.manual_seed(0)
    first, second = fused(input)[0], fused(input)[0]
    assert not torch.allclose(first, second)
    fused.eval()
    no_dropout = FusedLSTM(INPUT_SIZE, HIDDEN_SIZE, num_layers=2, batch_first=True).to(torch.float64)
    no_dropout.load_state_dict(fused.state_dict())
    torch.testing.assert_close(fused(input)[0], no_dropout(input)[0], atol=0, rtol=0)


def test_dropout_with_one_layer_warns_like_nn_lstm():
    with pytest.warns(UserWarning, match="between layers"):
        FusedLSTM(3, 2, dropout=0.3)


# ---- the layer op against its pure-PyTorch reference ------------------------------------------------------------

LAYER_CASES = [([3, 3, 3], True), ([4, 3, 3, 1], True), ([2], False), ([5, 2, 2, 1, 1], True), ([3, 0], True),
               ([], True), ([700, 690, 401, 399, 3], True)]  # the last: steps split into parallel chunks on the CPU


def layer_inputs(batch_sizes, bias, dtype=torch.float64, device="cpu", input_size=3, hidden=4, seed=0):
    generator = torch.Generator().manual_seed(seed)
    batch = batch_sizes[0] if batch_sizes else 2

    def randn(*shape):
        return torch.randn(*shape, generator=generator, dtype=dtype).to(device)

    weights = [randn(4 * hidden, input_size), randn(4 * hidden, hidden)]
    biases = [randn(4 * hidden), randn(4 * hidden)] if bias else [None, None]
    return (randn(sum(batch_sizes), input_size), torch.tensor(batch_sizes, dtype=torch.int64), randn(batch, hidden),
            randn(batch, hidden), *weights, *biases)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("batch_sizes,bias", LAYER_CASES)
def test_layer_op_matches_reference(batch_sizes, bias, reverse, device):
    args = [t.requires_grad_() if t is not None and t.is_floating_point() else t
            for t in layer_inputs(batch_sizes, bias, device=device)]
    differentiable = [t for t in args if t is not None and t.requires_grad]

    def run(function):
        output, h_n, c_n = function(*args, reverse=reverse)
        generator = torch.Generator().manual_seed(5)
        loss = sum((t * torch.randn(t.shape, generator=generator, dtype=t.dtype).to(device)).sum()
                   for t in (output, h_n, c_n))
        return [output, h_n, c_n, *torch.autograd.grad(loss, differentiable, allow_unused=True, materialize_grads=True)]

    for fused, reference in zip(run(ops.lstm_layer), run(ops.lstm_layer_reference)):
        torch.testing.assert_close(fused, reference, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("which", [0, 1, 2])
def test_layer_op_with_only_one_output_in_the_loss(which):
    """autograd hands the backward None for the outputs that did not reach the loss."""
    args = [t.requires_grad_() if t is not None and t.is_floating_point() else t
            for t in layer_inputs([3, 2, 2], True)]
    differentiable = [t for t in args if t is not None and t.requires_grad]
    fused = torch.autograd.grad(ops.lstm_layer(*args, reverse=True)[which].sum(), differentiable)
    reference = torch.autograd.grad(ops.lstm_layer_reference(*args, reverse=True)[which].sum(), differentiable)
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("reverse", [False, True])
def test_layer_op_gradcheck(reverse, device):
    args = [t.requires_grad_() if t is not None and t.is_floating_point() else t
            for t in layer_inputs([3, 2, 2, 1], True, device=device, input_size=2, hidden=3)]
    assert torch.autograd.gradcheck(lambda *a: ops.lstm_layer(*a, reverse=reverse), args)


def test_module_gradcheck_with_lengths():
    fused = FusedLSTM(2, 3, num_layers=2, bidirectional=True, batch_first=True).to(torch.float64)
    input = torch.randn(3, 4, 2, dtype=torch.float64, requires_grad=True)
    h0, c0 = (torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True) for _ in range(2))
    lengths = torch.tensor([2, 4, 1])
    parameters = list(fused.parameters())

    def run(input, h0, c0, *weights):
        replaced = dict(zip([name for name, _ in fused.named_parameters()], weights))
        output, (h_n, c_n) = torch.func.functional_call(fused, replaced, (input, (h0, c0)), {"lengths": lengths})
        return output, h_n, c_n

    assert torch.autograd.gradcheck(run, (input, h0, c0, *(p.detach().requires_grad_() for p in parameters)))


def test_double_backward_is_a_clear_error():
    fused = FusedLSTM(3, 4).double()
    input = torch.randn(5, 2, 3, dtype=torch.float64, requires_grad=True)
    with pytest.raises(NotImplementedError, match=r"no double backward.*torch.nn.LSTM"):
        torch.autograd.grad(fused(input)[0].sum(), input, create_graph=True)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("batch_sizes,bias", [([3, 3, 2], True), ([2, 1], False)])
@pytest.mark.parametrize("reverse", [False, True])
def test_opcheck_layer_forward(batch_sizes, bias, reverse, dtype, device):
    args = [t.requires_grad_() if t is not None and t.is_floating_point() else t
            for t in layer_inputs(batch_sizes, bias, dtype=dtype, device=device)]
    opcheck(torch.ops.tl_core.lstm_layer_forward.default, (*args, reverse))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_grads", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_opcheck_layer_backward(with_grads, reverse, dtype, device):
    input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh = layer_inputs([3, 3, 2], True, dtype=dtype, device=device)
    output, h_n, c_n, gates_act, cells, hidden_prev = torch.ops.tl_core.lstm_layer_forward(
        input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse)
    grads = (torch.randn_like(output), torch.randn_like(h_n), torch.randn_like(c_n)) if with_grads else (None,) * 3
    opcheck(torch.ops.tl_core.lstm_layer_backward.default,
            (*grads, input, batch_sizes, c0, w_ih, w_hh, gates_act, cells, hidden_prev, reverse))


# ---- bad input: a clear error naming the argument ---------------------------------------------------------------

def fused_module(**kwargs):
    return FusedLSTM(INPUT_SIZE, HIDDEN_SIZE, **kwargs)


MODULE_BAD_INPUTS = {
    "wrong input size": (lambda m: m(torch.randn(5, 2, 7)), RuntimeError, r"input\.size\(-1\) must equal input_size = 5, got 7"),
    "4-D input": (lambda m: m(torch.randn(5, 2, 3, 5)), ValueError, r"input must be 3-D \(batched\) or 2-D"),
    "hx wrong shape": (lambda m: m(torch.randn(5, 2, 5), (torch.zeros(1, 3, 4), torch.zeros(1, 3, 4))),
                       RuntimeError, r"hx\[0\] \(h_0\) must have shape .* = \(1, 2, 4\), got \(1, 3, 4\)"),
    "c0 wrong shape": (lambda m: m(torch.randn(5, 2, 5), (torch.zeros(1, 2, 4), torch.zeros(1, 2, 3))),
                       RuntimeError, r"hx\[1\] \(c_0\) must have shape"),
    "hx not a pair": (lambda m: m(torch.randn(5, 2, 5), torch.zeros(1, 2, 4)), TypeError, r"hx must be a tuple"),
    "unbatched hx 3-D": (lambda m: m(torch.randn(5, 5), (torch.zeros(1, 1, 4), torch.zeros(1, 1, 4))),
                         RuntimeError, r"for unbatched 2-D input, hx\[0\] \(h_0\) and hx\[1\] \(c_0\) must be 2-D"),
    "lengths wrong size": (lambda m: m(torch.randn(5, 2, 5), lengths=torch.tensor([5, 4, 3])), ValueError,
                           r"lengths must be 1-D with one length per sequence \(2 for this batch\), got shape \[3\]"),
    "lengths 2-D": (lambda m: m(torch.randn(5, 2, 5), lengths=torch.tensor([[5, 4]])), ValueError,
                    r"lengths must be 1-D"),
    "lengths float": (lambda m: m(torch.randn(5, 2, 5), lengths=torch.tensor([5.0, 4.0])), TypeError,
                      r"lengths must be an integer tensor \(int64\), got dtype torch.float32"),
    "lengths too long": (lambda m: m(torch.randn(5, 2, 5), lengths=torch.tensor([6, 4])), ValueError,
                         r"lengths must lie in \[1, 5\] .* got values from 4 to 6"),
    "lengths zero": (lambda m: m(torch.randn(5, 2, 5), lengths=torch.tensor([0, 4])), ValueError,
                     r"lengths must lie in \[1, 5\]"),
    "lengths with packed": (lambda m: m(pack_padded_sequence(torch.randn(5, 2, 5), [5, 4]), lengths=[5, 4]),
                            ValueError, r"a PackedSequence carries its own lengths"),
    "lengths unbatched": (lambda m: m(torch.randn(5, 5), lengths=torch.tensor([5])), ValueError,
                          r"lengths is for a batch of padded sequences"),
    "dtype mismatch": (lambda m: m(torch.randn(5, 2, 5, dtype=torch.float64)), ValueError,
                       r"input has dtype torch.float64 but the weights have torch.float32"),
    "hx dtype mismatch": (lambda m: m(torch.randn(5, 2, 5), (torch.zeros(1, 2, 4, dtype=torch.float64),) * 2),
                          RuntimeError, r"hx\[0\] \(h_0\) is torch.float64 on cpu but the input is torch.float32"),
    "other device": (lambda m: m(torch.randn(5, 2, 5, device="meta")), RuntimeError,
                     r"input is on meta but the weights are on cpu"),
    "empty sequence": (lambda m: m(torch.randn(0, 2, 5)), ValueError, r"no time steps"),
}


@pytest.mark.parametrize("case", list(MODULE_BAD_INPUTS))
def test_module_bad_input_is_a_clear_error(case):
    call, error, message = MODULE_BAD_INPUTS[case]
    with pytest.raises(error, match=message):
        call(fused_module())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_module_half_precision_is_a_clear_error(dtype):
    """float16 / bfloat16 input or model: the supported dtypes and .float(), not "not implemented for 'Half'"."""
    with pytest.raises(ValueError, match=rf"input has dtype {dtype}, but only float32 and float64 are supported .*"
                                         r"convert it with input\.float\(\)$"):
        fused_module()(torch.randn(5, 2, INPUT_SIZE).to(dtype))
    with pytest.raises(ValueError, match=r"input has dtype .* convert it with input\.float\(\) or "
                                         r"input\.to\(torch\.float64\)"):
        fused_module().double()(torch.randn(5, 2, INPUT_SIZE).to(dtype))
    with pytest.raises(ValueError, match=rf"the weights are {dtype}, but only float32 and float64 are supported "
                                         r".*model\.float\(\)"):
        fused_module().to(dtype)(torch.randn(5, 2, INPUT_SIZE).to(dtype))
    packed = pack_padded_sequence(torch.randn(5, 2, INPUT_SIZE).to(dtype), [5, 4])
    with pytest.raises(ValueError, match=r"input\.data has dtype .* convert it with input\.data\.float\(\)"):
        fused_module()(packed)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool])
def test_module_integer_input_is_a_clear_error(dtype):
    with pytest.raises(ValueError, match=rf"input has dtype {dtype}, but it must be floating-point like the weights "
                                         r"\(torch\.float32\); convert it with input\.to\(torch\.float32\)") as error:
        fused_module()(torch.ones(5, 2, INPUT_SIZE, dtype=dtype))
    assert "model.to" not in str(error.value) and "Embedding" in str(error.value)


@pytest.mark.parametrize("kwargs,error,message", [
    ({"proj_size": 2}, NotImplementedError, r"proj_size must be 0"),
    ({"dropout": 1.5}, ValueError, r"dropout must be a number in \[0, 1\]"),
    ({"num_layers": 0}, ValueError, r"num_layers must be greater than zero"),
    ({"bidirectional": 1}, TypeError, r"bidirectional must be a bool"),
])
def test_constructor_bad_arguments(kwargs, error, message):
    with pytest.raises(error, match=message):
        fused_module(**kwargs)


LAYER_BAD_INPUTS = {
    "input rank": (lambda a: a.update(input=a["input"][None]), r"input must be 2-D"),
    "w_ih shape": (lambda a: a.update(w_ih=a["w_ih"][:, :2]), r"w_ih must have shape \(4 \* hidden_size, "
                                                              r"input_size\) = \[16, 3\], got \[16, 2\]"),
    "w_hh shape": (lambda a: a.update(w_hh=a["w_hh"][:8]), r"w_hh must have shape"),
    "c0 shape": (lambda a: a.update(c0=a["c0"][:2]), r"c0 must have shape h0's \(batch, hidden_size\)"),
    "bias shape": (lambda a: a.update(b_hh=a["b_hh"][:3]), r"b_hh must have shape \(4 \* hidden_size,\)"),
    "dtype": (lambda a: a.update(w_hh=a["w_hh"].float()), r"w_hh has dtype Float but input has dtype Double"
                                                          r"|w_hh has dtype torch.float32 but input"),
    "batch_sizes dtype": (lambda a: a.update(batch_sizes=a["batch_sizes"].int()), r"batch_sizes must be a 1-D int64"),
    **{f"{dtype} input": (lambda a, dtype=getattr(torch, dtype): a.update(
                              {name: t.to(dtype) if t.is_floating_point() else t for name, t in a.items()}),
                          r"input must be float32 or float64, got (Half|BFloat16|torch.float16|torch.bfloat16): "
                          r"float16 and bfloat16 are not supported; convert with \.float\(\)")
       for dtype in ("float16", "bfloat16")},
    "integer input": (lambda a: a.update(input=a["input"].long()),
                      r"input must be float32 or float64, got (Long|torch.int64); convert with \.float\(\)"),
}

LAYER_BAD_VALUES = {
    "batch_sizes increasing": ([2, 3, 3], r"batch_sizes must be non-increasing values in \[0, batch = 3\].*"
                                          r"batch_sizes\[1\] = 3 after 2"),
    "batch_sizes too large": ([4, 3, 1], r"batch_sizes\[0\] = 4"),
    "batch_sizes sum": ([3, 3, 3], r"batch_sizes sum to 9 but input has 8 rows"),
}


def named_layer_inputs(device="cpu"):
    names = ("input", "batch_sizes", "h0", "c0", "w_ih", "w_hh", "b_ih", "b_hh")
    return dict(zip(names, layer_inputs([3, 3, 2], True, device=device)))


@pytest.mark.parametrize("on_meta", [False, True])
@pytest.mark.parametrize("case", list(LAYER_BAD_INPUTS))
def test_layer_op_bad_input(case, on_meta):
    """The C++ checks and their Python mirror in the fake kernel give the same message."""
    change, message = LAYER_BAD_INPUTS[case]
    args = named_layer_inputs()
    change(args)
    if on_meta:
        args = {name: t if name == "batch_sizes" else t.to("meta") for name, t in args.items()}
    with pytest.raises(RuntimeError, match=message):
        ops.lstm_layer(**args)


@pytest.mark.parametrize("case", list(LAYER_BAD_VALUES))
def test_layer_op_bad_batch_sizes(case):
    batch_sizes, message = LAYER_BAD_VALUES[case]
    args = named_layer_inputs()
    args["batch_sizes"] = torch.tensor(batch_sizes)
    with pytest.raises(RuntimeError, match=message):
        ops.lstm_layer(**args)


def test_layer_backward_op_bad_grad_shape():
    args = named_layer_inputs()
    output, h_n, c_n, gates_act, cells, hidden_prev = torch.ops.tl_core.lstm_layer_forward(*args.values(), False)
    with pytest.raises(RuntimeError, match=r"grad_h_n must have shape c0's \(batch, hidden_size\) = \[3, 4\]"):
        torch.ops.tl_core.lstm_layer_backward(None, h_n[:2], None, args["input"], args["batch_sizes"], args["c0"],
                                              args["w_ih"], args["w_hh"], gates_act, cells, hidden_prev, False)


@pytest.mark.cuda
@pytest.mark.parametrize("device", [d for d in DEVICES if d != "cpu"])
def test_cuda_module_errors_for_cpu_input_and_batch_sizes_on_the_gpu(device):
    fused = fused_module().to(device)
    with pytest.raises(RuntimeError, match=r"input is on cpu but the weights are on cuda"):
        fused(torch.randn(5, 2, INPUT_SIZE))
    args = named_layer_inputs(device)
    args["batch_sizes"] = args["batch_sizes"].to(device)
    with pytest.raises(RuntimeError, match=r"batch_sizes must be on the CPU"):
        ops.lstm_layer(**args)


# ---- resources ----------------------------------------------------------------------------------------------------

def resident_memory_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="reads the resident set size from /proc (Linux)")
def test_no_memory_growth_over_10000_forward_backward_calls(cpu_threads):
    """Anything kept by mistake per call (saved tensors, autograd nodes, the packed weights) would grow the process
    by ~10 KB per call here, i.e. by ~100 MB over the 10,000 calls. Two threads: the windowed CPU loop."""
    cpu_threads(2)
    fused = FusedLSTM(8, 16, batch_first=True)
    input = torch.randn(12, 10, 8, requires_grad=True)
    lengths = torch.tensor([10, 3, 7, 1, 10, 9, 8, 2, 4, 4, 6, 5])

    def step():
        output, (h_n, _) = fused(input, lengths=lengths)
        (output.sum() + h_n.sum()).backward()

    for _ in range(500):
        step()
    before = resident_memory_bytes()
    for _ in range(10_000):
        step()
    growth = resident_memory_bytes() - before
    assert growth < 20 * 2**20, f"resident memory grew by {growth / 2**20:.1f} MiB over 10,000 calls"


def test_recurrent_gemm_choice_is_checked(recurrent_gemm, window_weight_limit):
    """The default ("auto": the setter returns the previous choice) picks by size: oneDNN's GEMM where W_hh is above
    the window limit (4 MB: hidden 1150), MKL's packed GEMM below (hidden 128), each where the build has it, else
    the next one down (oneDNN -> MKL packed -> ATen); a named kind is used for every size."""
    from tl_core import _C
    with pytest.raises(RuntimeError, match="must be one of aten, mkl_packed, onednn, auto"):
        recurrent_gemm("blas")
    assert recurrent_gemm("auto") == "auto", "the default, still in place after the refused name"
    # float32 W_hh: 4 * 128² * 4 bytes = 256 KiB, under the 4 MiB limit; 4 * 1150² * 4 bytes = 20 MiB, above it
    small = "mkl_packed" if _C.packed_gemm_available() else "aten"
    large = "onednn" if torch.backends.mkldnn.is_available() else small
    assert _C.recurrent_gemm_in_use(128) == small
    assert _C.recurrent_gemm_in_use(1150) == large
    if torch.backends.mkldnn.is_available():
        assert _C.recurrent_gemm_in_use(1150) == "onednn"
        window_weight_limit(0)
        assert _C.recurrent_gemm_in_use(128) == "onednn"  # the size rule follows the window limit
    assert recurrent_gemm("aten") == "auto"
    assert _C.recurrent_gemm_in_use(1150) == "aten" and _C.recurrent_gemm_in_use(128) == "aten"
