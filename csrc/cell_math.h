// The LSTM cell's elementwise math, shared by the CPU kernels (lstm.cpp) and the CUDA kernels (cuda/lstm.cu),
// so that both devices compute exactly the same formulas. Introduced in notebooks/03_fused_lstm.ipynb.
//
// Gate order is PyTorch's: the 4H pre-activations of one row are [i | f | g | o].
//   i = sigmoid(a_i)  f = sigmoid(a_f)  g = tanh(a_g)  o = sigmoid(a_o)
//   c = f * c_prev + i * g            h = o * tanh(c)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define TL_HOST_DEVICE __host__ __device__ __forceinline__
#else
#define TL_HOST_DEVICE inline __attribute__((always_inline))
#endif

namespace tl_core {

#if !defined(__CUDA_ARCH__)
// exp for float on the CPU without a library call, so that the compiler can vectorize the loops that use it
// (a call to expf blocks vectorization). Cephes' expf: Cody-Waite range reduction and a degree-5 polynomial,
// within 2 ulp of expf on the clamped range. The clamp keeps 2^n a normal float; sigmoid and tanh are
// saturated long before it matters. NaN passes through (every comparison with NaN is false).
TL_HOST_DEVICE float exp_vectorizable(float x) {
  x = x > 88.0f ? 88.0f : x;
  x = x < -87.0f ? -87.0f : x;
  // n = round(x / ln 2), by the add-and-subtract trick (no floor call, so it vectorizes on plain SSE2 too).
  const float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  x = x - n * 0.693359375f;
  x = x - n * -2.12194440e-4f;
  float p = 1.9875691500e-4f;
  p = p * x + 1.3981999507e-3f;
  p = p * x + 8.3334519073e-3f;
  p = p * x + 4.1665795894e-2f;
  p = p * x + 1.6666665459e-1f;
  p = p * x + 5.0000001201e-1f;
  p = p * x * x + x + 1.0f;
  const int32_t bits = (static_cast<int32_t>(n) + 127) << 23;
  float scale;
  std::memcpy(&scale, &bits, sizeof(scale));
  return p * scale;
}
#endif

template <typename T>
TL_HOST_DEVICE T exp_fast(T x) {
#if defined(__CUDA_ARCH__)
  return ::exp(x);
#else
  return std::exp(x);
#endif
}

template <>
TL_HOST_DEVICE float exp_fast<float>(float x) {
#if defined(__CUDA_ARCH__)
  return ::expf(x);
#else
  return exp_vectorizable(x);
#endif
}

template <typename T>
TL_HOST_DEVICE T sigmoid(T x) {
  return T(1) / (T(1) + exp_fast<T>(-x));
}

// tanh(x) = 2 sigmoid(2x) - 1, written with one exp of a non-positive argument so that it never overflows.
template <typename T>
TL_HOST_DEVICE T tanh_fast(T x) {
  const T a = x < T(0) ? -x : x;
  const T e = exp_fast<T>(T(-2) * a);
  const T t = (T(1) - e) / (T(1) + e);
  return x < T(0) ? -t : t;
}

// Forward of one hidden unit. Reads the four pre-activations, writes the activated gates (what backward needs),
// the new cell state and the new hidden state.
template <typename T>
TL_HOST_DEVICE void cell_forward_unit(T a_i, T a_f, T a_g, T a_o, T c_prev, T* act_i, T* act_f, T* act_g,
                                      T* act_o, T* c_out, T* h_out) {
  const T i = sigmoid(a_i);
  const T f = sigmoid(a_f);
  const T g = tanh_fast(a_g);
  const T o = sigmoid(a_o);
  const T c = f * c_prev + i * g;
  *act_i = i;
  *act_f = f;
  *act_g = g;
  *act_o = o;
  *c_out = c;
  *h_out = o * tanh_fast(c);
}

// Backward of one hidden unit, from the activated gates, c_prev and c: gradients of the four pre-activations
// and of c_prev. grad_h and grad_c are the gradients arriving at h and c (zero where they do not exist).
template <typename T>
TL_HOST_DEVICE void cell_backward_unit(T grad_h, T grad_c, T i, T f, T g, T o, T c_prev, T c, T* d_a_i,
                                       T* d_a_f, T* d_a_g, T* d_a_o, T* d_c_prev) {
  const T tanh_c = tanh_fast(c);
  const T d_c = grad_c + grad_h * o * (T(1) - tanh_c * tanh_c);
  *d_a_i = d_c * g * i * (T(1) - i);
  *d_a_f = d_c * c_prev * f * (T(1) - f);
  *d_a_g = d_c * i * (T(1) - g * g);
  *d_a_o = grad_h * tanh_c * o * (T(1) - o);
  *d_c_prev = d_c * f;
}

}  // namespace tl_core
