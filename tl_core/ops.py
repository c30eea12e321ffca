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


def _check_supported_dtype(op: str, tensor: Tensor, name: str) -> None:
    """Mirror of check_supported_dtype in csrc/lstm_checks.h: float32 and float64 only, saying how to convert."""
    if tensor.dtype in (torch.float32, torch.float64):
        return
    if tensor.dtype in (torch.float16, torch.bfloat16):
        raise RuntimeError(f"{op}: {name} must be float32 or float64, got {tensor.dtype}: float16 and bfloat16 are "
                           "not supported; convert with .float() (the input, and the model with model.float())")
    raise RuntimeError(f"{op}: {name} must be float32 or float64, got {tensor.dtype}; convert with .float() "
                       "(token ids go through an nn.Embedding first)")


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
    _check_supported_dtype(op, gates, "gates")
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


# --------------------------------------------------------------------------------------------------------------
# The layer: one LSTM layer in one direction over a packed sequence (csrc/layer.h)
# --------------------------------------------------------------------------------------------------------------

def lstm_layer(input: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
               b_ih: Tensor | None = None, b_hh: Tensor | None = None,
               reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """One LSTM layer in one direction, forward and backward through time in C++: ``output, h_n, c_n``.

    ``input`` (tokens, I) is in PyTorch's packed-sequence layout: sequences sorted by decreasing length, time step
    ``t`` holding the first ``batch_sizes[t]`` of them (``batch_sizes``: 1-D int64 on the CPU, as in a
    ``PackedSequence``). A batch of B sequences of equal length T is the time-major (T, B, I) tensor viewed as
    (T * B, I) with ``batch_sizes = [B] * T``. ``h0, c0``: (B, H); weights as in ``torch.nn.LSTM``
    (``w_ih`` (4H, I), ``w_hh`` (4H, H), biases (4H) or None; gate order i, f, g, o). ``reverse=True`` runs the
    sequences backwards, each from its own last step. ``output`` (tokens, H) is in the input's layout; ``h_n, c_n``
    (B, H) are each sequence's state after its last step. Differentiable; float32 or float64, CPU or CUDA.
    Introduced in ``notebooks/03_fused_lstm.ipynb``.
    """
    output, h_n, c_n, _, _, _ = torch.ops.tl_core.lstm_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih,
                                                                     b_hh, reverse)
    return output, h_n, c_n


def lstm_layer_reference(input: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor, w_ih: Tensor, w_hh: Tensor,
                         b_ih: Tensor | None = None, b_hh: Tensor | None = None,
                         reverse: bool = False) -> tuple[Tensor, Tensor, Tensor]:
    """The same computation as :func:`lstm_layer` in plain PyTorch, one step at a time: the tests' reference."""
    sizes = [int(size) for size in batch_sizes]
    offsets = [sum(sizes[:t]) for t in range(len(sizes))]
    h, c = h0, c0
    outputs = [None] * len(sizes)
    for t in (reversed(range(len(sizes))) if reverse else range(len(sizes))):
        rows, offset = sizes[t], offsets[t]
        gates = input[offset:offset + rows] @ w_ih.T + h[:rows] @ w_hh.T
        if b_ih is not None:
            gates = gates + b_ih
        if b_hh is not None:
            gates = gates + b_hh
        h_step, c_step = lstm_cell_reference(gates, c[:rows])
        outputs[t] = h_step
        # Sequences that are not active at this step keep their state.
        h, c = torch.cat([h_step, h[rows:]]), torch.cat([c_step, c[rows:]])
    output = torch.cat(outputs) if outputs else input.new_empty(0, h0.shape[1])
    return output, h, c


def _check_shape(op: str, tensor: Tensor, name: str, expected: tuple, meaning: str) -> None:
    if tuple(tensor.shape) != tuple(expected):
        raise RuntimeError(f"{op}: {name} must have shape {meaning} = {list(expected)}, got {list(tensor.shape)}")


