"""Build of tl_core and its extension tl_core._C (the fused LSTM kernels in csrc/).

    pip install --no-build-isolation -e .     # what `make install` runs

Builds a CppExtension (CPU kernels only), or a CUDAExtension (CPU + CUDA kernels) when torch was built with CUDA
and a CUDA toolkit (nvcc) is found. TL_CORE_CUDA=1 forces the CUDA build (and fails clearly when it cannot be
done), TL_CORE_CUDA=0 forces the CPU build. Build isolation must stay off: the extension has to be compiled
against the torch that is installed, not against another one that pip would fetch into an isolated environment.
"""

import glob
import os
import re
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

from setuptools import find_packages, setup

HERE = Path(__file__).resolve().parent


def find_cuda_toolkit():
    """The folder of the CUDA toolkit that nvcc belongs to, or None.

    torch guesses CUDA_HOME as the folder above `which nvcc`, which is wrong when nvcc on PATH is a wrapper
    script (as on the course machines). nvcc itself reports where it lives, so ask it.
    """
    for variable in ("CUDA_HOME", "CUDA_PATH"):
        if os.environ.get(variable):
            return os.environ[variable]
    nvcc = shutil.which("nvcc")
    candidates = []
    if nvcc:
        candidates.append(Path(os.path.realpath(nvcc)).parent.parent)
        try:
            dryrun = subprocess.run([nvcc, "-dryrun", "--version"], capture_output=True, text=True, timeout=60)
            here = re.search(r"^#\$ _HERE_=(.+)$", dryrun.stdout + dryrun.stderr, re.MULTILINE)
            if here:
                candidates.append(Path(here.group(1).strip()).parent)
        except (OSError, subprocess.SubprocessError):
            pass
    candidates.append(Path("/usr/local/cuda"))
    for folder in candidates:
        if (folder / "include" / "cuda_runtime.h").exists() and (folder / "bin").is_dir():
            return str(folder)
    return None


def want_cuda():
    """Whether to build the CUDA kernels: TL_CORE_CUDA=1/0 decides; otherwise when torch and a toolkit allow."""
    import torch

    forced = os.environ.get("TL_CORE_CUDA", "").strip()
    if forced not in ("", "0", "1"):
        sys.exit(f"TL_CORE_CUDA must be 0 (CPU build) or 1 (CUDA build), got {forced!r}")
    toolkit = find_cuda_toolkit()
    if forced == "1":
        if torch.version.cuda is None:
            sys.exit(f"TL_CORE_CUDA=1, but the installed torch {torch.__version__} is a CPU build: "
                     "install a CUDA build of torch to compile the CUDA kernels")
        if toolkit is None:
            sys.exit("TL_CORE_CUDA=1, but no CUDA toolkit was found: put nvcc on PATH or set CUDA_HOME")
    if forced == "0":
        return False
    if torch.version.cuda is None or toolkit is None:
        return False
    # torch.utils.cpp_extension reads CUDA_HOME when it is first imported.
    os.environ["CUDA_HOME"] = toolkit
    return True


def pip_cuda_include_dirs():
    """Headers of the CUDA libraries that pip-installed torch brings (cuBLAS, cuSPARSE, ...): the toolkit on the
    machine may lack them or hold other versions than those torch's headers include."""
    site = Path(sysconfig.get_paths()["purelib"])
    return sorted(set(glob.glob(str(site / "nvidia" / "*" / "include"))))


def extension_modules():
    with_cuda = want_cuda()
    from torch.utils.cpp_extension import CppExtension, CUDAExtension

    # -fopenmp: at::parallel_for is a header template that parallelises only when compiled with OpenMP; at run
    # time it binds to the libgomp that torch has already loaded (same soname), so there is one thread pool.
    # -fno-trapping-math: the kernels never read the floating-point exception flags, and without it GCC keeps the
    # clamps of the cell's exp (x > 88 ? 88 : x) as branches on AVX2 and SSE, so the cell loops stay scalar there
    # (only AVX-512's masked instructions got vectorized; measured on a 2-core AVX2 EPYC: the cell was half of the
    # tutorial shape's forward time). Results are unchanged: it allows no reassociation and no NaN assumptions.
    cxx_flags = ["-O3", "-g0", "-fopenmp", "-fno-trapping-math"]
    sources = ["csrc/lstm.cpp"]
    if not with_cuda:
        return [CppExtension("tl_core._C", sources, extra_compile_args={"cxx": cxx_flags},
                             extra_link_args=["-fopenmp"])]
    return [CUDAExtension(
        "tl_core._C", sources + ["csrc/cuda/lstm.cu"],
        include_dirs=pip_cuda_include_dirs(),
        define_macros=[("WITH_CUDA", None)],
        extra_compile_args={"cxx": cxx_flags, "nvcc": ["-O3", "--use_fast_math"]},
        extra_link_args=["-fopenmp"],
    )]


def build_ext_class():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(no_python_abi_suffix=False)


setup(
    name="tl_core",
    version="0.1.0",
    description="Transfer learning for NLP, a notebook course: data, Word2Vec, a fused C++/CUDA LSTM, fine-tuning",
    packages=find_packages(include=["tl_core", "tl_core.*"]),
    python_requires=">=3.10",
    ext_modules=extension_modules(),
    cmdclass={"build_ext": build_ext_class()},
    entry_points={"console_scripts": ["tl-course=tl_core.run:main"]},
    zip_safe=False,
)
