// The fused LSTM ops: their schemas (one TORCH_LIBRARY for every device), the CPU kernels and their
// registration, and the Python module tl_core._C. The CUDA kernels are registered in cuda/lstm.cu.
// Introduced in notebooks/03_fused_lstm.ipynb.
#include <ATen/Dispatch.h>
#include <ATen/Parallel.h>
#include <ATen/core/dispatch/Dispatcher.h>
#include <torch/extension.h>

#include <ATen/EmptyTensor.h>
#include <c10/core/impl/alloc_cpu.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <climits>
#include <map>
#include <memory>
#include <mutex>
#include <thread>

#include "cell_cpu.h"
#include "cell_math.h"
#include "layer.h"
#include "lstm_checks.h"

// MKL's packed GEMM (cblas_sgemm_pack / cblas_sgemm_compute, LP64 ints): W_hh is laid out for the GEMM kernel
// once per layer call instead of once per step, which the small per-step GEMMs of a recurrence pay for dearly
// (measured: 32x128 @ 128x512 on one core, 64 -> 83 GFLOP/s; 32x1150 @ 1150x4600, 47 -> 63). PyTorch's x86 builds
// link MKL into libtorch_cpu and export these; the references are weak, so where a build has no MKL they are null
// and the layer uses ATen's GEMM.
#if defined(__GNUC__) && defined(__linux__)
extern "C" {
size_t cblas_sgemm_pack_get_size(int identifier, int m, int n, int k) __attribute__((weak));
void cblas_sgemm_pack(int layout, int identifier, int trans, int m, int n, int k, float alpha, const float* src,
                      int ld, float* dest) __attribute__((weak));
void cblas_sgemm_compute(int layout, int transa, int transb, int m, int n, int k, const float* a, int lda,
                         const float* b, int ldb, float beta, float* c, int ldc) __attribute__((weak));
}
#define TL_HAVE_WEAK_MKL 1
#else
#define TL_HAVE_WEAK_MKL 0
#endif

namespace tl_core {

bool packed_gemm_available() {
#if TL_HAVE_WEAK_MKL
  return cblas_sgemm_pack_get_size != nullptr && cblas_sgemm_pack != nullptr && cblas_sgemm_compute != nullptr;
#else
  return false;
#endif
}

namespace {

// The layer's own large buffers (the output, the saved cell and hidden states, the gates' gradient, and the gates
// where ATen computes them: tens of MB each at training sizes) come from a cache of blocks that return to it when
// their tensor dies, so a training loop does not take fresh pages from the system for them on every call: glibc
// serves blocks above 32 MB (and smaller ones once it trims its heap) with new pages, which the kernel zeroes on
// first touch. Measured side by side, FusedLSTM fwd+bwd with freed memory kept in the process (GLIBC_TUNABLES) vs
// not: tutorial 78 -> 68 ms, long 394 -> 344 ms, lm 1,266 -> 1,094 ms. At most `buffer_cache_limit` bytes wait in
// the cache (tl_core._C.set_buffer_cache_limit; 0: every block goes back to the system at once).
std::atomic<int64_t> buffer_cache_limit{int64_t{1} << 30};

class BufferCache final : public c10::Allocator {
 public:
  static BufferCache& instance() {
    static auto* cache = new BufferCache();  // never destroyed: tensors may die after static destructors ran
    return *cache;
  }

  c10::DataPtr allocate(size_t bytes) override {
    const c10::Device cpu(c10::DeviceType::CPU);
    if (bytes == 0) return {nullptr, nullptr, &c10::detail::deleteNothing, cpu};
    size_t size = (bytes + kPage - 1) / kPage * kPage;
    void* data = nullptr;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      // The smallest cached block that fits, unless it would waste more than a quarter of itself.
      const auto found = free_.lower_bound(size);
      if (found != free_.end() && found->first - size <= found->first / 4) {
        size = found->first;
        data = found->second;
        cached_bytes_ -= size;
        free_.erase(found);
      }
    }
    if (data == nullptr) data = c10::alloc_cpu(size);
    return {data, new Block{data, size}, &BufferCache::give_back, cpu};
  }

  void copy_data(void* dest, const void* src, std::size_t count) const override {
    default_copy_data(dest, src, count);
  }

