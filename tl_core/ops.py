"""The fused LSTM custom ops, as PyTorch sees them: autograd, fake (meta) kernels and pure-PyTorch references.

The kernels live in ``csrc/`` (CPU in ``lstm.cpp``, CUDA in ``cuda/lstm.cu``) and register themselves as
``torch.ops.tl_core.*`` when ``tl_core._C`` is imported; this module adds what the C++ side does not declare:
how to differentiate each op (``torch.library.register_autograd``) and what it returns without running it
(``torch.library.register_fake``, used by ``torch.compile`` and ``torch.library.opcheck``).
Introduced in ``notebooks/00_setup.ipynb`` (the parity check) and explained in ``notebooks/03_fused_lstm.ipynb``.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _load_extension():
    try:
        from . import _C
    except ImportError as error:
        raise ImportError(
            "tl_core._C, the compiled fused-LSTM extension, could not be imported. Build it with `make install` "
            "in the project folder (or `pip install --no-build-isolation -e .` inside your environment); rebuild "
            f"after changing torch or Python. The import failed with: {error}"
        ) from error
    return _C


_C = _load_extension()

#: Gate order of the 4H gate columns, as in torch.nn.LSTM.
GATE_ORDER = ("i", "f", "g", "o")


# --------------------------------------------------------------------------------------------------------------
# The cell: gates (B, 4H) and c_prev (B, H) -> h, c
# --------------------------------------------------------------------------------------------------------------

def lstm_cell(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """One LSTM step's elementwise part, fused: ``h, c`` from the gate pre-activations and the previous cell state.

    ``gates = x @ W_ih.T + b_ih + h_prev @ W_hh.T + b_hh`` has shape (B, 4H) in gate order i, f, g, o (as
    ``torch.nn.LSTM``); ``c_prev`` has shape (B, H). Differentiable; float32 or float64, CPU or CUDA.
    Introduced in ``notebooks/03_fused_lstm.ipynb``.
    """
    h, c, _ = torch.ops.tl_core.lstm_cell_forward(gates, c_prev)
    return h, c


def lstm_cell_reference(gates: Tensor, c_prev: Tensor) -> tuple[Tensor, Tensor]:
    """The same computation as :func:`lstm_cell` in plain PyTorch: the reference the tests hold it equal to."""
    i, f, g, o = gates.chunk(4, dim=1)
    i, f, g, o = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = f * c_prev + i * g
    return o * torch.tanh(c), c


def _check_matrix(op: str, tensor: Tensor, name: str, layout: str) -> None:
    if tensor.dim() != 2:
        raise RuntimeError(f"{op}: {name} must be 2-D {layout}, got a {tensor.dim()}-D tensor of shape "
                           f"{list(tensor.shape)}")


def _check_same_device_dtype(op: str, reference: Tensor, reference_name: str, other: Tensor, name: str) -> None:
    if other.device != reference.device:
        raise RuntimeError(f"{op}: {name} is on {other.device} but {reference_name} is on {reference.device}; "
                           "move both to the same device")
    if other.dtype != reference.dtype:
        raise RuntimeError(f"{op}: {name} has dtype {other.dtype} but {reference_name} has dtype "
                           f"{reference.dtype}; cast both to the same floating-point dtype")


def _check_cell_forward(gates: Tensor, c_prev: Tensor, op: str = "tl_core.lstm_cell") -> None:
    """Mirror of check_cell_forward in csrc/lstm_checks.h, for the fake kernels (no kernel runs there)."""
    _check_matrix(op, gates, "gates", "(batch, 4 * hidden_size)")
    _check_matrix(op, c_prev, "c_prev", "(batch, hidden_size)")
    if not gates.dtype.is_floating_point:
        raise RuntimeError(f"{op}: gates must be float32 or float64, got {gates.dtype}")
    _check_same_device_dtype(op, gates, "gates", c_prev, "c_prev")
    if gates.shape[0] != c_prev.shape[0]:
        raise RuntimeError(f"{op}: gates has batch size {gates.shape[0]} but c_prev has {c_prev.shape[0]}")
    if gates.shape[1] != 4 * c_prev.shape[1]:
        raise RuntimeError(f"{op}: gates must have 4 * hidden_size = {4 * c_prev.shape[1]} columns (gate order "
                           f"i, f, g, o) for c_prev of hidden size {c_prev.shape[1]}, got {gates.shape[1]}")


@torch.library.register_fake("tl_core::lstm_cell_forward")
def _lstm_cell_forward_fake(gates: Tensor, c_prev: Tensor):
    _check_cell_forward(gates, c_prev)
    return c_prev.new_empty(c_prev.shape), c_prev.new_empty(c_prev.shape), gates.new_empty(gates.shape)


@torch.library.register_fake("tl_core::lstm_cell_backward")
def _lstm_cell_backward_fake(grad_h, grad_c, c_prev: Tensor, c: Tensor, gates_act: Tensor):
    op = "tl_core.lstm_cell_backward"
    _check_cell_forward(gates_act, c_prev, op)
    _check_same_device_dtype(op, c_prev, "c_prev", c, "c")
    for grad, name in ((grad_h, "grad_h"), (grad_c, "grad_c")):
        if grad is not None:
            _check_same_device_dtype(op, c, "c", grad, name)
            if grad.shape != c.shape:
                raise RuntimeError(f"{op}: {name} has shape {list(grad.shape)} but the cell state has "
                                   f"{list(c.shape)}")
    return gates_act.new_empty(gates_act.shape), c.new_empty(c.shape)


def _lstm_cell_setup_context(ctx, inputs, output):
    _, c_prev = inputs
    _, c, gates_act = output
    ctx.save_for_backward(c_prev, c, gates_act)
    ctx.mark_non_differentiable(gates_act)


def _lstm_cell_backward(ctx, grad_h, grad_c, _grad_gates_act):
    c_prev, c, gates_act = ctx.saved_tensors
    d_gates, d_c_prev = torch.ops.tl_core.lstm_cell_backward(grad_h, grad_c, c_prev, c, gates_act)
    return d_gates, d_c_prev


torch.library.register_autograd("tl_core::lstm_cell_forward", _lstm_cell_backward,
                                setup_context=_lstm_cell_setup_context)


def extension_info() -> dict:
    """What was built: whether the CUDA kernels are in, and which instruction set the CPU kernels use."""
    return {"with_cuda": bool(_C.with_cuda), "cpu_kernel_isa": _C.cpu_kernel_isa()}
