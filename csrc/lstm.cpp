// The fused LSTM ops: their schemas (one TORCH_LIBRARY for every device), the CPU kernels and their
// registration, and the Python module tl_core._C. The CUDA kernels are registered in cuda/lstm.cu.
// Introduced in notebooks/03_fused_lstm.ipynb.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <torch/extension.h>

#include <algorithm>

#include "cell_cpu.h"
#include "cell_math.h"
#include "layer.h"
#include "lstm_checks.h"

namespace tl_core {
namespace {

// Hidden units per parallel chunk. Below this a step is cheaper on one thread than the cost of waking a second.
constexpr int64_t kGrainUnits = 16384;

int64_t grain_rows(int64_t hidden) { return std::max<int64_t>(1, kGrainUnits / std::max<int64_t>(hidden, 1)); }

template <typename T>
TL_HOST_DEVICE void forward_rows(const T* __restrict__ gates, const T* __restrict__ c_prev, T* __restrict__ act,
                                 T* __restrict__ c, T* __restrict__ h, int64_t rows, int64_t hidden) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* a = gates + r * 4 * hidden;
    T* w = act + r * 4 * hidden;
    const int64_t s = r * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      cell_forward_unit(a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j], c_prev[s + j], &w[j],
                        &w[hidden + j], &w[2 * hidden + j], &w[3 * hidden + j], &c[s + j], &h[s + j]);
    }
  }
}

template <typename T>
TL_HOST_DEVICE void backward_rows(const T* __restrict__ grad_h, const T* __restrict__ grad_c,
                                  const T* __restrict__ act, const T* __restrict__ c_prev, const T* __restrict__ c,
                                  T* __restrict__ d_gates, T* __restrict__ d_c_prev, int64_t rows, int64_t hidden) {
  for (int64_t r = 0; r < rows; ++r) {
    const T* w = act + r * 4 * hidden;
    T* d = d_gates + r * 4 * hidden;
    const int64_t s = r * hidden;
    for (int64_t j = 0; j < hidden; ++j) {
      cell_backward_unit(grad_h[s + j], grad_c[s + j], w[j], w[hidden + j], w[2 * hidden + j], w[3 * hidden + j],
                         c_prev[s + j], c[s + j], &d[j], &d[hidden + j], &d[2 * hidden + j], &d[3 * hidden + j],
                         &d_c_prev[s + j]);
    }
  }
}

// float loops are compiled three times and picked at load time for the CPU at hand (GCC function
// multiversioning): AVX-512, AVX2+FMA, or the baseline x86-64. double calls std::exp, which does not
// vectorize, so one version is enough.
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
#define TL_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TL_CPU_CLONES
#endif

TL_CPU_CLONES void forward_rows_float(const float* gates, const float* c_prev, float* act, float* c, float* h,
                                      int64_t rows, int64_t hidden) {
  forward_rows<float>(gates, c_prev, act, c, h, rows, hidden);
}

TL_CPU_CLONES void backward_rows_float(const float* grad_h, const float* grad_c, const float* act,
                                       const float* c_prev, const float* c, float* d_gates, float* d_c_prev,
                                       int64_t rows, int64_t hidden) {
  backward_rows<float>(grad_h, grad_c, act, c_prev, c, d_gates, d_c_prev, rows, hidden);
}

template <typename T>
void forward_rows_any(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t rows, int64_t hidden) {
  if constexpr (std::is_same_v<T, float>) {
    forward_rows_float(gates, c_prev, act, c, h, rows, hidden);
  } else {
    forward_rows<T>(gates, c_prev, act, c, h, rows, hidden);
  }
}

template <typename T>
void backward_rows_any(const T* grad_h, const T* grad_c, const T* act, const T* c_prev, const T* c, T* d_gates,
                       T* d_c_prev, int64_t rows, int64_t hidden) {
  if constexpr (std::is_same_v<T, float>) {
    backward_rows_float(grad_h, grad_c, act, c_prev, c, d_gates, d_c_prev, rows, hidden);
  } else {
    backward_rows<T>(grad_h, grad_c, act, c_prev, c, d_gates, d_c_prev, rows, hidden);
  }
}

// ---- the layer's step kernels (layer.h): the same math as the cell op, but in place on the layer's buffers ----