  // Hands every cached block back to the system; returns how many bytes that was.
  int64_t release() {
    std::multimap<size_t, void*> blocks;
    {
      const std::lock_guard<std::mutex> lock(mutex_);
      blocks.swap(free_);
      cached_bytes_ = 0;
    }
    int64_t bytes = 0;
    for (const auto& [size, data] : blocks) {
      bytes += static_cast<int64_t>(size);
      c10::free_cpu(data);
    }
    return bytes;
  }

  int64_t cached_bytes() {
    const std::lock_guard<std::mutex> lock(mutex_);
    return static_cast<int64_t>(cached_bytes_);
  }

 private:
  static constexpr size_t kPage = 4096;
  struct Block {
    void* data;
    size_t size;
  };

  static void give_back(void* context) {
    const std::unique_ptr<Block> block(static_cast<Block*>(context));
    auto& cache = instance();
    {
      const std::lock_guard<std::mutex> lock(cache.mutex_);
      if (static_cast<int64_t>(cache.cached_bytes_ + block->size) <= buffer_cache_limit.load()) {
        cache.free_.emplace(block->size, block->data);
        cache.cached_bytes_ += block->size;
        return;
      }
    }
    c10::free_cpu(block->data);
  }

  std::mutex mutex_;
  std::multimap<size_t, void*> free_;  // cached blocks by size
  size_t cached_bytes_ = 0;
};

at::Tensor cached_empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
  return at::detail::empty_generic(sizes, &BufferCache::instance(), c10::DispatchKeySet(c10::DispatchKey::CPU),
                                   c10::typeMetaToScalarType(options.dtype()), std::nullopt);
}

// The recurrent GEMM of float layers (tl_core._C.set_recurrent_gemm, for tests and side-by-side timings of the
// paths): oneDNN's matmul (kOneDnn), MKL's packed GEMM (kMklPacked), ATen's GEMM (kAten), or by size (kAuto,
// the default): oneDNN for a layer whose W_hh is above the window limit (windows_per_thread below), where its
// faster kernel pays for the per-call overhead of going through the dispatcher, MKL's packed GEMM below it
// (measured side by side, FusedLSTM fwd+bwd / nn.LSTM: lm 1.16 with oneDNN against 1.38 with MKL; small 1.87
// against 0.98, tutorial 0.87 against 0.82). A path this build lacks falls back to the next one.
enum RecurrentGemmKind : int { kAten = 0, kMklPacked = 1, kOneDnn = 2, kAuto = 3 };
// Their names in Python (set_recurrent_gemm, recurrent_gemm_in_use), indexed by the kind.
constexpr const char* kRecurrentGemmNames[] = {"aten", "mkl_packed", "onednn", "auto"};
std::atomic<int> recurrent_gemm_kind{kAuto};

// Above this size of W_hh (bytes) the layer runs the whole batch as one window and lets each step's GEMM and cell
// use every thread, as oneDNN does: W_hh no longer fits in a core's cache, so one window per thread would stream
// all of it from memory once per thread and step, where a GEMM split by columns streams each part once.
// tl_core._C.set_window_weight_limit moves it (tests).
std::atomic<int64_t> window_weight_limit{4 << 20};

// Whether a layer of this hidden size runs one window per thread (true) or the whole batch per step (false).
template <typename T>
bool windows_per_thread(int64_t hidden) {
  return 4 * hidden * hidden * static_cast<int64_t>(sizeof(T)) <= window_weight_limit.load();
}

// oneDNN's fp32 inner product as PyTorch registers it (mkldnn::_linear_pointwise, IEEE float32 unless the user
// lowered torch.backends.mkldnn's matmul precision): Y = X Wᵀ with W a oneDNN tensor. Measured here, one step of
// the language model's layer (64 x 1150 @ 1150 x 4600, 2 threads): 191 GFLOP/s against MKL's 130, as oneDNN
// uses AVX-512 on this AMD CPU. Looked up once at run time; null where the build has no such op.
const c10::OperatorHandle* onednn_linear_op() {
  static const std::optional<c10::OperatorHandle> op =
      c10::Dispatcher::singleton().findSchema({"mkldnn::_linear_pointwise", ""});
  return op.has_value() ? &*op : nullptr;
}

bool onednn_gemm_available() { return at::hasMKLDNN() && onednn_linear_op() != nullptr; }

