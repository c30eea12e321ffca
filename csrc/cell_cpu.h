// CPU loops of the fused LSTM cell over a batch of rows, for the cell op and the layer ops in lstm.cpp.
#pragma once

#include <cstdint>

namespace tl_core {

// gates (B, 4H) pre-activations -> act (B, 4H) activated gates, c (B, H), h (B, H). Parallel over rows.
template <typename T>
void cell_forward_cpu(const T* gates, const T* c_prev, T* act, T* c, T* h, int64_t batch, int64_t hidden);

// grad_h, grad_c (B, H), act (B, 4H), c_prev, c (B, H) -> d_gates (B, 4H), d_c_prev (B, H). Parallel over rows.
template <typename T>
void cell_backward_cpu(const T* grad_h, const T* grad_c, const T* act, const T* c_prev, const T* c, T* d_gates,
                       T* d_c_prev, int64_t batch, int64_t hidden);

// Which instruction set the float loops run with on this CPU: "avx512", "avx2" or "baseline".
const char* cpu_kernel_isa();

}  // namespace tl_core
