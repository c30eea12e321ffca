"""FusedLSTM: a drop-in ``torch.nn.LSTM`` whose layers run on the fused C++/CUDA kernels of ``csrc/``.

Same constructor, parameter names, shapes and initialisation as ``torch.nn.LSTM`` (so ``load_state_dict`` works
both ways, strictly), same ``forward`` results: ``output, (h_n, c_n)``, for batched and unbatched tensors and for
a ``PackedSequence``. One addition: ``forward(input, hx=None, lengths=None)`` takes the true length of each padded
sequence and then skips the padding, as ``nn.LSTM`` does only on a ``PackedSequence``::

    lstm = FusedLSTM(embedding_dim, hidden_size, batch_first=True)
    output, (h_n, c_n) = lstm(embedded, lengths=lengths)   # embedded (B, T, E), lengths (B,) int64

Each layer and direction is one call of ``tl_core.ops.lstm_layer`` (the loop over time is in C++); the sequences
travel between layers in the packed layout (sorted by length, padding dropped), so a padded batch is converted
once on the way in and once on the way out. Introduced in ``notebooks/03_fused_lstm.ipynb``.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import PackedSequence

from . import ops


def check_lengths(lengths, batch: int, steps: int) -> Tensor:
    """The lengths of a padded batch of ``batch`` sequences of ``steps`` steps, as a CPU int64 tensor: each in
    [1, steps], or a clear error. Also used by ``models.SentimentLSTM``, which packs its batch itself."""
    if isinstance(lengths, (list, tuple)):
        lengths = torch.as_tensor(lengths)
    if not isinstance(lengths, Tensor):
        raise TypeError(f"lengths must be a 1-D int64 tensor (or a list of ints), got {type(lengths).__name__}")
    if lengths.dtype.is_floating_point or lengths.dtype.is_complex or lengths.dtype == torch.bool:
        raise TypeError(f"lengths must be an integer tensor (int64), got dtype {lengths.dtype}")
    if lengths.dim() != 1 or lengths.shape[0] != batch:
        raise ValueError(f"lengths must be 1-D with one length per sequence ({batch} for this batch), got shape "
                         f"{list(lengths.shape)}")
    lengths = lengths.to(device="cpu", dtype=torch.int64)
    if batch and (int(lengths.min()) < 1 or int(lengths.max()) > steps):
        raise ValueError(f"lengths must lie in [1, {steps}] (the input's sequence length), got values from "
                         f"{int(lengths.min())} to {int(lengths.max())}")
    return lengths


class FusedLSTM(nn.Module):
    """``torch.nn.LSTM`` on the fused kernels, plus ``lengths`` in ``forward``.

    Args are those of ``torch.nn.LSTM``: ``input_size``, ``hidden_size``, ``num_layers``, ``bias``,
    ``batch_first``, ``dropout`` (between layers, not after the last), ``bidirectional``, ``device``, ``dtype``.
    ``proj_size`` is accepted for signature compatibility and must be 0 (projections are not implemented).
    Introduced in ``notebooks/03_fused_lstm.ipynb``.
    """

    def __init__(self, input_size: int, hidden_size: int, num_layers: int = 1, bias: bool = True,
                 batch_first: bool = False, dropout: float = 0.0, bidirectional: bool = False, proj_size: int = 0,
                 device=None, dtype=None) -> None:
        super().__init__()
        if not isinstance(dropout, numbers.Number) or isinstance(dropout, bool) or not 0 <= dropout <= 1:
            raise ValueError(f"dropout must be a number in [0, 1] (the probability of zeroing an element of a "
                             f"layer's output), got {dropout!r}")
        for name, value in (("input_size", input_size), ("hidden_size", hidden_size), ("num_layers", num_layers)):
            if not isinstance(value, int) or isinstance(value, bool):
                raise TypeError(f"{name} must be an int, got {type(value).__name__}")
            if value <= 0:
                raise ValueError(f"{name} must be greater than zero, got {value}")
        for name, value in (("bias", bias), ("batch_first", batch_first), ("bidirectional", bidirectional)):
            if not isinstance(value, bool):
                raise TypeError(f"{name} must be a bool, got {type(value).__name__}")
        if proj_size != 0:
            raise NotImplementedError(f"FusedLSTM has no projections: proj_size must be 0, got {proj_size}; use "
                                      "torch.nn.LSTM for an LSTM with projections")
        if dropout > 0 and num_layers == 1:
            warnings.warn(f"dropout is applied between layers, so dropout={dropout} does nothing with num_layers=1",
                          stacklevel=2)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = num_layers
        self.bias = bias
        self.batch_first = batch_first
        self.dropout = float(dropout)
        self.bidirectional = bidirectional
        self.proj_size = 0
        num_directions = 2 if bidirectional else 1
        factory = {"device": device, "dtype": dtype}

        # Registered in nn.LSTM's order (layer, direction, then w_ih, w_hh, b_ih, b_hh), so that the same seed gives
        # the same initial values and state_dicts have the same keys in the same order.
        self._layer_parameter_names: list[list[str]] = []
        for layer in range(num_layers):
            layer_input_size = input_size if layer == 0 else hidden_size * num_directions
            for direction in range(num_directions):
                suffix = f"l{layer}" + ("_reverse" if direction == 1 else "")
                shapes = {f"weight_ih_{suffix}": (4 * hidden_size, layer_input_size),
                          f"weight_hh_{suffix}": (4 * hidden_size, hidden_size)}
                if bias:
                    shapes.update({f"bias_ih_{suffix}": (4 * hidden_size,), f"bias_hh_{suffix}": (4 * hidden_size,)})
                for name, shape in shapes.items():
                    self.register_parameter(name, nn.Parameter(torch.empty(shape, **factory)))
                self._layer_parameter_names.append(list(shapes))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """nn.LSTM's initialisation: every parameter uniform in [-1/sqrt(hidden_size), 1/sqrt(hidden_size)]."""
        bound = 1.0 / math.sqrt(self.hidden_size)
        for parameter in self.parameters():
            nn.init.uniform_(parameter, -bound, bound)

    @property
    def all_weights(self) -> list[list[nn.Parameter]]:
        """The parameters of each layer and direction, as ``nn.LSTM.all_weights``."""
        return [[getattr(self, name) for name in names] for names in self._layer_parameter_names]

    def flatten_parameters(self) -> None:
        """Does nothing; here so that code written for ``nn.LSTM`` (which packs weights for cuDNN) runs unchanged."""

    def extra_repr(self) -> str:
        text = f"{self.input_size}, {self.hidden_size}"
        if self.num_layers != 1:
            text += f", num_layers={self.num_layers}"
        if self.bias is not True:
            text += f", bias={self.bias}"
        if self.batch_first is not False:
            text += f", batch_first={self.batch_first}"
        if self.dropout != 0:
            text += f", dropout={self.dropout}"
        if self.bidirectional is not False:
            text += f", bidirectional={self.bidirectional}"
        return text

    # ----------------------------------------------------------------------------------------------------------

    def forward(self, input: Tensor | PackedSequence, hx: tuple[Tensor, Tensor] | None = None,
                lengths: Tensor | Sequence[int] | None = None):
        """``output, (h_n, c_n)`` exactly as ``nn.LSTM`` returns them.

        ``input``: (T, B, input_size), or (B, T, input_size) with ``batch_first``, or unbatched (T, input_size),
        or a ``PackedSequence`` (then ``output`` is one too). ``hx``: ``(h_0, c_0)``, each
        (num_layers * num_directions, B, hidden_size) (without B for unbatched input); zeros when None.
        ``lengths``: for a padded batched tensor, the true length of each sequence (1-D integer tensor or list,
        each in [1, T]). Steps past a sequence's end are not computed: its state stays as it was, its ``output``
        there is zero, ``h_n, c_n`` are its state after its last step, and the reverse direction starts at its last
        step; the results equal ``nn.LSTM`` on ``pack_padded_sequence(input, lengths)``.
        """
        if isinstance(input, PackedSequence):
            if lengths is not None:
                raise ValueError("lengths: a PackedSequence carries its own lengths; pass lengths only with a "
                                 "padded tensor")
            return self._forward_packed(input, hx)
        if not isinstance(input, Tensor):
            raise TypeError(f"input must be a Tensor or a PackedSequence, got {type(input).__name__}")
        if input.dim() not in (2, 3):
            raise ValueError(f"FusedLSTM: input must be 3-D (batched) or 2-D (unbatched), got {input.dim()}-D input "
                             f"of shape {list(input.shape)}")
        batched = input.dim() == 3
        if not batched:
            if lengths is not None:
                raise ValueError("lengths is for a batch of padded sequences (3-D input); an unbatched (2-D) input "
                                 "is one sequence of its full length")
            # One sequence: a batch of one, time-major (batch_first does not apply to unbatched input).
            output, (h_n, c_n) = self._forward_padded(input.unsqueeze(1), self._unsqueeze_hx(hx), None, False)
            return output.squeeze(1), (h_n.squeeze(1), c_n.squeeze(1))
        return self._forward_padded(input, hx, lengths, self.batch_first)

    def _forward_packed(self, packed: PackedSequence, hx):
        data, batch_sizes, sorted_indices, unsorted_indices = packed
        self._check_input(data, "input.data", 2)
        batch = int(batch_sizes[0]) if len(batch_sizes) else 0
        h0, c0 = self._initial_state(hx, batch, data)
        if sorted_indices is not None:
            # hx is given in the caller's order; the packed rows are in order of decreasing length.
            h0, c0 = h0.index_select(1, sorted_indices), c0.index_select(1, sorted_indices)
        output, h_n, c_n = self._run_layers(data, batch_sizes, h0, c0)
        if unsorted_indices is not None:
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return PackedSequence(output, batch_sizes, sorted_indices, unsorted_indices), (h_n, c_n)

    def _forward_padded(self, input: Tensor, hx, lengths, batch_first: bool):
        self._check_input(input, "input", 3)
        batch, steps = (input.shape[0], input.shape[1]) if batch_first else (input.shape[1], input.shape[0])
        if steps == 0:
            raise ValueError(f"FusedLSTM: input has no time steps (sequence length 0, input of shape "
                             f"{list(input.shape)}); as for nn.LSTM, every sequence needs at least one")
        h0, c0 = self._initial_state(hx, batch, input)
        output_size = self.hidden_size * (2 if self.bidirectional else 1)
        if lengths is None:
            # Equal lengths: the time-major tensor already is the packed layout, with batch_sizes = [B] * T.
            time_major = (input.transpose(0, 1) if batch_first else input).contiguous()
            batch_sizes = torch.full((steps,), batch, dtype=torch.int64)
            output, h_n, c_n = self._run_layers(time_major.view(steps * batch, self.input_size), batch_sizes, h0, c0)
            output = output.view(steps, batch, output_size)
            return (output.transpose(0, 1) if batch_first else output), (h_n, c_n)

        lengths = check_lengths(lengths, batch, steps)
        sorted_lengths, sorted_indices = torch.sort(lengths, descending=True, stable=True)
        in_order = bool(torch.equal(sorted_indices, torch.arange(batch)))
        max_length = int(sorted_lengths[0]) if batch else 0
        active = sorted_lengths.unsqueeze(0) > torch.arange(max_length).unsqueeze(1)  # (steps, batch), sorted
        batch_sizes = active.sum(1)
        # Row of each packed token in the padded input viewed as (rows, features): time-major packed order.
        step_stride, batch_stride = (1, steps) if batch_first else (batch, 1)
        rows = (torch.arange(max_length).unsqueeze(1) * step_stride + sorted_indices.unsqueeze(0) * batch_stride)
        rows = rows[active].to(input.device)
        data = input.contiguous().view(batch * steps, self.input_size).index_select(0, rows)
        if not in_order:
            h0, c0 = h0.index_select(1, sorted_indices.to(h0.device)), c0.index_select(1, sorted_indices.to(h0.device))
        packed_output, h_n, c_n = self._run_layers(data, batch_sizes, h0, c0)
        output = packed_output.new_zeros(batch * steps, output_size).index_copy_(0, rows, packed_output)
        output = output.view(batch, steps, output_size) if batch_first else output.view(steps, batch, output_size)
        if not in_order:
            unsorted_indices = torch.empty_like(sorted_indices)
            unsorted_indices[sorted_indices] = torch.arange(batch)
            unsorted_indices = unsorted_indices.to(h_n.device)
            h_n, c_n = h_n.index_select(1, unsorted_indices), c_n.index_select(1, unsorted_indices)
        return output, (h_n, c_n)

    def _run_layers(self, data: Tensor, batch_sizes: Tensor, h0: Tensor, c0: Tensor):
        """All layers over packed ``data`` (tokens, features): each layer and direction one fused op."""
        num_directions = 2 if self.bidirectional else 1
        h_n, c_n = [], []
        layer_input = data
        for layer in range(self.num_layers):
            outputs = []
            for direction in range(num_directions):
                index = layer * num_directions + direction
                parameters = [getattr(self, name) for name in self._layer_parameter_names[index]]
                w_ih, w_hh, b_ih, b_hh = parameters if self.bias else (*parameters, None, None)
                output, h, c = ops.lstm_layer(layer_input, batch_sizes, h0[index], c0[index], w_ih, w_hh, b_ih, b_hh,
                                              reverse=direction == 1)
                outputs.append(output)
                h_n.append(h)
                c_n.append(c)
            layer_input = outputs[0] if num_directions == 1 else torch.cat(outputs, dim=1)
            if self.dropout > 0 and self.training and layer < self.num_layers - 1:
                layer_input = F.dropout(layer_input, p=self.dropout, training=True)
        return layer_input, torch.stack(h_n), torch.stack(c_n)

    # ---- checks: the errors nn.LSTM gives, naming the argument ---------------------------------------------

    def _check_input(self, input: Tensor, name: str, dims: int) -> None:
        weight = self.weight_ih_l0
        if input.dim() != dims:
            raise ValueError(f"FusedLSTM: {name} must be {dims}-D, got {input.dim()}-D of shape {list(input.shape)}")
        if input.shape[-1] != self.input_size:
            raise RuntimeError(f"FusedLSTM: {name}.size(-1) must equal input_size = {self.input_size}, got "
                             f"{input.shape[-1]} (input of shape {list(input.shape)})")
        if weight.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"FusedLSTM: the weights are {weight.dtype}, but only float32 and float64 are supported "
                             f"(no float16 / bfloat16 kernels); convert the model with model.float() and the input "
                             f"with input.float()")
        if not input.dtype.is_floating_point:
            raise ValueError(f"FusedLSTM: {name} has dtype {input.dtype}, but it must be floating-point like the "
                             f"weights ({weight.dtype}); convert it with {name}.to({weight.dtype}) (token ids go "
                             f"through an nn.Embedding first)")
        if input.dtype not in (torch.float32, torch.float64):
            raise ValueError(f"FusedLSTM: {name} has dtype {input.dtype}, but only float32 and float64 are supported "
                             f"(no float16 / bfloat16 kernels); convert it with {name}.float()"
                             + ("" if weight.dtype == torch.float32 else f" or {name}.to({weight.dtype})"))
        if input.dtype != weight.dtype:
            raise ValueError(f"FusedLSTM: {name} has dtype {input.dtype} but the weights have {weight.dtype}; convert "
                            f"the input (input.to({weight.dtype})) or the model (model.to({input.dtype}))")
        if input.device != weight.device:
            raise RuntimeError(f"FusedLSTM: {name} is on {input.device} but the weights are on {weight.device}; "
                               f"move the input (input.to('{weight.device}')) or the model (model.to('{input.device}'))")

    def _state_shape(self, batch: int) -> tuple[int, int, int]:
        return ((2 if self.bidirectional else 1) * self.num_layers, batch, self.hidden_size)

    def _initial_state(self, hx, batch: int, input: Tensor) -> tuple[Tensor, Tensor]:
        expected = self._state_shape(batch)
        if hx is None:
            zeros = torch.zeros(expected, dtype=input.dtype, device=input.device)
            return zeros, zeros
        if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(isinstance(t, Tensor) for t in hx):
            raise TypeError("FusedLSTM: hx must be a tuple (h_0, c_0) of two tensors")
        for tensor, name in zip(hx, ("hx[0] (h_0)", "hx[1] (c_0)")):
            if tuple(tensor.shape) != expected:
                raise RuntimeError(f"FusedLSTM: {name} must have shape (num_layers * num_directions, batch, "
                                 f"hidden_size) = {expected}, got {tuple(tensor.shape)}")
            if tensor.dtype != input.dtype or tensor.device != input.device:
                raise RuntimeError(f"FusedLSTM: {name} is {tensor.dtype} on {tensor.device} but the input is "
                                f"{input.dtype} on {input.device}; they must agree")
        return hx[0], hx[1]

    def _unsqueeze_hx(self, hx):
        """hx of an unbatched input, (L * D, H) each, as a batch of one."""
        if hx is None:
            return None
        if not isinstance(hx, (tuple, list)) or len(hx) != 2 or not all(isinstance(t, Tensor) for t in hx):
            raise TypeError("FusedLSTM: hx must be a tuple (h_0, c_0) of two tensors")
        if hx[0].dim() != 2 or hx[1].dim() != 2:
            expected = self._state_shape(1)
            raise RuntimeError(f"FusedLSTM: for unbatched 2-D input, hx[0] (h_0) and hx[1] (c_0) must be 2-D "
                             f"(num_layers * num_directions, hidden_size) = {(expected[0], expected[2])}, got "
                             f"{tuple(hx[0].shape)} and {tuple(hx[1].shape)}")
        return hx[0].unsqueeze(1), hx[1].unsqueeze(1)
