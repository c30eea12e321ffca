// One LSTM layer in one direction, forward and backward through time: the loop over time steps that both devices
// share. The GEMMs are ATen calls (MKL/oneDNN on the CPU, cuBLAS on PyTorch's current CUDA stream); the
// elementwise part of each step is one fused kernel, supplied by the device as a `Cell` policy (CpuLayerCell in
// lstm.cpp, CudaLayerCell in cuda/lstm.cu). Introduced in notebooks/03_fused_lstm.ipynb.
//
// Layout: PyTorch's packed-sequence layout. The sequences of a batch are sorted by decreasing length; time step t
// holds the first batch_sizes[t] of them, and its rows follow those of step t-1 in one (tokens, features) matrix.
// A batch of equal lengths T is simply the time-major (T, B, features) tensor with batch_sizes = [B] * T, so the
// padded case costs no conversion. Variable lengths come for free: a sequence that has ended is no longer among
// the first batch_sizes[t] rows, so its state is left as it was and no work is done for it (the active batch
// shrinks), and the reverse direction starts each sequence at its own last step, from h0.
//
// Threads: the recurrence runs over a window of rows [begin, end) of the batch, every step for those rows (a row's
// steps depend only on its own earlier steps). The device's `Cell::for_row_windows` decides how the batch is cut
// into windows: the CPU gives each thread one window and lets it run the whole recurrence with single-threaded
// GEMMs (one parallel region per layer call, no barrier per step) while W_hh fits in a core's cache, and a thread
// that is done takes over the tail of a slower thread's window; above that size it takes the whole batch as one
// window whose steps use every thread (lstm.cpp: windows_per_thread). CUDA takes the whole batch as one window and
// parallelises each step on the device.
//
// What backward needs, saved by the forward: the activated gates (tokens, 4H), the cell states (tokens, H) and
// the hidden state each step started from (tokens, H), whose rows line up with the input's so that the weight
// gradients are two whole-sequence GEMMs after the loop.
#pragma once

#include <ATen/ATen.h>
#include <ATen/DeviceGuard.h>

#include <algorithm>
#include <tuple>
#include <vector>

#include "lstm_checks.h"

namespace tl_core {

// Step t of the loop in processing order: forward direction t = s, reverse direction t = T-1-s.
inline int64_t step_at(int64_t s, int64_t steps, bool reverse) { return reverse ? steps - 1 - s : s; }

// The recurrent GEMM for a block of rows, through ATen (MKL on the CPU, cuBLAS on a GPU): forward, the gates get
// h W_hhᵀ added; backward, grad_h = d_gates W_hh. The CPU's policy swaps in MKL's packed GEMM (lstm.cpp).
class AtenRecurrentGemm {
 public:
  AtenRecurrentGemm(const at::Tensor& w_hh, bool forward) : w_(forward ? w_hh.detach().t() : w_hh.detach()) {}

  // out[out_row : out_row + rows] (+)= in[in_row : in_row + rows] W, added when `accumulate`, else overwritten.
  void apply(const at::Tensor& in, int64_t in_row, at::Tensor& out, int64_t out_row, int64_t rows,
             bool accumulate) const {
    auto out_rows = out.narrow(0, out_row, rows);
    if (accumulate) {
      out_rows.addmm_(in.narrow(0, in_row, rows), w_);
    } else {
      at::mm_out(out_rows, in.narrow(0, in_row, rows), w_);
    }
  }

 private:
  at::Tensor w_;
};

// The two whole-sequence GEMMs with the layer's input weights, through ATen (MKL on the CPU, cuBLAS on a GPU); the
// CPU's policy swaps in oneDNN's for float (lstm.cpp). Forward: gates = X W_ihᵀ + bias (bias may be undefined).
// Backward: grad_input = d_gates W_ih.
// The results go into `out`, a (rows, columns) buffer of the layer.
inline void aten_input_projection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& bias,
                                  at::Tensor& out) {
  if (bias.defined()) {
    at::addmm_out(out, bias, x, w_ih.t());
  } else {
    at::mm_out(out, x, w_ih.t());
  }
}

inline void aten_input_gradient(const at::Tensor& d_gates, const at::Tensor& w_ih, at::Tensor& out) {
  at::mm_out(out, d_gates, w_ih);
}

// How many of the rows [begin, end) are active at step t (the first batch_sizes[t] rows are).
inline int64_t rows_in_window(const PackedSteps& steps, int64_t t, int64_t begin, int64_t end) {
  return std::max<int64_t>(0, std::min(steps.size(t), end) - begin);
}

