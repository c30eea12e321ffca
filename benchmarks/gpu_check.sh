#!/usr/bin/env bash
# The GPU check of the fused LSTM (issue #3), in one go, for a machine with an NVIDIA GPU, nvcc and a CUDA build of
# PyTorch already installed (nothing is downloaded; the course's device machines have all of it). About 5 minutes.
#
#   OUT=/some/folder bash benchmarks/gpu_check.sh          # from the repository root
#
# 1. builds tl_core._C with its CUDA kernels, in place, for this GPU's architecture;
# 2. runs the op and FusedLSTM tests (CPU and CUDA; the CUDA ones must run here, not skip);
# 3. runs the benchmark on CUDA (FusedLSTM against cuDNN's nn.LSTM; target: within 1.5x), with the IMDB-like batch
#    of the newest committed CPU result, so that both devices time the same lengths.
# Everything lands in $OUT (default: ./gpu-check-out): environment.txt, build.log, tests.log, tests.xml,
# benchmark.txt and lstm-cuda-<date>-<gpu>.json. Commit the JSON under benchmarks/results/.
# Exit status: 0 when the build and the tests passed (the benchmark's targets are reported, not enforced).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT="${OUT:-$PWD/gpu-check-out}"
PY="${PYTHON:-python3}"
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

{
  date -u
  nvidia-smi || true
  nvcc --version || true
  "$PY" -c "import torch; print('torch', torch.__version__, 'CUDA', torch.version.cuda, 'cuDNN', torch.backends.cudnn.version(), torch.cuda.get_device_name())"
} > "$OUT/environment.txt" 2>&1
cat "$OUT/environment.txt"

ARCH="$("$PY" -c "import torch; print('%d.%d' % torch.cuda.get_device_capability())")" || { echo "no CUDA device visible to torch"; exit 1; }
echo "== build (sm ${ARCH})"
rm -f tl_core/_C*.so
if ! TL_CORE_CUDA=1 TORCH_CUDA_ARCH_LIST="$ARCH" MAX_JOBS="$(nproc)" "$PY" setup.py -q build_ext --inplace \
    > "$OUT/build.log" 2>&1; then
  tail -40 "$OUT/build.log"; echo "build failed (log: $OUT/build.log)"; exit 1
fi
"$PY" -c "import tl_core.ops as o; info = o.extension_info(); print(info); assert info['with_cuda']" || exit 1

echo "== tests"
# -o addopts= drops the project's nbval options (the notebooks are not run here).
"$PY" -m pytest tests/test_ops.py tests/test_lstm.py -q -o addopts= -p no:cacheprovider -rs \
    --junitxml="$OUT/tests.xml" 2>&1 | tee "$OUT/tests.log"
tests_status=${PIPESTATUS[0]}
if grep -qE "SKIPPED.*needs a CUDA device" "$OUT/tests.log"; then
  echo "CUDA tests were skipped on a GPU machine: that is a failure here"; tests_status=1
fi

echo "== benchmark"
lengths_args=()
newest_cpu="$(ls -t benchmarks/results/lstm-cpu-*.json 2>/dev/null | head -1)"
if [ -n "$newest_cpu" ]; then lengths_args=(--imdb-lengths-from "$newest_cpu"); fi
"$PY" benchmarks/lstm.py --device cuda --repeats 20 --warmup 5 --output-dir "$OUT" "${lengths_args[@]}" \
    2>&1 | tee "$OUT/benchmark.txt"
bench_status=${PIPESTATUS[0]}

echo "tests: exit ${tests_status}; benchmark: exit ${bench_status}; files in $OUT:"; ls -l "$OUT"
[ "$tests_status" -eq 0 ] && [ "$bench_status" -eq 0 ]