// Y = X Wᵀ (+ bias, where defined) through oneDNN; W is a oneDNN tensor (to_mkldnn), X a dense float matrix.
at::Tensor onednn_linear(const at::Tensor& x, const at::Tensor& onednn_weight, const at::Tensor& bias) {
  torch::jit::Stack stack{x, onednn_weight, bias.defined() ? c10::IValue(bias) : c10::IValue(), c10::IValue("none"),
                          c10::IValue(c10::List<std::optional<at::Scalar>>()), c10::IValue()};
  onednn_linear_op()->callBoxed(&stack);
  return stack[0].toTensor();
}

// The whole-sequence GEMMs with W_ih of float layers (the input projection, the input's gradient): oneDNN's,
// ATen's, or by size (kSequenceAuto, the default: oneDNN's from kOneDnnSequenceMinMacs multiply-adds up, where
// its faster kernel pays for converting W_ih and the call through the dispatcher). tl_core._C.set_sequence_gemm
// switches it (tests, side-by-side timings). Measured side by side, 2 threads: (12800 x 100) @ (100 x 512) 6.9 ms
// against MKL's 7.6; (12800 x 512) @ (512 x 100) 7.7 against 10.1; (4480 x 4600) @ (4600 x 400) 78 against 88;
// the `small` shape's layer (1024 tokens, 32 inputs, 64 units) fwd+bwd 2.50 ms with oneDNN's against 2.14.
enum SequenceGemmKind : int { kSequenceAten = 0, kSequenceOneDnn = 1, kSequenceAuto = 2 };
constexpr const char* kSequenceGemmNames[] = {"aten", "onednn", "auto"};
constexpr int64_t kOneDnnSequenceMinMacs = int64_t{1} << 26;
std::atomic<int> sequence_gemm_kind{kSequenceAuto};

// The kind a float product of this many multiply-adds uses now: the chosen one, or ATen's where the build has no
// oneDNN.
int sequence_gemm_in_use(int64_t multiply_adds) {
  int kind = sequence_gemm_kind.load();
  if (kind == kSequenceAuto) kind = multiply_adds >= kOneDnnSequenceMinMacs ? kSequenceOneDnn : kSequenceAten;
  if (kind == kSequenceOneDnn && !onednn_gemm_available()) kind = kSequenceAten;
  return kind;
}

// Whether the (rows x inner) @ (inner x columns) product of a float layer with `x` as its left factor goes
// through oneDNN.
bool use_onednn_sequence_gemm(const at::Tensor& x, int64_t columns) {
  return x.scalar_type() == at::kFloat && x.size(0) > 0 &&
         sequence_gemm_in_use(x.size(0) * x.size(1) * columns) == kSequenceOneDnn;
}

// The kind a float layer of this hidden size uses now: the chosen one, or the next available below it.
int recurrent_gemm_in_use(int64_t hidden) {
  int kind = recurrent_gemm_kind.load();
  if (kind == kAuto) kind = windows_per_thread<float>(hidden) ? kMklPacked : kOneDnn;
  if (kind == kOneDnn && !onednn_gemm_available()) kind = kMklPacked;
  if (kind == kMklPacked && !packed_gemm_available()) kind = kAten;
  return kind;
}

// The CPU's recurrent GEMM (layer.h's interface): for float the kind in use (above), else ATen's.
template <typename T>
class CpuRecurrentGemm : public AtenRecurrentGemm {
 public:
  using AtenRecurrentGemm::AtenRecurrentGemm;
};

template <>
class CpuRecurrentGemm<float> {
 public:
  CpuRecurrentGemm(const at::Tensor& w_hh, bool forward) : aten_(w_hh, forward) {
    // Forward B = W_hhᵀ (k = H, n = 4H); backward B = W_hh (k = 4H, n = H). W_hh is (4H, H), row-major.
    const int64_t rows = w_hh.size(0), cols = w_hh.size(1);
    k_ = forward ? cols : rows;
    n_ = forward ? rows : cols;
    const int kind = recurrent_gemm_in_use(cols);
    if (kind == kOneDnn) {
      // oneDNN's layout of the (n, k) weight, made once per layer call: forward W_hh, backward W_hhᵀ.
      onednn_weight_ = (forward ? w_hh.detach() : w_hh.detach().t()).contiguous().to_mkldnn();
    }
#if TL_HAVE_WEAK_MKL
    if (kind == kMklPacked && rows <= INT_MAX / 8 && cols <= INT_MAX / 8) {
      const auto w = w_hh.detach().contiguous();
      // m only sizes the packing's blocking; the packed B serves products with any number of rows.
      const size_t bytes = cblas_sgemm_pack_get_size(kBMatrix, 64, static_cast<int>(n_), static_cast<int>(k_));
      packed_ = at::empty({static_cast<int64_t>((bytes + sizeof(float) - 1) / sizeof(float))}, w.options());
      cblas_sgemm_pack(kRowMajor, kBMatrix, forward ? kTrans : kNoTrans, 64, static_cast<int>(n_),
                       static_cast<int>(k_), 1.0f, w.const_data_ptr<float>(), static_cast<int>(cols),
                       packed_.mutable_data_ptr<float>());
    }
#endif
  }

