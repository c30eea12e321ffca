// Input checks of the fused LSTM ops, shared by the CPU (lstm.cpp) and CUDA (cuda/lstm.cu) registrations so that
// bad input gets the same clear message on every device. The fake (meta) kernels in tl_core/ops.py mirror them.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <string>
#include <utility>
#include <vector>

namespace tl_core {

inline void check_same_device_dtype(const char* op, const at::Tensor& reference, const char* reference_name,
                                    const at::Tensor& other, const char* other_name) {
  TORCH_CHECK(other.device() == reference.device(), op, ": ", other_name, " is on ", other.device(), " but ",
              reference_name, " is on ", reference.device(), "; move both to the same device");
  TORCH_CHECK(other.scalar_type() == reference.scalar_type(), op, ": ", other_name, " has dtype ",
              other.scalar_type(), " but ", reference_name, " has dtype ", reference.scalar_type(),
              "; cast both to the same floating-point dtype");
}

// The kernels are float32 and float64 only: half precision (float16, bfloat16) and integer tensors get a message
// that says so and how to convert, instead of ATen's "not implemented for 'Half'".
inline void check_supported_dtype(const char* op, const at::Tensor& t, const char* name) {
  const auto type = t.scalar_type();
  if (type == at::kFloat || type == at::kDouble) return;
  TORCH_CHECK(!at::isReducedFloatingType(type), op, ": ", name, " must be float32 or float64, got ", type,
              ": float16 and bfloat16 are not supported; convert with .float() (the input, and the model with "
              "model.float())");
  TORCH_CHECK(false, op, ": ", name, " must be float32 or float64, got ", type,
              "; convert with .float() (token ids go through an nn.Embedding first)");
}

inline void check_matrix(const char* op, const at::Tensor& t, const char* name, const char* layout) {
  TORCH_CHECK(t.dim() == 2, op, ": ", name, " must be 2-D ", layout, ", got a ", t.dim(), "-D tensor of shape ",
              t.sizes());
}

// gates: (B, 4H) pre-activations in gate order i, f, g, o; c_prev: (B, H).
inline void check_cell_forward(const at::Tensor& gates, const at::Tensor& c_prev,
                               const char* op = "tl_core.lstm_cell") {
  check_matrix(op, gates, "gates", "(batch, 4 * hidden_size)");
  check_matrix(op, c_prev, "c_prev", "(batch, hidden_size)");
  check_supported_dtype(op, gates, "gates");
  check_same_device_dtype(op, gates, "gates", c_prev, "c_prev");
  TORCH_CHECK(gates.size(0) == c_prev.size(0), op, ": gates has batch size ", gates.size(0), " but c_prev has ",
              c_prev.size(0));
  TORCH_CHECK(gates.size(1) == 4 * c_prev.size(1), op, ": gates must have 4 * hidden_size = ",
              4 * c_prev.size(1), " columns (gate order i, f, g, o) for c_prev of hidden size ", c_prev.size(1),
              ", got ", gates.size(1));
}

// The tensors the cell's backward reads: the activated gates (B, 4H) and the cell states (B, H) before and after,
// and the incoming gradients of h and c (each (B, H) or absent).
inline void check_cell_backward(const c10::optional<at::Tensor>& grad_h, const c10::optional<at::Tensor>& grad_c,
                                const at::Tensor& c_prev, const at::Tensor& c, const at::Tensor& gates_act) {
  constexpr const char* op = "tl_core.lstm_cell_backward";
  check_cell_forward(gates_act, c_prev, op);
  check_matrix(op, c, "c", "(batch, hidden_size)");
  check_same_device_dtype(op, c_prev, "c_prev", c, "c");
  TORCH_CHECK(c.sizes() == c_prev.sizes(), op, ": c has shape ", c.sizes(), " but c_prev has ", c_prev.sizes());
  for (const auto& [grad, name] : {std::pair{&grad_h, "grad_h"}, std::pair{&grad_c, "grad_c"}}) {
    if (grad->has_value()) {
      check_same_device_dtype(op, c, "c", grad->value(), name);
      TORCH_CHECK(grad->value().sizes() == c.sizes(), op, ": ", name, " has shape ", grad->value().sizes(),
                  " but the cell state has ", c.sizes());
    }
  }
}


// ---- the layer ops: a whole layer in one direction over a packed sequence (see layer.h) -----------------------

inline void check_shape(const char* op, const at::Tensor& t, const char* name, at::IntArrayRef expected,
                        const char* meaning) {
  TORCH_CHECK(t.sizes() == expected, op, ": ", name, " must have shape ", meaning, " = ", expected, ", got ",
              t.sizes());
}

inline void check_batch_sizes_tensor(const char* op, const at::Tensor& batch_sizes) {
  TORCH_CHECK(batch_sizes.dim() == 1 && batch_sizes.scalar_type() == at::kLong, op,
              ": batch_sizes must be a 1-D int64 tensor (rows per time step, as in a PackedSequence), got a ",
              batch_sizes.dim(), "-D tensor of dtype ", batch_sizes.scalar_type());
  TORCH_CHECK(batch_sizes.device().is_cpu(), op,
              ": batch_sizes must be on the CPU (the loop over time steps runs on the host), got it on ",
              batch_sizes.device());
}

// input (tokens, I), h0 and c0 (B, H), w_ih (4H, I), w_hh (4H, H), b_ih and b_hh (4H) or absent,
// batch_sizes (T) on the CPU. Values of batch_sizes are checked by PackedSteps.
inline void check_layer_forward(const at::Tensor& input, const at::Tensor& batch_sizes, const at::Tensor& h0,
                                const at::Tensor& c0, const at::Tensor& w_ih, const at::Tensor& w_hh,
                                const c10::optional<at::Tensor>& b_ih, const c10::optional<at::Tensor>& b_hh) {
  constexpr const char* op = "tl_core.lstm_layer";
  check_matrix(op, input, "input", "(tokens, input_size)");
  check_supported_dtype(op, input, "input");
  check_matrix(op, h0, "h0", "(batch, hidden_size)");
  const int64_t hidden = h0.size(1);
  for (const auto& [tensor, name] : {std::pair{&h0, "h0"}, std::pair{&c0, "c0"}, std::pair{&w_ih, "w_ih"},
                                     std::pair{&w_hh, "w_hh"}}) {
    check_same_device_dtype(op, input, "input", *tensor, name);
  }
  check_shape(op, c0, "c0", h0.sizes(), "h0's (batch, hidden_size)");
  check_shape(op, w_ih, "w_ih", {4 * hidden, input.size(1)}, "(4 * hidden_size, input_size)");
  check_shape(op, w_hh, "w_hh", {4 * hidden, hidden}, "(4 * hidden_size, hidden_size)");
  for (const auto& [bias, name] : {std::pair{&b_ih, "b_ih"}, std::pair{&b_hh, "b_hh"}}) {
    if (bias->has_value()) {
      check_same_device_dtype(op, input, "input", bias->value(), name);
      check_shape(op, bias->value(), name, {4 * hidden}, "(4 * hidden_size,)");
    }
  }
  check_batch_sizes_tensor(op, batch_sizes);
}

// What layer_backward reads: the forward's inputs and saved tensors, and the gradients of output, h_n, c_n.
inline void check_layer_backward(const c10::optional<at::Tensor>& grad_output,
                                 const c10::optional<at::Tensor>& grad_h_n,
                                 const c10::optional<at::Tensor>& grad_c_n, const at::Tensor& input,
                                 const at::Tensor& batch_sizes, const at::Tensor& c0, const at::Tensor& w_ih,
                                 const at::Tensor& w_hh, const at::Tensor& gates_act, const at::Tensor& cells,
                                 const at::Tensor& hidden_prev) {
  constexpr const char* op = "tl_core.lstm_layer_backward";
  check_matrix(op, input, "input", "(tokens, input_size)");
  check_supported_dtype(op, input, "input");
  check_matrix(op, c0, "c0", "(batch, hidden_size)");
  const int64_t tokens = input.size(0), hidden = c0.size(1);
  for (const auto& [tensor, name] : {std::pair{&c0, "c0"}, std::pair{&w_ih, "w_ih"}, std::pair{&w_hh, "w_hh"},
                                     std::pair{&gates_act, "gates_act"}, std::pair{&cells, "cells"},
                                     std::pair{&hidden_prev, "hidden_prev"}}) {
    check_same_device_dtype(op, input, "input", *tensor, name);
  }
  check_shape(op, w_ih, "w_ih", {4 * hidden, input.size(1)}, "(4 * hidden_size, input_size)");
  check_shape(op, w_hh, "w_hh", {4 * hidden, hidden}, "(4 * hidden_size, hidden_size)");
  check_shape(op, gates_act, "gates_act", {tokens, 4 * hidden}, "(tokens, 4 * hidden_size)");
  check_shape(op, cells, "cells", {tokens, hidden}, "(tokens, hidden_size)");
  check_shape(op, hidden_prev, "hidden_prev", {tokens, hidden}, "(tokens, hidden_size)");
  if (grad_output.has_value()) {
    check_same_device_dtype(op, input, "input", *grad_output, "grad_output");
    check_shape(op, *grad_output, "grad_output", {tokens, hidden}, "(tokens, hidden_size)");
  }
  for (const auto& [grad, name] : {std::pair{&grad_h_n, "grad_h_n"}, std::pair{&grad_c_n, "grad_c_n"}}) {
    if (grad->has_value()) {
      check_same_device_dtype(op, input, "input", grad->value(), name);
      check_shape(op, grad->value(), name, c0.sizes(), "c0's (batch, hidden_size)");
    }
  }
  check_batch_sizes_tensor(op, batch_sizes);
}

// The time steps of a packed sequence, read from batch_sizes (on the host) and checked against the tensors:
// each size in [0, batch], non-increasing (sequences sorted by decreasing length), summing to the token count.
class PackedSteps {
 public:
  PackedSteps(const at::Tensor& batch_sizes, int64_t tokens, int64_t batch) {
    const auto sizes = batch_sizes.contiguous();
    const int64_t* data = sizes.const_data_ptr<int64_t>();
    sizes_.assign(data, data + sizes.numel());
    offsets_.reserve(sizes_.size());
    int64_t total = 0, previous = batch;
    for (size_t t = 0; t < sizes_.size(); ++t) {
      TORCH_CHECK(sizes_[t] >= 0 && sizes_[t] <= previous, "tl_core.lstm_layer: batch_sizes must be non-increasing ",
                  "values in [0, batch = ", batch, "] (sequences sorted by decreasing length), got batch_sizes[", t,
                  "] = ", sizes_[t], t > 0 ? " after " : "", t > 0 ? std::to_string(previous) : std::string());
      offsets_.push_back(total);
      total += sizes_[t];
      previous = sizes_[t];
    }
    TORCH_CHECK(total == tokens, "tl_core.lstm_layer: batch_sizes sum to ", total, " but input has ", tokens,
                " rows (tokens); they must agree");
  }
  int64_t count() const { return static_cast<int64_t>(sizes_.size()); }
  // The rows any step touches: those of the first, widest step (0 without steps).
  int64_t rows() const { return sizes_.empty() ? 0 : sizes_.front(); }
  int64_t size(int64_t t) const { return sizes_[t]; }
  int64_t offset(int64_t t) const { return offsets_[t]; }

 private:
  std::vector<int64_t> sizes_, offsets_;
};

}  // namespace tl_core
