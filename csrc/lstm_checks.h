// Input checks of the fused LSTM ops, shared by the CPU (lstm.cpp) and CUDA (cuda/lstm.cu) registrations so that
// bad input gets the same clear message on every device. The fake (meta) kernels in tl_core/ops.py mirror them.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Exception.h>

#include <utility>

namespace tl_core {

inline void check_same_device_dtype(const char* op, const at::Tensor& reference, const char* reference_name,
                                    const at::Tensor& other, const char* other_name) {
  TORCH_CHECK(other.device() == reference.device(), op, ": ", other_name, " is on ", other.device(), " but ",
              reference_name, " is on ", reference.device(), "; move both to the same device");
  TORCH_CHECK(other.scalar_type() == reference.scalar_type(), op, ": ", other_name, " has dtype ",
              other.scalar_type(), " but ", reference_name, " has dtype ", reference.scalar_type(),
              "; cast both to the same floating-point dtype");
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
  TORCH_CHECK(at::isFloatingType(gates.scalar_type()), op, ": gates must be float32 or float64, got ",
              gates.scalar_type());
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

}  // namespace tl_core
