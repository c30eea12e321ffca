// CUDA kernels of the fused LSTM ops and their registration. The schemas are declared once, in ../lstm.cpp;
// the per-unit math is shared with the CPU in ../cell_math.h. Introduced in notebooks/03_fused_lstm.ipynb.
#include <ATen/Dispatch.h>
#include <ATen/cuda/CUDAContext.h>
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <torch/library.h>

#include "../cell_math.h"
#include "../layer.h"
#include "../lstm_checks.h"

namespace tl_core {
namespace {

constexpr int kThreads = 256;

int blocks_for(int64_t units) {
  const int64_t max_blocks = static_cast<int64_t>(at::cuda::getCurrentDeviceProperties()->multiProcessorCount) * 32;
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>((units + kThreads - 1) / kThreads, max_blocks)));
}

// Runs body(u, b, j) for every hidden unit u = b * hidden + j of a (rows, hidden) state: one thread per unit,
// grid-stride, so any grid size covers any batch.
template <typename Body>
__device__ __forceinline__ void for_each_unit(int64_t rows, int64_t hidden, Body body) {
  const int64_t units = rows * hidden;
  for (int64_t u = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; u < units;
       u += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t b = u / hidden;
    body(u, b, u - b * hidden);
  }
}

template <typename T>
__global__ void cell_forward_kernel(const T* __restrict__ gates, const T* __restrict__ c_prev, T* __restrict__ act,
                                    T* __restrict__ c, T* __restrict__ h, int64_t batch, int64_t hidden) {
  for_each_unit(batch, hidden, [&](int64_t u, int64_t b, int64_t j) {
    const T* a = gates + b * 4 * hidden;
    T* w = act + b * 4 * hidden;
    cell_forward_unit(a[j], a[hidden + j], a[2 * hidden + j], a[3 * hidden + j], c_prev[u], &w[j], &w[hidden + j],
                      &w[2 * hidden + j], &w[3 * hidden + j], &c[u], &h[u]);
  });
}