def _check_batch_sizes_tensor(op: str, batch_sizes: Tensor) -> None:
    if batch_sizes.dim() != 1 or batch_sizes.dtype != torch.int64:
        raise RuntimeError(f"{op}: batch_sizes must be a 1-D int64 tensor (rows per time step, as in a "
                           f"PackedSequence), got a {batch_sizes.dim()}-D tensor of dtype {batch_sizes.dtype}")
    if batch_sizes.device.type != "cpu":
        raise RuntimeError(f"{op}: batch_sizes must be on the CPU (the loop over time steps runs on the host), got "
                           f"it on {batch_sizes.device}")


def _check_floating_input(op: str, input: Tensor) -> None:
    _check_matrix(op, input, "input", "(tokens, input_size)")
    _check_supported_dtype(op, input, "input")


def _check_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh) -> None:
    """Mirror of check_layer_forward in csrc/lstm_checks.h, for the fake kernels."""
    op = "tl_core.lstm_layer"
    _check_floating_input(op, input)
    _check_matrix(op, h0, "h0", "(batch, hidden_size)")
    hidden = h0.shape[1]
    for tensor, name in ((h0, "h0"), (c0, "c0"), (w_ih, "w_ih"), (w_hh, "w_hh")):
        _check_same_device_dtype(op, input, "input", tensor, name)
    _check_shape(op, c0, "c0", tuple(h0.shape), "h0's (batch, hidden_size)")
    _check_shape(op, w_ih, "w_ih", (4 * hidden, input.shape[1]), "(4 * hidden_size, input_size)")
    _check_shape(op, w_hh, "w_hh", (4 * hidden, hidden), "(4 * hidden_size, hidden_size)")
    for bias, name in ((b_ih, "b_ih"), (b_hh, "b_hh")):
        if bias is not None:
            _check_same_device_dtype(op, input, "input", bias, name)
            _check_shape(op, bias, name, (4 * hidden,), "(4 * hidden_size,)")
    _check_batch_sizes_tensor(op, batch_sizes)


def _check_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, c0, w_ih, w_hh, gates_act, cells,
                          hidden_prev) -> None:
    """Mirror of check_layer_backward in csrc/lstm_checks.h, for the fake kernels."""
    op = "tl_core.lstm_layer_backward"
    _check_floating_input(op, input)
    _check_matrix(op, c0, "c0", "(batch, hidden_size)")
    tokens, hidden = input.shape[0], c0.shape[1]
    for tensor, name in ((c0, "c0"), (w_ih, "w_ih"), (w_hh, "w_hh"), (gates_act, "gates_act"), (cells, "cells"),
                         (hidden_prev, "hidden_prev")):
        _check_same_device_dtype(op, input, "input", tensor, name)
    _check_shape(op, w_ih, "w_ih", (4 * hidden, input.shape[1]), "(4 * hidden_size, input_size)")
    _check_shape(op, w_hh, "w_hh", (4 * hidden, hidden), "(4 * hidden_size, hidden_size)")
    _check_shape(op, gates_act, "gates_act", (tokens, 4 * hidden), "(tokens, 4 * hidden_size)")
    _check_shape(op, cells, "cells", (tokens, hidden), "(tokens, hidden_size)")
    _check_shape(op, hidden_prev, "hidden_prev", (tokens, hidden), "(tokens, hidden_size)")
    if grad_output is not None:
        _check_same_device_dtype(op, input, "input", grad_output, "grad_output")
        _check_shape(op, grad_output, "grad_output", (tokens, hidden), "(tokens, hidden_size)")
    for grad, name in ((grad_h_n, "grad_h_n"), (grad_c_n, "grad_c_n")):
        if grad is not None:
            _check_same_device_dtype(op, input, "input", grad, name)
            _check_shape(op, grad, name, tuple(c0.shape), "c0's (batch, hidden_size)")
    _check_batch_sizes_tensor(op, batch_sizes)