// One row of a forward step. The four gate blocks are read as pre-activations and overwritten with the activated
// gates; the state is read and updated in place; h and c are also written into the layer's output and saved
// cell states, and the state the step started from into hidden_prev (for the weight gradient of W_hh).
template <typename T>
TL_HOST_DEVICE void layer_forward_row(T* __restrict__ gate_i, T* __restrict__ gate_f, T* __restrict__ gate_g,
                                      T* __restrict__ gate_o, T* __restrict__ c_state, T* __restrict__ h_state,
                                      T* __restrict__ h_prev_out, T* __restrict__ c_out, T* __restrict__ h_out,
                                      int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    T c, h;
    h_prev_out[j] = h_state[j];
    cell_forward_unit(gate_i[j], gate_f[j], gate_g[j], gate_o[j], c_state[j], &gate_i[j], &gate_f[j], &gate_g[j],
                      &gate_o[j], &c, &h);
    c_state[j] = c;
    c_out[j] = c;
    h_state[j] = h;
    h_out[j] = h;
  }
}

template <typename T>
TL_HOST_DEVICE void layer_forward_rows(T* gates_act, T* c_state, T* h_state, T* h_prev_out, T* c_out, T* h_out, int64_t rows,
                        int64_t hidden) {
  for (int64_t r = 0; r < rows; ++r) {
    T* g = gates_act + r * 4 * hidden;
    const int64_t s = r * hidden;
    layer_forward_row(g, g + hidden, g + 2 * hidden, g + 3 * hidden, c_state + s, h_state + s, h_prev_out + s,
                      c_out + s, h_out + s, hidden);
  }
}

// One row of a backward step: the gradient arriving at h is the one carried back along the state plus the one of
// this step's output (when the output reached the loss); the gradient of c is carried in place (in: of c, out:
// of c_prev).
template <typename T, bool kHasGradOutput>
TL_HOST_DEVICE void layer_backward_row(const T* __restrict__ grad_h, const T* __restrict__ grad_output,
                                       T* __restrict__ grad_c, const T* __restrict__ act, const T* __restrict__ c_prev,
                                       const T* __restrict__ c, T* __restrict__ d_gates, int64_t hidden) {
  for (int64_t j = 0; j < hidden; ++j) {
    const T gh = kHasGradOutput ? grad_h[j] + grad_output[j] : grad_h[j];
    cell_backward_unit(gh, grad_c[j], act[j], act[hidden + j], act[2 * hidden + j], act[3 * hidden + j], c_prev[j],
                       c[j], &d_gates[j], &d_gates[hidden + j], &d_gates[2 * hidden + j], &d_gates[3 * hidden + j],
                       &grad_c[j]);
  }
}

// Rows below `continuing` started this step from the previous step's cell state (c_prev_continuing), the others
// from c0 (c_prev_initial); both are indexed by row.
template <typename T>
TL_HOST_DEVICE void layer_backward_rows(const T* grad_h, const T* grad_output, T* grad_c, const T* act, const T* c_prev_continuing,
                         const T* c_prev_initial, int64_t continuing, const T* c, T* d_gates, int64_t rows,
                         int64_t hidden) {
  for (int64_t r = 0; r < rows; ++r) {
    const int64_t s = r * hidden;
    const T* c_prev = (r < continuing ? c_prev_continuing : c_prev_initial) + s;
    if (grad_output != nullptr) {
      layer_backward_row<T, true>(grad_h + s, grad_output + s, grad_c + s, act + 4 * s, c_prev, c + s,
                                  d_gates + 4 * s, hidden);
    } else {
      layer_backward_row<T, false>(grad_h + s, nullptr, grad_c + s, act + 4 * s, c_prev, c + s, d_gates + 4 * s,
                                   hidden);
    }
  }
}

TL_CPU_CLONES void layer_forward_rows_float(float* gates_act, float* c_state, float* h_state, float* h_prev_out,
                                            float* c_out, float* h_out, int64_t rows, int64_t hidden) {
  layer_forward_rows<float>(gates_act, c_state, h_state, h_prev_out, c_out, h_out, rows, hidden);
}

TL_CPU_CLONES void layer_backward_rows_float(const float* grad_h, const float* grad_output, float* grad_c,
                                             const float* act, const float* c_prev_continuing,
                                             const float* c_prev_initial, int64_t continuing, const float* c,
                                             float* d_gates, int64_t rows, int64_t hidden) {
  layer_backward_rows<float>(grad_h, grad_output, grad_c, act, c_prev_continuing, c_prev_initial, continuing, c,
                             d_gates, rows, hidden);
}