template <typename T>
__global__ void cell_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ grad_c,
                                     const T* __restrict__ act, const T* __restrict__ c_prev,
                                     const T* __restrict__ c, T* __restrict__ d_gates, T* __restrict__ d_c_prev,
                                     int64_t batch, int64_t hidden) {
  for_each_unit(batch, hidden, [&](int64_t u, int64_t b, int64_t j) {
    const T* w = act + b * 4 * hidden;
    T* d = d_gates + b * 4 * hidden;
    cell_backward_unit(grad_h ? grad_h[u] : T(0), grad_c ? grad_c[u] : T(0), w[j], w[hidden + j],
                       w[2 * hidden + j], w[3 * hidden + j], c_prev[u], c[u], &d[j], &d[hidden + j],
                       &d[2 * hidden + j], &d[3 * hidden + j], &d_c_prev[u]);
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> lstm_cell_forward_cuda(const at::Tensor& gates,
                                                                      const at::Tensor& c_prev) {
  check_cell_forward(gates, c_prev);
  const c10::cuda::CUDAGuard device_guard(gates.device());
  const auto gates_c = gates.contiguous();
  const auto c_prev_c = c_prev.contiguous();
  auto act = at::empty_like(gates_c);
  auto c = at::empty_like(c_prev_c);
  auto h = at::empty_like(c_prev_c);
  const int64_t batch = c.size(0), hidden = c.size(1);
  if (batch * hidden == 0) return {h, c, act};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(gates.scalar_type(), "lstm_cell_forward_cuda", [&] {
    cell_forward_kernel<scalar_t><<<blocks_for(batch * hidden), kThreads, 0, stream>>>(
        gates_c.const_data_ptr<scalar_t>(), c_prev_c.const_data_ptr<scalar_t>(), act.mutable_data_ptr<scalar_t>(),
        c.mutable_data_ptr<scalar_t>(), h.mutable_data_ptr<scalar_t>(), batch, hidden);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {h, c, act};
}

std::tuple<at::Tensor, at::Tensor> lstm_cell_backward_cuda(const c10::optional<at::Tensor>& grad_h,
                                                           const c10::optional<at::Tensor>& grad_c,
                                                           const at::Tensor& c_prev, const at::Tensor& c,
                                                           const at::Tensor& gates_act) {
  check_cell_backward(grad_h, grad_c, c_prev, c, gates_act);
  const c10::cuda::CUDAGuard device_guard(c.device());
  // A missing gradient is read as zero inside the kernel (a null pointer), so none is materialised.
  const auto grad_h_c = grad_h.has_value() ? grad_h->contiguous() : at::Tensor();
  const auto grad_c_c = grad_c.has_value() ? grad_c->contiguous() : at::Tensor();
  const auto c_prev_c = c_prev.contiguous();
  const auto c_c = c.contiguous();
  const auto act_c = gates_act.contiguous();
  auto d_gates = at::empty_like(act_c);
  auto d_c_prev = at::empty_like(c_c);
  const int64_t batch = c_c.size(0), hidden = c_c.size(1);
  if (batch * hidden == 0) return {d_gates, d_c_prev};
  const auto stream = at::cuda::getCurrentCUDAStream();
  AT_DISPATCH_FLOATING_TYPES(c.scalar_type(), "lstm_cell_backward_cuda", [&] {
    cell_backward_kernel<scalar_t><<<blocks_for(batch * hidden), kThreads, 0, stream>>>(
        grad_h_c.defined() ? grad_h_c.const_data_ptr<scalar_t>() : nullptr,
        grad_c_c.defined() ? grad_c_c.const_data_ptr<scalar_t>() : nullptr, act_c.const_data_ptr<scalar_t>(),
        c_prev_c.const_data_ptr<scalar_t>(), c_c.const_data_ptr<scalar_t>(), d_gates.mutable_data_ptr<scalar_t>(),
        d_c_prev.mutable_data_ptr<scalar_t>(), batch, hidden);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  });
  return {d_gates, d_c_prev};
}

// ---- the layer's step kernels (../layer.h): one thread per hidden unit of the active rows --------------------

// Forward step, in place on the layer's buffers: pre-activations -> activated gates, the state updated, h and c
// also written into the output and the saved cell states, and the state the step started from into h_prev_out.
template <typename T>
__global__ void layer_forward_kernel(T* __restrict__ gates_act, T* __restrict__ c_state, T* __restrict__ h_state,
                                     T* __restrict__ h_prev_out, T* __restrict__ c_out, T* __restrict__ h_out,
                                     int64_t rows, int64_t hidden) {
  for_each_unit(rows, hidden, [&](int64_t u, int64_t b, int64_t j) {
    T* g = gates_act + b * 4 * hidden;
    T i, f, gg, o, c, h;
    h_prev_out[u] = h_state[u];
    cell_forward_unit(g[j], g[hidden + j], g[2 * hidden + j], g[3 * hidden + j], c_state[u], &i, &f, &gg, &o, &c,
                      &h);
    g[j] = i;
    g[hidden + j] = f;
    g[2 * hidden + j] = gg;
    g[3 * hidden + j] = o;
    c_state[u] = c;
    c_out[u] = c;
    h_state[u] = h;
    h_out[u] = h;
  });
}

// Backward step: rows below `continuing` started from the previous step's cell state, the others from c0. The
// gradient of c is carried in place (in: of c, out: of c_prev); grad_output may be null (no output gradient).
template <typename T>
__global__ void layer_backward_kernel(const T* __restrict__ grad_h, const T* __restrict__ grad_output,
                                      T* __restrict__ grad_c, const T* __restrict__ act,
                                      const T* __restrict__ c_prev_continuing, const T* __restrict__ c_prev_initial,
                                      int64_t continuing, const T* __restrict__ c, T* __restrict__ d_gates,
                                      int64_t rows, int64_t hidden) {
  for_each_unit(rows, hidden, [&](int64_t u, int64_t b, int64_t j) {
    const T* w = act + b * 4 * hidden;
    T* d = d_gates + b * 4 * hidden;
    const T c_prev = b < continuing ? c_prev_continuing[u] : c_prev_initial[u];
    const T gh = grad_output ? grad_h[u] + grad_output[u] : grad_h[u];
    cell_backward_unit(gh, grad_c[u], w[j], w[hidden + j], w[2 * hidden + j], w[3 * hidden + j], c_prev, c[u],
                       &d[j], &d[hidden + j], &d[2 * hidden + j], &d[3 * hidden + j], &grad_c[u]);
  });
}

// The CUDA step kernels for layer.h, launched on PyTorch's current stream (the GEMMs between them run there too,
// so the loop over time never waits for the GPU).
struct CudaLayerCell {
  template <typename T>
  using RecurrentGemm = AtenRecurrentGemm;  // cuBLAS on the current stream

  // The layer's buffers: PyTorch's caching CUDA allocator already reuses them.
  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return at::empty(sizes, options);
  }
  static at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& bias) {
    auto gates = at::empty({x.size(0), w_ih.size(0)}, x.options());
    aten_input_projection(x, w_ih, bias, gates);
    return gates;
  }
  static at::Tensor input_gradient(const at::Tensor& d_gates, const at::Tensor& w_ih) {
    auto grad_input = at::empty({d_gates.size(0), w_ih.size(1)}, d_gates.options());
    aten_input_gradient(d_gates, w_ih, grad_input);
    return grad_input;
  }

  // The whole batch is one window: each step is parallel on the device, the loop over steps stays on the host.
  template <typename T, typename F>
  static void for_row_windows(const PackedSteps& steps, int64_t /*hidden*/, bool /*active_late*/, const F& fn) {
    FixedWindow window{0, steps.rows()};
    fn(window);
  }

  template <typename T>
  static void forward_step(T* gates_act, T* c_state, T* h_state, T* h_prev_out, T* c_out, T* h_out, int64_t rows,
                           int64_t hidden) {
    layer_forward_kernel<T><<<blocks_for(rows * hidden), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        gates_act, c_state, h_state, h_prev_out, c_out, h_out, rows, hidden);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }

  template <typename T>
  static void backward_step(const T* grad_h, const T* grad_output, T* grad_c, const T* act,
                            const T* c_prev_continuing, const T* c_prev_initial, int64_t continuing, const T* c,
                            T* d_gates, int64_t rows, int64_t hidden) {
    layer_backward_kernel<T><<<blocks_for(rows * hidden), kThreads, 0, at::cuda::getCurrentCUDAStream()>>>(
        grad_h, grad_output, grad_c, act, c_prev_continuing, c_prev_initial, continuing, c, d_gates, rows, hidden);
    C10_CUDA_KERNEL_LAUNCH_CHECK();
  }
};

}  // namespace
}  // namespace tl_core

TORCH_LIBRARY_IMPL(tl_core, CUDA, m) {
  m.impl("lstm_cell_forward", &tl_core::lstm_cell_forward_cuda);
  m.impl("lstm_cell_backward", &tl_core::lstm_cell_backward_cuda);
  m.impl("lstm_layer_forward", &tl_core::layer_forward<tl_core::CudaLayerCell>);
  m.impl("lstm_layer_backward", &tl_core::layer_backward<tl_core::CudaLayerCell>);
}