  void apply(const at::Tensor& in, int64_t in_row, at::Tensor& out, int64_t out_row, int64_t rows,
             bool accumulate) const {
    if (onednn_weight_.defined()) {
      const auto product = onednn_linear(in.narrow(0, in_row, rows), onednn_weight_, at::Tensor());
      auto out_rows = out.narrow(0, out_row, rows);
      if (accumulate) {
        out_rows.add_(product);
      } else {
        out_rows.copy_(product);
      }
      return;
    }
#if TL_HAVE_WEAK_MKL
    if (packed_.defined()) {
      const int64_t lda = in.size(1), ldc = out.size(1);
      cblas_sgemm_compute(kRowMajor, kNoTrans, kPacked, static_cast<int>(rows), static_cast<int>(n_),
                          static_cast<int>(k_), in.const_data_ptr<float>() + in_row * lda, static_cast<int>(lda),
                          packed_.const_data_ptr<float>(), static_cast<int>(n_), accumulate ? 1.0f : 0.0f,
                          out.mutable_data_ptr<float>() + out_row * ldc, static_cast<int>(ldc));
      return;
    }
#endif
    aten_.apply(in, in_row, out, out_row, rows, accumulate);
  }

 private:
  // MKL's CBLAS enum values (mkl_cblas.h), spelled out since the header is not shipped with PyTorch.
  static constexpr int kRowMajor = 101, kNoTrans = 111, kTrans = 112, kPacked = 151, kBMatrix = 162;
  AtenRecurrentGemm aten_;
  at::Tensor onednn_weight_, packed_;
  int64_t k_ = 0, n_ = 0;
};

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

// Rows per window, at least: below this a thread's per-step GEMM is too small to be worth a window of its own.
constexpr int64_t kMinWindowRows = 4;

// The length in steps of each row of a packed batch (rows are sorted by decreasing length).
std::vector<int64_t> row_lengths(const PackedSteps& steps, int64_t batch) {
  std::vector<int64_t> length(batch + 1, 0);  // a difference array first: row r is active at steps.size(t) > r
  for (int64_t t = 0; t < steps.count(); ++t) {
    length[0] += 1;
    length[steps.size(t)] -= 1;
  }
  for (int64_t r = 1; r <= batch; ++r) length[r] += length[r - 1];
  length.pop_back();
  return length;
}

// Cuts the rows [0, batch) into `windows` consecutive windows of about equal work: a row's work is its length in
// steps (rows are sorted by decreasing length, so equal row counts would leave the first window the longest).
// `length` is row_lengths' (one per row of the batch).
std::vector<int64_t> balanced_cuts(const std::vector<int64_t>& length, int64_t windows) {
  const auto batch = static_cast<int64_t>(length.size());
  int64_t total = 0;
  for (const int64_t l : length) total += l;
  std::vector<int64_t> cuts{0};
  int64_t running = 0;
  for (int64_t r = 0; r < batch && static_cast<int64_t>(cuts.size()) < windows; ++r) {
    running += length[r];
    const int64_t window = static_cast<int64_t>(cuts.size());
    // Close the window once it holds its share of the tokens, leaving at least one row for each window after it.
    if (running * windows >= total * window && batch - (r + 1) >= windows - window) cuts.push_back(r + 1);
  }
  cuts.push_back(batch);
  return cuts;
}

// A thread takes over part of another's window only if that part has at least this many iterations left: the
// few that two threads running at the same pace leave each other at the end are not worth the hand-over.
// tl_core._C.set_take_over_iterations moves it (a very large value turns taking over off: side-by-side timings).
std::atomic<int64_t> take_over_iterations{16};

// Test hooks (tl_core._C.set_window_stall, window_take_overs): the thread running the window that holds row 0
// sleeps this long (microseconds) before each of its iterations, as if the OS had descheduled it, so the others
// must take its rows over; and how many times a thread has taken rows over.
std::atomic<int64_t> window_stall_us{0};
std::atomic<int64_t> window_take_overs{0};