// The rows a window runs, [begin, end), from iteration `first` on (an iteration is a step in processing order).
// The CPU lets the end move down between iterations, when an idle thread takes over the window's tail (lstm.cpp:
// SharedWindow); here it stays put. claim(i) gives the window's end for iteration i as it starts; done(i), after.
struct FixedWindow {
  int64_t begin, end, first = 0;
  int64_t claim(int64_t /*iteration*/) const { return end; }
  void done(int64_t /*iteration*/) const {}
};

// The forward recurrence for a window of rows, every step from its first. Buffers as in layer_forward.
template <class Cell, typename T, class Gemm, class Window>
void forward_window(const PackedSteps& steps, bool reverse, Window& window, int64_t hidden, at::Tensor& gates,
                    at::Tensor& h_n, at::Tensor& c_n, const Gemm& gemm, T* output, T* cells, T* hidden_prev) {
  const int64_t begin = window.begin;
  T* gates_data = gates.mutable_data_ptr<T>();
  T* h_data = h_n.mutable_data_ptr<T>() + begin * hidden;
  T* c_data = c_n.mutable_data_ptr<T>() + begin * hidden;
  for (int64_t s = window.first; s < steps.count(); ++s) {
    const int64_t t = step_at(s, steps.count(), reverse);
    const int64_t rows = rows_in_window(steps, t, begin, window.claim(s)), offset = steps.offset(t) + begin;
    if (rows > 0) {
      gemm.apply(h_n, begin, gates, offset, rows, /*accumulate=*/true);
      Cell::template forward_step<T>(gates_data + offset * 4 * hidden, c_data, h_data,
                                     hidden_prev + offset * hidden, cells + offset * hidden,
                                     output + offset * hidden, rows, hidden);
    }
    window.done(s);
  }
}

// The backward recurrence for a window of rows: d_gates of every step, and the gradients carried along the state
// (grad_h, grad_c: in, those of h_n and c_n; out, those of h0 and c0). Iteration i is step count - 1 - i.
template <class Cell, typename T, class Gemm, class Window>
void backward_window(const PackedSteps& steps, bool reverse, Window& window, int64_t hidden, const T* grad_output,
                     const T* act, const T* cells, const T* c0, at::Tensor& grad_h, at::Tensor& grad_c,
                     at::Tensor& d_gates, const Gemm& gemm) {
  const int64_t begin = window.begin;
  T* d_gates_data = d_gates.mutable_data_ptr<T>();
  const T* grad_h_data = grad_h.const_data_ptr<T>() + begin * hidden;
  T* grad_c_data = grad_c.mutable_data_ptr<T>() + begin * hidden;
  for (int64_t i = window.first; i < steps.count(); ++i) {
    const int64_t s = steps.count() - 1 - i, t = step_at(s, steps.count(), reverse), end = window.claim(i);
    const int64_t rows = rows_in_window(steps, t, begin, end), offset = steps.offset(t) + begin;
    if (rows > 0) {
      // The cell state this step started from: for the rows that were active at the step before (in processing
      // order) it is that step's cell state; for the others this is their first step, and it is c0.
      const bool has_previous = s > 0;
      const int64_t previous = has_previous ? step_at(s - 1, steps.count(), reverse) : 0;
      const int64_t continuing = has_previous ? std::min(rows_in_window(steps, previous, begin, end), rows) : 0;
      const T* c_prev_continuing = has_previous ? cells + (steps.offset(previous) + begin) * hidden : c0;
      Cell::template backward_step<T>(grad_h_data, grad_output ? grad_output + offset * hidden : nullptr,
                                      grad_c_data, act + offset * 4 * hidden, c_prev_continuing, c0 + begin * hidden,
                                      continuing, cells + offset * hidden, d_gates_data + offset * 4 * hidden, rows,
                                      hidden);
      gemm.apply(d_gates, offset, grad_h, begin, rows, /*accumulate=*/false);
    }
    window.done(i);
  }
}