@torch.library.register_fake("tl_core::lstm_layer_forward")
def _lstm_layer_forward_fake(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh, reverse):
    _check_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh)
    tokens, hidden = input.shape[0], h0.shape[1]
    return (input.new_empty(tokens, hidden), h0.new_empty(h0.shape), c0.new_empty(c0.shape),
            input.new_empty(tokens, 4 * hidden), input.new_empty(tokens, hidden), input.new_empty(tokens, hidden))


@torch.library.register_fake("tl_core::lstm_layer_backward")
def _lstm_layer_backward_fake(grad_output, grad_h_n, grad_c_n, input, batch_sizes, c0, w_ih, w_hh, gates_act, cells,
                              hidden_prev, reverse):
    _check_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, c0, w_ih, w_hh, gates_act, cells,
                          hidden_prev)
    # The weight gradients come back as transposed views (csrc/layer.h computes them as (x^T d_gates)^T).
    return (input.new_empty(input.shape), c0.new_empty(c0.shape), c0.new_empty(c0.shape),
            w_ih.new_empty(w_ih.shape[::-1]).t(), w_hh.new_empty(w_hh.shape[::-1]).t(), w_hh.new_empty(w_hh.shape[0]))


def _lstm_layer_setup_context(ctx, inputs, output):
    input, batch_sizes, _h0, c0, w_ih, w_hh, b_ih, b_hh, reverse = inputs
    _, _, _, gates_act, cells, hidden_prev = output
    # Only what backward reads: the weights, the input (for W_ih's gradient) and c0, and the three tensors the
    # forward saved for it. The pre-activations, h0 and the output itself are not kept.
    ctx.save_for_backward(input, batch_sizes, c0, w_ih, w_hh, gates_act, cells, hidden_prev)
    ctx.has_bias = (b_ih is not None, b_hh is not None)
    ctx.reverse = reverse
    ctx.mark_non_differentiable(gates_act, cells, hidden_prev)
    # A gradient that never reached an output stays None instead of a tensor of zeros: the kernels skip it.
    ctx.set_materialize_grads(False)


def _lstm_layer_backward(ctx, grad_output, grad_h_n, grad_c_n, _grad_gates_act, _grad_cells, _grad_hidden_prev):
    if torch.is_grad_enabled():
        # create_graph=True: the backward would have to be differentiable itself, and the C++ one is not.
        raise NotImplementedError(
            "tl_core.lstm_layer (FusedLSTM) has no double backward: its backward pass is a C++ op without "
            "gradients of its own, so torch.autograd.grad(..., create_graph=True) cannot go through it. Use "
            "torch.nn.LSTM (same parameters: load_state_dict works both ways) where second-order gradients are needed.")
    input, batch_sizes, c0, w_ih, w_hh, gates_act, cells, hidden_prev = ctx.saved_tensors
    grad_input, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias = torch.ops.tl_core.lstm_layer_backward(
        grad_output, grad_h_n, grad_c_n, input, batch_sizes, c0, w_ih, w_hh, gates_act, cells, hidden_prev,
        ctx.reverse)
    has_b_ih, has_b_hh = ctx.has_bias
    # Both biases enter the gates the same way, so they get the same gradient (a copy each: two parameters must
    # not share one gradient tensor, which autograd may later accumulate into in place).
    return (grad_input, None, grad_h0, grad_c0, grad_w_ih, grad_w_hh, grad_bias if has_b_ih else None,
            (grad_bias.clone() if has_b_ih else grad_bias) if has_b_hh else None, None)


torch.library.register_autograd("tl_core::lstm_layer_forward", _lstm_layer_backward,
                                setup_context=_lstm_layer_setup_context)


def extension_info() -> dict:
    """What was built: whether the CUDA kernels are in, and which instruction set the CPU kernels use."""
    return {"with_cuda": bool(_C.with_cuda), "cpu_kernel_isa": _C.cpu_kernel_isa()}