// Hidden units per parallel chunk of a layer step: far below the cell op's grain, because in the layer the
// threads are already awake (the step's GEMM has just used them), so even small steps are worth splitting.
// Measured with FusedLSTM fwd+bwd on 2 cores against grains of 256 to 16384 units: 512-1024 was best; against
// 16384 it is about 10 % faster on the tutorial shape and 20 % on the IMDB-like one (whose active batch shrinks).
constexpr int64_t kLayerGrainUnits = 1024;

int64_t layer_grain_rows(int64_t hidden) {
  return std::max<int64_t>(1, kLayerGrainUnits / std::max<int64_t>(hidden, 1));
}

// The CPU's step kernels for layer.h: rows split into parallel chunks.
struct CpuLayerCell {
  template <typename T>
  static void forward_step(T* gates_act, T* c_state, T* h_state, T* h_prev_out, T* c_out, T* h_out, int64_t rows,
                           int64_t hidden) {
    at::parallel_for(0, rows, layer_grain_rows(hidden), [&](int64_t begin, int64_t end) {
      const int64_t g = begin * 4 * hidden, s = begin * hidden;
      if constexpr (std::is_same_v<T, float>) {
        layer_forward_rows_float(gates_act + g, c_state + s, h_state + s, h_prev_out + s, c_out + s, h_out + s,
                                 end - begin, hidden);
      } else {
        layer_forward_rows<T>(gates_act + g, c_state + s, h_state + s, h_prev_out + s, c_out + s, h_out + s,
                              end - begin, hidden);
      }
    });
  }

  template <typename T>
  static void backward_step(const T* grad_h, const T* grad_output, T* grad_c, const T* act,
                            const T* c_prev_continuing, const T* c_prev_initial, int64_t continuing, const T* c,
                            T* d_gates, int64_t rows, int64_t hidden) {
    at::parallel_for(0, rows, layer_grain_rows(hidden), [&](int64_t begin, int64_t end) {
      const int64_t g = begin * 4 * hidden, s = begin * hidden;
      // Row indices stay absolute for the c_prev choice: shift both sources and the split point together.
      const T* grad_output_chunk = grad_output ? grad_output + s : nullptr;
      const int64_t continuing_chunk = std::clamp<int64_t>(continuing - begin, 0, end - begin);
      if constexpr (std::is_same_v<T, float>) {
        layer_backward_rows_float(grad_h + s, grad_output_chunk, grad_c + s, act + g, c_prev_continuing + s,
                                  c_prev_initial + s, continuing_chunk, c + s, d_gates + g, end - begin, hidden);
      } else {
        layer_backward_rows<T>(grad_h + s, grad_output_chunk, grad_c + s, act + g, c_prev_continuing + s,
                               c_prev_initial + s, continuing_chunk, c + s, d_gates + g, end - begin, hidden);
      }
    });
  }
};

}  // namespace

template <typename T>
void cell_forward_cpu(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t batch, int64_t hidden) {
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t begin, int64_t end) {
    const int64_t g = begin * 4 * hidden, s = begin * hidden;
    forward_rows_any<T>(gates + g, c_prev + s, act + g, c + s, h + s, end - begin, hidden);
  });
}

template <typename T>
void cell_backward_cpu(const T* grad_h, const T* grad_c, const T* act, const T* c_prev, const T* c, T* d_gates,
                       T* d_c_prev, int64_t batch, int64_t hidden) {
  at::parallel_for(0, batch, grain_rows(hidden), [&](int64_t begin, int64_t end) {
    const int64_t g = begin * 4 * hidden, s = begin * hidden;
    backward_rows_any<T>(grad_h + s, grad_c + s, act + g, c_prev + s, c + s, d_gates + g, d_c_prev + s,
                         end - begin, hidden);
  });
}

template void cell_forward_cpu<float>(const float*, const float*, float*, float*, float*, int64_t, int64_t);
template void cell_forward_cpu<double>(const double*, const double*, double*, double*, double*, int64_t, int64_t);
template void cell_backward_cpu<float>(const float*, const float*, const float*, const float*, const float*, float*,
                                       float*, int64_t, int64_t);
template void cell_backward_cpu<double>(const double*, const double*, const double*, const double*, const double*,
                                        double*, double*, int64_t, int64_t);

const char* cpu_kernel_isa() {
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__)
  __builtin_cpu_init();
  if (__builtin_cpu_supports("x86-64-v4")) return "avx512";
  if (__builtin_cpu_supports("x86-64-v3")) return "avx2";
#endif
  return "baseline";
}

