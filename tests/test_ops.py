"""The fused LSTM cell op (csrc/, tl_core/ops.py) against its pure-PyTorch reference."""

import pytest
import torch
from torch.library import opcheck

from tl_core import ops
from conftest import DEVICES

DTYPES = [torch.float32, torch.float64]
TOLERANCE = {torch.float32: dict(atol=1e-6, rtol=1e-5), torch.float64: dict(atol=1e-12, rtol=1e-10)}
SHAPES = [(1, 1), (3, 5), (64, 128), (7, 33), (130, 17)]


def random_inputs(batch, hidden, dtype, device, scale=3.0, requires_grad=False):
    generator = torch.Generator().manual_seed(batch * 1000 + hidden)
    gates = (torch.randn(batch, 4 * hidden, generator=generator, dtype=dtype) * scale).to(device)
    c_prev = torch.randn(batch, hidden, generator=generator, dtype=dtype).to(device)
    return gates.requires_grad_(requires_grad), c_prev.requires_grad_(requires_grad)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,hidden", SHAPES)
def test_forward_matches_reference(batch, hidden, dtype, device):
    gates, c_prev = random_inputs(batch, hidden, dtype, device)
    h, c = ops.lstm_cell(gates, c_prev)
    h_ref, c_ref = ops.lstm_cell_reference(gates, c_prev)
    torch.testing.assert_close(h, h_ref, **TOLERANCE[dtype])
    torch.testing.assert_close(c, c_ref, **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("batch,hidden", SHAPES)
def test_backward_matches_reference(batch, hidden, dtype, device):
    gates, c_prev = random_inputs(batch, hidden, dtype, device, requires_grad=True)
    generator = torch.Generator().manual_seed(7)
    grad_h = torch.randn(batch, hidden, generator=generator, dtype=dtype).to(device)
    grad_c = torch.randn(batch, hidden, generator=generator, dtype=dtype).to(device)

    def gradients(cell):
        h, c = cell(gates, c_prev)
        return torch.autograd.grad((h * grad_h).sum() + (c * grad_c).sum(), (gates, c_prev))

    for fused, reference in zip(gradients(ops.lstm_cell), gradients(ops.lstm_cell_reference)):
        torch.testing.assert_close(fused, reference, **TOLERANCE[dtype])


@pytest.mark.parametrize("device", DEVICES)
def test_only_h_reaches_the_loss(device):
    """autograd hands the op no gradient for c when only h is used; the result must still be exact."""
    gates, c_prev = random_inputs(4, 6, torch.float64, device, requires_grad=True)
    fused = torch.autograd.grad(ops.lstm_cell(gates, c_prev)[0].sum(), (gates, c_prev))
    reference = torch.autograd.grad(ops.lstm_cell_reference(gates, c_prev)[0].sum(), (gates, c_prev))
    for a, b in zip(fused, reference):
        torch.testing.assert_close(a, b, **TOLERANCE[torch.float64])


@pytest.mark.parametrize("device", DEVICES)
def test_saturated_and_special_values(device):
    """Huge pre-activations saturate the gates instead of producing inf/nan; NaN propagates, never hides."""
    gates = torch.tensor([[200.0, -200.0, 100.0, 90.0], [-1e4, 1e4, -1e4, -1e4], [0.0, 0.0, 0.0, 0.0]],
                         device=device)
    c_prev = torch.tensor([[1.0], [2.0], [-3.0]], device=device)
    h, c = ops.lstm_cell(gates, c_prev)
    h_ref, c_ref = ops.lstm_cell_reference(gates, c_prev)
    torch.testing.assert_close(h, h_ref, atol=1e-6, rtol=0)
    torch.testing.assert_close(c, c_ref, atol=1e-6, rtol=0)
    h_nan, c_nan = ops.lstm_cell(torch.full((1, 4), float("nan"), device=device), torch.zeros(1, 1, device=device))
    assert torch.isnan(h_nan).all() and torch.isnan(c_nan).all()


@pytest.mark.parametrize("device", DEVICES)
def test_non_contiguous_inputs_work(device):
    gates, c_prev = random_inputs(6, 8, torch.float32, device)
    gates_t = gates.t().contiguous().t()  # same values, column-major
    c_prev_strided = torch.randn(6, 16, device=device)[:, ::2].copy_(c_prev)
    assert not gates_t.is_contiguous() and not c_prev_strided.is_contiguous()
    for fused, reference in zip(ops.lstm_cell(gates_t, c_prev_strided), ops.lstm_cell_reference(gates, c_prev)):
        torch.testing.assert_close(fused, reference, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("device", DEVICES)
def test_empty_batch(device):
    h, c = ops.lstm_cell(torch.empty(0, 8, device=device), torch.empty(0, 2, device=device))
    assert h.shape == (0, 2) and c.shape == (0, 2)


@pytest.mark.parametrize("device", DEVICES)
def test_gradcheck(device):
    gates, c_prev = random_inputs(3, 4, torch.float64, device, scale=1.0, requires_grad=True)
    assert torch.autograd.gradcheck(ops.lstm_cell, (gates, c_prev))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_opcheck_forward(device, dtype):
    gates, c_prev = random_inputs(5, 3, dtype, device, requires_grad=True)
    opcheck(torch.ops.tl_core.lstm_cell_forward.default, (gates, c_prev))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("with_grads", [True, False])
def test_opcheck_backward(device, dtype, with_grads):
    gates, c_prev = random_inputs(5, 3, dtype, device)
    _, c, gates_act = torch.ops.tl_core.lstm_cell_forward(gates, c_prev)
    grad = torch.randn_like(c) if with_grads else None
    opcheck(torch.ops.tl_core.lstm_cell_backward.default, (grad, grad, c_prev, c, gates_act))


def test_backward_op_matches_reference_without_grads():
    """A missing grad_h / grad_c means zero."""
    gates, c_prev = random_inputs(4, 5, torch.float64, "cpu")
    _, c, gates_act = torch.ops.tl_core.lstm_cell_forward(gates, c_prev)
    zeros = torch.zeros_like(c)
    grad_c = torch.randn_like(c)
    missing = torch.ops.tl_core.lstm_cell_backward(None, grad_c, c_prev, c, gates_act)
    explicit = torch.ops.tl_core.lstm_cell_backward(zeros, grad_c, c_prev, c, gates_act)
    for a, b in zip(missing, explicit):
        torch.testing.assert_close(a, b, atol=0, rtol=0)


def test_compiles_with_torch_compile():
    """The fake kernel lets torch.compile trace through the op without running it."""
    gates, c_prev = random_inputs(4, 5, torch.float32, "cpu")
    compiled = torch.compile(ops.lstm_cell, backend="aot_eager", fullgraph=True)
    for a, b in zip(compiled(gates, c_prev), ops.lstm_cell(gates, c_prev)):
        torch.testing.assert_close(a, b)


# -- bad input: a clear message naming the problem, never a crash ---------------------------------------------

BAD_INPUTS = {
    "gates rank": (lambda: (torch.randn(2, 3, 8), torch.randn(2, 2)), r"gates must be 2-D"),
    "c_prev rank": (lambda: (torch.randn(2, 8), torch.randn(2)), r"c_prev must be 2-D"),
    "batch mismatch": (lambda: (torch.randn(3, 8), torch.randn(2, 2)), r"batch size 3 but c_prev has 2"),
    "gates not 4H": (lambda: (torch.randn(2, 7), torch.randn(2, 2)), r"must have 4 \* hidden_size = 8 columns"),
    "hidden mismatch": (lambda: (torch.randn(2, 8), torch.randn(2, 3)), r"= 12 columns"),
    "dtype mismatch": (lambda: (torch.randn(2, 8), torch.randn(2, 2, dtype=torch.float64)), r"dtype"),
    "integer gates": (lambda: (torch.ones(2, 8, dtype=torch.int64), torch.ones(2, 2, dtype=torch.int64)),
                      r"gates must be float32 or float64, got (Long|torch.int64); convert with \.float\(\)"),
    "half gates": (lambda: (torch.ones(2, 8, dtype=torch.float16), torch.ones(2, 2, dtype=torch.float16)),
                   r"gates must be float32 or float64, got (Half|torch.float16): float16 and bfloat16 are not "
                   r"supported; convert with \.float\(\)"),
    "bfloat16 gates": (lambda: (torch.ones(2, 8, dtype=torch.bfloat16), torch.ones(2, 2, dtype=torch.bfloat16)),
                       r"got (BFloat16|torch.bfloat16): float16 and bfloat16 are not supported; convert with "
                       r"\.float\(\)"),
}


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_bad_input_is_a_clear_error(case):
    make_inputs, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=message):
        ops.lstm_cell(*make_inputs())


@pytest.mark.parametrize("case", list(BAD_INPUTS))
def test_fake_kernel_rejects_bad_input_the_same_way(case):
    make_inputs, message = BAD_INPUTS[case]
    with pytest.raises(RuntimeError, match=message):
        ops.lstm_cell(*(t.to("meta") for t in make_inputs()))


def test_tensors_on_different_devices():
    with pytest.raises(RuntimeError, match=r"c_prev is on meta but gates is on cpu"):
        ops.lstm_cell(torch.randn(2, 8), torch.randn(2, 2, device="meta"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cpu_and_cuda_tensors_mixed():
    with pytest.raises(RuntimeError, match=r"same device"):
        ops.lstm_cell(torch.randn(2, 8, device="cuda"), torch.randn(2, 2))


def test_backward_bad_grad_shape():
    gates, c_prev = random_inputs(4, 5, torch.float32, "cpu")
    _, c, gates_act = torch.ops.tl_core.lstm_cell_forward(gates, c_prev)
    with pytest.raises(RuntimeError, match=r"grad_h has shape \[4, 6\]"):
        torch.ops.tl_core.lstm_cell_backward(torch.randn(4, 6), None, c_prev, c, gates_act)