// The work one pass of the recurrence has left, row by row. Iteration i of a pass runs one step; a row of length
// L is active at iterations [0, L) or, where the pass meets the row's steps in the other order (the forward pass
// of the reverse direction, the backward pass of the forward one), at [T - L, T).
class RowWork {
 public:
  RowWork(const PackedSteps& steps, bool active_late)
      : length_(row_lengths(steps, steps.rows())), count_(steps.count()), late_(active_late) {}

  // Each row's length in steps (row_lengths).
  const std::vector<int64_t>& lengths() const { return length_; }

  // Iterations the rows [begin, end) have left from iteration `from` on, in all.
  int64_t left(int64_t begin, int64_t end, int64_t from) const {
    int64_t total = 0;
    for (int64_t r = begin; r < end; ++r) total += left(r, from);
    return total;
  }

  // Where to cut the rows [begin, end) so that the tail [cut, end) holds about half the work left from `from` on;
  // -1 where either part would have fewer than kMinWindowRows rows or the tail fewer than take_over_iterations
  // iterations left.
  int64_t tail_cut(int64_t begin, int64_t end, int64_t from) const {
    const int64_t total = left(begin, end, from);
    int64_t tail = 0, cut = end;
    while (cut > begin && 2 * tail < total) tail += left(--cut, from);
    cut = std::min(cut, end - kMinWindowRows);
    if (cut - begin < kMinWindowRows || left(cut, from) < take_over_iterations.load()) return -1;
    return cut;
  }

 private:
  int64_t left(int64_t row, int64_t from) const {
    const int64_t first = late_ ? count_ - length_[row] : 0, last = late_ ? count_ : length_[row];
    return std::max<int64_t>(0, last - std::max(first, from));
  }

  std::vector<int64_t> length_;
  int64_t count_;
  bool late_;
};

// A window whose tail another thread can take over while its owner runs it (layer.h's window interface). Its
// state is one atomic word, (iterations claimed, end): the owner claims each iteration with the end it finds, and
// a thread taking the tail over moves the end down from the first iteration not yet claimed, so the two cannot
// cross. The rows change hands once the owner has finished the iteration it had claimed (their state is its
// output).
class SharedWindow {
 public:
  int64_t begin = 0, first = 0;

  // Rows [rows_begin, rows_end) from iteration `from` on. Other threads see the window from the state's store on.
  void open(int64_t rows_begin, int64_t rows_end, int64_t from) {
    begin = rows_begin;
    first = from;
    finished_.store(from, std::memory_order_relaxed);
    state_.store(pack(from, rows_end), std::memory_order_release);
  }

  int64_t claim(int64_t iteration) {
    if (begin == 0) {
      const int64_t stall = window_stall_us.load(std::memory_order_relaxed);
      if (stall > 0) std::this_thread::sleep_for(std::chrono::microseconds(stall));
    }
    uint64_t state = state_.load(std::memory_order_relaxed);
    while (!state_.compare_exchange_weak(state, pack(iteration + 1, end_of(state)), std::memory_order_acq_rel,
                                         std::memory_order_relaxed)) {
    }
    return end_of(state);
  }

  void done(int64_t iteration) { finished_.store(iteration + 1, std::memory_order_release); }

  // The work this window has left (none before it is opened).
  int64_t work_left(const RowWork& work) const {
    const uint64_t state = state_.load(std::memory_order_acquire);
    return state == 0 ? 0 : work.left(begin, end_of(state), claimed_of(state));
  }

  // Moves the tail of this window into `into` (not yet opened), from the first iteration the owner has not
  // claimed; false where too little is left to be worth it, or when `failed` says a thread has given up.
  bool take_tail(const RowWork& work, SharedWindow& into, const std::atomic<bool>& failed) {
    uint64_t state = state_.load(std::memory_order_acquire);
    for (;;) {
      if (state == 0) return false;
      const int64_t from = claimed_of(state), end = end_of(state), cut = work.tail_cut(begin, end, from);
      if (cut < 0) return false;
      if (state_.compare_exchange_weak(state, pack(from, cut), std::memory_order_acq_rel,
                                       std::memory_order_acquire)) {
        // The owner may still be running iteration from - 1 on these rows.
        while (finished_.load(std::memory_order_acquire) < from) {
          if (failed.load(std::memory_order_relaxed)) return false;
          std::this_thread::yield();
        }
        into.open(cut, end, from);
        return true;
      }
    }
  }