template <class Cell>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_forward(
    const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0, const at::Tensor& c0,
    const at::Tensor& w_ih, const at::Tensor& w_hh, const c10::optional<at::Tensor>& b_ih,
    const c10::optional<at::Tensor>& b_hh, bool reverse) {
  check_layer_forward(input, batch_sizes, h0, c0, w_ih, w_hh, b_ih, b_hh);
  const c10::OptionalDeviceGuard device_guard(at::device_of(input));
  const PackedSteps steps(batch_sizes, input.size(0), h0.size(0));
  const int64_t hidden = h0.size(1);

  // The input projection of every step in one GEMM, both biases folded in: gates = X W_ihᵀ + (b_ih + b_hh).
  // The per-step GEMM then adds h W_hhᵀ in place and the cell overwrites the pre-activations with the activated
  // gates, so one (tokens, 4H) buffer serves all three.
  const auto x = input.contiguous();
  at::Tensor bias;
  if (b_ih.has_value() && b_hh.has_value()) {
    bias = *b_ih + *b_hh;
  } else if (b_ih.has_value() || b_hh.has_value()) {
    bias = b_ih.has_value() ? *b_ih : *b_hh;
  }
  at::Tensor gates = Cell::input_projection(x, w_ih, bias);
  at::Tensor output = Cell::empty({input.size(0), hidden}, h0.options());
  at::Tensor cells = Cell::empty(output.sizes(), output.options());
  at::Tensor hidden_prev = Cell::empty(output.sizes(), output.options());
  // The running state: rows that are not among the first batch_sizes[t] are never touched again (forward
  // direction) or not yet (reverse direction), so after the loop these buffers hold h_n and c_n.
  auto h_n = h0.contiguous().clone();
  auto c_n = c0.contiguous().clone();

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "tl_core.lstm_layer_forward", [&] {
    const typename Cell::template RecurrentGemm<scalar_t> gemm(w_hh, /*forward=*/true);
    scalar_t* output_data = output.mutable_data_ptr<scalar_t>();
    scalar_t* cells_data = cells.mutable_data_ptr<scalar_t>();
    scalar_t* hidden_prev_data = hidden_prev.mutable_data_ptr<scalar_t>();
    // Iteration s runs step t = s (forward direction) or T-1-s (reverse): a row of length L is active at
    // iterations [0, L) or [T-L, T).
    Cell::template for_row_windows<scalar_t>(steps, hidden, /*active_late=*/reverse, [&](auto& window) {
      forward_window<Cell, scalar_t>(steps, reverse, window, hidden, gates, h_n, c_n, gemm, output_data, cells_data,
                                     hidden_prev_data);
    });
  });
  return {output, h_n, c_n, gates, cells, hidden_prev};
}

template <class Cell>
std::tuple<at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor, at::Tensor> layer_backward(
    const c10::optional<at::Tensor>& grad_output, const c10::optional<at::Tensor>& grad_h_n,
    const c10::optional<at::Tensor>& grad_c_n, const at::Tensor& input, const at::Tensor& batch_sizes,
    const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh, const at::Tensor& gates_act,
    const at::Tensor& cells, const at::Tensor& hidden_prev, bool reverse) {
  check_layer_backward(grad_output, grad_h_n, grad_c_n, input, batch_sizes, c0, w_ih, w_hh, gates_act, cells,
                       hidden_prev);
  const c10::OptionalDeviceGuard device_guard(at::device_of(input));
  const PackedSteps steps(batch_sizes, input.size(0), c0.size(0));
  const int64_t hidden = c0.size(1);
  const auto act = gates_act.contiguous();
  const auto cells_c = cells.contiguous();
  const auto c0_c = c0.contiguous();
  const auto grad_output_c = grad_output.has_value() ? grad_output->contiguous() : at::Tensor();
  // Gradients flowing back along the state; they start as those of h_n and c_n, and when the loop is done they
  // are those of h0 and c0 (every row's first step has been passed).
  auto grad_h = grad_h_n.has_value() ? grad_h_n->contiguous().clone() : at::zeros_like(c0_c);
  auto grad_c = grad_c_n.has_value() ? grad_c_n->contiguous().clone() : at::zeros_like(c0_c);
  at::Tensor d_gates = Cell::empty(act.sizes(), act.options());

  AT_DISPATCH_FLOATING_TYPES(input.scalar_type(), "tl_core.lstm_layer_backward", [&] {
    const typename Cell::template RecurrentGemm<scalar_t> gemm(w_hh, /*forward=*/false);
    const scalar_t* grad_output_data = grad_output_c.defined() ? grad_output_c.const_data_ptr<scalar_t>() : nullptr;
    Cell::template for_row_windows<scalar_t>(steps, hidden, /*active_late=*/!reverse, [&](auto& window) {
      backward_window<Cell, scalar_t>(steps, reverse, window, hidden, grad_output_data,
                                      act.const_data_ptr<scalar_t>(), cells_c.const_data_ptr<scalar_t>(),
                                      c0_c.const_data_ptr<scalar_t>(), grad_h, grad_c, d_gates, gemm);
    });
  });

  // Weight gradients over the whole sequence at once: two GEMMs with the token dimension as the inner one, each
  // computed as (x^T d_gates)^T, a transposed view, which MKL runs faster than d_gates^T x at large hidden sizes.
  auto grad_w_ih = at::mm(input.contiguous().t(), d_gates).t();
  auto grad_w_hh = at::mm(hidden_prev.contiguous().t(), d_gates).t();
  auto grad_bias = d_gates.sum(0);
  auto grad_input = Cell::input_gradient(d_gates, w_ih);
  return {grad_input, grad_h, grad_c, grad_w_ih, grad_w_hh, grad_bias};
}

}  // namespace tl_core