namespace {

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward_cpu(const at::Tensor& gates,
                                                                     const at::Tensor& c_prev) {
  check_cell_forward(gates, c_prev);
  const auto gates_c = gates.contiguous();
  const auto c_prev_c = c_prev.contiguous();
  auto act = at::empty_like(gates_c);
  auto c = at::empty_like(c_prev_c);
  auto h = at::empty_like(c_prev_c);
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_cell_forward_cpu", [&] {
    cell_forward_cpu<scalar_t>(gates_c.const_data_ptr<scalar_t>(), c_prev_c.const_data_ptr<scalar_t>(),
                               act.mutable_data_ptr<scalar_t>(), c.mutable_data_ptr<scalar_t>(),
                               h.mutable_data_ptr<scalar_t>(), c.size(0), c.size(1));
  });
  return {h, c, act};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_backward_cpu(const c10::optional<at::Tensor>& grad_h,
                                                          const c10::optional<at::Tensor>& grad_c,
                                                          const at::Tensor& c_prev, const at::Tensor& c,
                                                          const at::Tensor& gates_act) {
  check_cell_backward(grad_h, grad_c, c_prev, c, gates_act);
  // A missing gradient is zero: autograd passes None for an output that did not reach the loss.
  const auto grad_h_c = grad_h.has_value() ? grad_h->contiguous() : at::zeros_like(c);
  const auto grad_c_c = grad_c.has_value() ? grad_c->contiguous() : at::zeros_like(c);
  const auto c_prev_c = c_prev.contiguous();
  const auto c_c = c.contiguous();
  const auto act_c = gates_act.contiguous();
  auto d_gates = at::empty_like(act_c);
  auto d_c_prev = at::empty_like(c_c);
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "lstm_cell_backward_cpu", [&] {
    cell_backward_cpu<scalar_t>(grad_h_c.const_data_ptr<scalar_t>(), grad_c_c.const_data_ptr<scalar_t>(),
                                act_c.const_data_ptr<scalar_t>(), c_prev_c.const_data_ptr<scalar_t>(),
                                c_c.const_data_ptr<scalar_t>(), d_gates.mutable_data_ptr<scalar_t>(),
                                d_c_prev.mutable_data_ptr<scalar_t>(), c_c.size(0), c_c.size(1));
  });
  return {d_gates, d_c_prev};
}

}  // namespace
}  // namespace tl_core

// One schema per op for every device; each device registers its kernel below (CPU) or in cuda/lstm.cu.
TORCH_LIBRARY(tl_core, m) {
  m.def("lstm_cell_forward(Tensor gates, Tensor c_prev) -> (Tensor h, Tensor c, Tensor gates_act)");
  m.def(
      "lstm_cell_backward(Tensor? grad_h, Tensor? grad_c, Tensor c_prev, Tensor c, Tensor gates_act)"
      " -> (Tensor d_gates, Tensor d_c_prev)");
  // A whole layer, one direction, over a packed sequence (layer.h): input (tokens, I), batch_sizes (T) on the CPU.
  m.def(
      "lstm_layer_forward(Tensor input, Tensor batch_sizes, Tensor h0, Tensor c0, Tensor w_ih, Tensor w_hh,"
      " Tensor? b_ih, Tensor? b_hh, bool reverse)"
      " -> (Tensor output, Tensor h_n, Tensor c_n, Tensor gates_act, Tensor cells, Tensor hidden_prev)");
  m.def(
      "lstm_layer_backward(Tensor? grad_output, Tensor? grad_h_n, Tensor? grad_c_n, Tensor input,"
      " Tensor batch_sizes, Tensor c0, Tensor w_ih, Tensor w_hh, Tensor gates_act, Tensor cells,"
      " Tensor hidden_prev, bool reverse)"
      " -> (Tensor grad_input, Tensor grad_h0, Tensor grad_c0, Tensor grad_w_ih, Tensor grad_w_hh,"
      " Tensor grad_bias)");
}

TORCH_LIBRARY_IMPL(tl_core, CPU, m) {
  m.impl("lstm_cell_forward", &tl_core::lstm_cell_forward_cpu);
  m.impl("lstm_cell_backward", &tl_core::lstm_cell_backward_cpu);
  m.impl("lstm_layer_forward", &tl_core::layer_forward<tl_core::CpuLayerCell>);
  m.impl("lstm_layer_backward", &tl_core::layer_backward<tl_core::CpuLayerCell>);
}

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tl_core's fused LSTM kernels. Importing this module registers the torch.ops.tl_core ops.";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("cpu_kernel_isa", &tl_core::cpu_kernel_isa,
        "Instruction set the CPU kernels use on this machine: avx512, avx2 or baseline.");
}