 private:
  static uint64_t pack(int64_t claimed, int64_t end) {
    return (static_cast<uint64_t>(claimed) << 32) | static_cast<uint64_t>(end);
  }
  static int64_t claimed_of(uint64_t state) { return static_cast<int64_t>(state >> 32); }
  static int64_t end_of(uint64_t state) { return static_cast<int64_t>(state & 0xffffffffu); }

  std::atomic<uint64_t> state_{0};  // 0: not opened (an open window's end is at least 1)
  std::atomic<int64_t> finished_{0};
};

// The CPU's policy for layer.h. Each thread takes one window of rows and runs the whole recurrence for it: one
// parallel region per layer call instead of one per step, so a thread that the OS deschedules (a shared machine)
// delays its own rows, not every step of every thread. Inside a window the per-step GEMM runs on one thread (MKL
// does not start threads inside a parallel region) and so does the cell; W_hh stays in each core's cache.
struct CpuLayerCell {
  template <typename T>
  using RecurrentGemm = CpuRecurrentGemm<T>;

  static at::Tensor empty(at::IntArrayRef sizes, const at::TensorOptions& options) {
    return cached_empty(sizes, options);
  }

  static at::Tensor input_projection(const at::Tensor& x, const at::Tensor& w_ih, const at::Tensor& bias) {
    if (use_onednn_sequence_gemm(x, w_ih.size(0))) {
      return onednn_linear(x, w_ih.detach().contiguous().to_mkldnn(), bias);
    }
    auto gates = cached_empty({x.size(0), w_ih.size(0)}, x.options());
    aten_input_projection(x, w_ih, bias, gates);
    return gates;
  }

  static at::Tensor input_gradient(const at::Tensor& d_gates, const at::Tensor& w_ih) {
    // d_gates W_ih as a linear layer: its (n, k) weight is W_ihᵀ, (I, 4H).
    if (use_onednn_sequence_gemm(d_gates, w_ih.size(1))) {
      return onednn_linear(d_gates, w_ih.detach().t().contiguous().to_mkldnn(), at::Tensor());
    }
    auto grad_input = cached_empty({d_gates.size(0), w_ih.size(1)}, d_gates.options());
    aten_input_gradient(d_gates, w_ih, grad_input);
    return grad_input;
  }

  // One window per thread, each thread running every step of its own (see SharedWindow above for the hand-over
  // of a busy thread's tail to an idle one); the whole batch as one window where that does not pay.
  template <typename T, typename F>
  static void for_row_windows(const PackedSteps& steps, int64_t hidden, bool active_late, const F& fn) {
    const int64_t batch = steps.rows();
    const int64_t windows = std::min<int64_t>(at::get_num_threads(), batch / kMinWindowRows);
    if (windows <= 1 || at::in_parallel_region() || !windows_per_thread<T>(hidden) || batch > INT32_MAX ||
        steps.count() >= INT32_MAX) {
      FixedWindow window{0, batch};
      fn(window);
      return;
    }
    const RowWork work(steps, active_late);
    const auto cuts = balanced_cuts(work.lengths(), windows);
    // Every window leaves at least kMinWindowRows rows to each part it is cut into, and a thread that finds nothing
    // worth taking stops: the windows ever opened stay below this.
    const int64_t capacity = windows + at::get_num_threads() + 2 * batch / kMinWindowRows;
    std::unique_ptr<SharedWindow[]> slots(new SharedWindow[capacity]);
    for (int64_t w = 0; w < windows; ++w) slots[w].open(cuts[w], cuts[w + 1], 0);
    std::atomic<int64_t> opened{windows};
    std::atomic<bool> failed{false};
    at::parallel_for(0, windows, 1, [&](int64_t first, int64_t last) {
      // Worker threads start with autograd's default thread state; nothing here is to be recorded.
      const at::AutoDispatchBelowADInplaceOrView below_autograd;
      try {
        for (int64_t w = first; w < last; ++w) fn(slots[w]);
        // Then the tail of the window with the most work left, while one is worth taking.
        for (;;) {
          int64_t victim = -1, most = 0;
          const int64_t count = std::min(opened.load(std::memory_order_acquire), capacity);
          for (int64_t w = 0; w < count; ++w) {
            const int64_t left = slots[w].work_left(work);
            if (left > most) victim = w, most = left;
          }
          if (victim < 0) break;
          const int64_t slot = opened.fetch_add(1, std::memory_order_acq_rel);
          if (slot >= capacity || !slots[victim].take_tail(work, slots[slot], failed)) break;
          window_take_overs.fetch_add(1, std::memory_order_relaxed);
          fn(slots[slot]);
        }
      } catch (...) {
        failed.store(true);  // a thread waiting for this one's rows must not wait for ever
        throw;
      }
    });
  }

  // The cell of one step over `rows` rows: in a window (inside the parallel region) on the window's thread; for
  // the whole batch (outside it) split over the threads by rows. parallel_for runs inline in a parallel region.
  template <typename T>
  static void forward_step(T* gates_act, T* c_state, T* h_state, T* h_prev_out, T* c_out, T* h_out, int64_t rows,
                           int64_t hidden) {
    at::parallel_for(0, rows, grain_rows(hidden), [&](int64_t begin, int64_t end) {
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
    at::parallel_for(0, rows, grain_rows(hidden), [&](int64_t begin, int64_t end) {
      const int64_t g = begin * 4 * hidden, s = begin * hidden;
      const T* output_rows = grad_output != nullptr ? grad_output + s : nullptr;
      // Rows below `continuing` (counted from the step's first row) read c_prev_continuing, the others c0.
      const int64_t continuing_here = std::clamp<int64_t>(continuing - begin, 0, end - begin);
      if constexpr (std::is_same_v<T, float>) {
        layer_backward_rows_float(grad_h + s, output_rows, grad_c + s, act + g, c_prev_continuing + s,
                                  c_prev_initial + s, continuing_here, c + s, d_gates + g, end - begin, hidden);
      } else {
        layer_backward_rows<T>(grad_h + s, output_rows, grad_c + s, act + g, c_prev_continuing + s,
                               c_prev_initial + s, continuing_here, c + s, d_gates + g, end - begin, hidden);
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

namespace tl_core {

// The index of `kind` among a setting's Python names, or a clear error that lists them.
template <size_t N>
int kind_index(const char* setting, const std::string& kind, const char* const (&names)[N]) {
  std::string choices;
  for (size_t k = 0; k < N; ++k) {
    if (kind == names[k]) return static_cast<int>(k);
    choices += (k == 0 ? "" : ", ") + std::string(names[k]);
  }
  TORCH_CHECK(false, setting, ": kind must be one of ", choices, "; got '", kind, "'");
  return -1;
}

}  // namespace tl_core

namespace {

// A Python setter for one of the CPU layer's atomic settings: refuses a value below `minimum` with a message naming
// the setter and the unit, sets it, and returns the previous value.
void def_setting(pybind11::module& m, const char* name, std::atomic<int64_t>& setting, const char* unit,
                 int64_t minimum, const char* doc) {
  m.def(
      name,
      [name, unit, minimum, &setting](int64_t value) {
        TORCH_CHECK(value >= minimum, name, ": ", unit, " must be >= ", minimum, ", got ", value);
        return setting.exchange(value);
      },
      doc);
}

}  // namespace

PYBIND11_MODULE(TORCH_EXTENSION_NAME, m) {
  m.doc() = "tl_core's fused LSTM kernels. Importing this module registers the torch.ops.tl_core ops.";
#ifdef WITH_CUDA
  m.attr("with_cuda") = true;
#else
  m.attr("with_cuda") = false;
#endif
  m.def("packed_gemm_available", &tl_core::packed_gemm_available,
        "Whether the CPU layer can use MKL's packed GEMM for its recurrent products (float32).");
  m.def(
      "set_recurrent_gemm",
      [](const std::string& kind) {
        const int chosen = tl_core::kind_index("set_recurrent_gemm", kind, tl_core::kRecurrentGemmNames);
        return std::string(tl_core::kRecurrentGemmNames[tl_core::recurrent_gemm_kind.exchange(chosen)]);
      },
      "The GEMM of float layers' per-step products: 'auto' (the default: oneDNN's for hidden sizes above the window "
      "limit, MKL's packed one below), 'onednn', 'mkl_packed' or 'aten'; a kind this build lacks falls back to the "
      "next. Returns the previous choice.");
  m.def(
      "recurrent_gemm_in_use",
      [](int64_t hidden_size) {
        TORCH_CHECK(hidden_size >= 1, "recurrent_gemm_in_use: hidden_size must be >= 1, got ", hidden_size);
        return std::string(tl_core::kRecurrentGemmNames[tl_core::recurrent_gemm_in_use(hidden_size)]);
      },
      "The GEMM a float layer of this hidden size uses now: the chosen kind, or the next this build has.",
      py::arg("hidden_size"));
  m.def(
      "set_sequence_gemm",
      [](const std::string& kind) {
        const int chosen = tl_core::kind_index("set_sequence_gemm", kind, tl_core::kSequenceGemmNames);
        return std::string(tl_core::kSequenceGemmNames[tl_core::sequence_gemm_kind.exchange(chosen)]);
      },
      "The GEMM of float layers' whole-sequence products with W_ih (input projection, input gradient): 'auto' (the "
      "default: oneDNN's from 2**26 multiply-adds up, ATen's below), 'onednn' or 'aten'; ATen's where the build "
      "lacks oneDNN. Returns the previous choice.");
  m.def(
      "sequence_gemm_in_use",
      [](int64_t multiply_adds) {
        TORCH_CHECK(multiply_adds >= 0, "sequence_gemm_in_use: multiply_adds must be >= 0, got ", multiply_adds);
        return std::string(tl_core::kSequenceGemmNames[tl_core::sequence_gemm_in_use(multiply_adds)]);
      },
      "The GEMM a float layer's whole-sequence product of this many multiply-adds uses now: onednn or aten.",
      py::arg("multiply_adds"));
  m.def(
      "set_buffer_cache_limit",
      [](int64_t bytes) {
        TORCH_CHECK(bytes >= 0, "set_buffer_cache_limit: bytes must be >= 0, got ", bytes);
        const int64_t previous = tl_core::buffer_cache_limit.exchange(bytes);
        if (tl_core::BufferCache::instance().cached_bytes() > bytes) tl_core::BufferCache::instance().release();
        return previous;
      },
      "Most bytes of freed layer buffers the CPU layer keeps for its next calls (default 1 GiB; 0 keeps none). "
      "Returns the previous limit.");
  m.def(
      "release_buffers", [] { return tl_core::BufferCache::instance().release(); },
      "Hands the CPU layer's cached buffers back to the system; returns how many bytes that was.");
  m.def(
      "cached_buffer_bytes", [] { return tl_core::BufferCache::instance().cached_bytes(); },
      "Bytes of freed layer buffers the CPU layer holds for its next calls.");
  m.def(
      "row_windows",
      [](const at::Tensor& batch_sizes, int64_t windows) {
        TORCH_CHECK(windows >= 1, "row_windows: windows must be >= 1, got ", windows);
        const tl_core::PackedSteps steps(batch_sizes, batch_sizes.sum().item<int64_t>(),
                                         batch_sizes.numel() > 0 ? batch_sizes[0].item<int64_t>() : 0);
        return tl_core::balanced_cuts(tl_core::row_lengths(steps, steps.rows()),
                                      std::min(windows, std::max<int64_t>(steps.rows(), 1)));
      },
      "The row boundaries [0, ..., batch] the CPU layer cuts a packed batch into for `windows` threads (about equal "
      "tokens each); for tests and the curious.");
  def_setting(m, "set_window_weight_limit", tl_core::window_weight_limit, "bytes", 0,
              "Largest W_hh (bytes) for which the CPU layer gives each thread a window of rows for the whole "
              "recurrence; above it the whole batch runs each step on every thread (large hidden sizes). Returns the "
              "previous limit.");
  def_setting(m, "set_window_stall", tl_core::window_stall_us, "microseconds", 0,
              "Test hook: the CPU thread running the window that holds row 0 sleeps this long before each step, as "
              "if descheduled, so that the other threads take its rows over (0, the default: never). Returns the "
              "previous value.");
  def_setting(m, "set_take_over_iterations", tl_core::take_over_iterations, "iterations", 1,
              "Fewest steps a CPU thread that has finished its window of rows must find left in another's before it "
              "takes that window's tail over (default 16; a very large value turns taking over off). Returns the "
              "previous value.");
  m.def(
      "window_take_overs", [] { return tl_core::window_take_overs.load(); },
      "How many times a CPU thread has taken over the tail of another thread's window of rows (since the start).");
  m.def("cpu_kernel_isa", &tl_core::cpu_kernel_isa,
        "Instruction set the CPU kernels use on this machine: avx512, avx2 or baseline.");
}
