"""Builds rft_fast._C from csrc/ (C++ CPU kernels always, CUDA kernels when a toolkit is found).

The extension is optional: without a compiler (or with RFT_FAST_NO_EXT=1) the package installs without it
and rft_fast.ops reports fewer backends. Install with `pip install --no-build-isolation .` so the extension
is compiled against the torch already installed in the environment.
"""

from __future__ import annotations

import glob
import os
import sys
import warnings
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).parent.resolve()


def find_cuda_home() -> str | None:
    """The CUDA toolkit root: the folder whose lib64/ holds libcudart.so.

    torch guesses CUDA_HOME from `which nvcc`; a wrapper script on PATH makes that guess wrong, so
    look for the real root first (CUDA_HOME/CUDA_PATH if they are valid, then the usual places).
    """
    candidates = [os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH"), "/usr/local/cuda"]
    candidates += sorted(glob.glob("/usr/local/cuda-*"), reverse=True)
    for root in filter(None, candidates):
        if (Path(root) / "bin" / "nvcc").exists() and glob.glob(f"{root}/lib*/libcudart.so*"):
            return str(Path(root).resolve())
    return None


def extensions() -> tuple[list, dict]:
    if os.environ.get("RFT_FAST_NO_EXT") == "1":
        return [], {}
    cuda_home = find_cuda_home() if os.environ.get("RFT_FAST_NO_CUDA") != "1" else None
    if cuda_home:
        os.environ["CUDA_HOME"] = cuda_home  # must precede the cpp_extension import
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0")
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError:
        warnings.warn("torch is not importable at build time: installing without rft_fast._C", stacklevel=2)
        return [], {}

    use_cuda = bool(cuda_home) and torch.version.cuda is not None
    sources = sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cpp"))
    # No -std flag: torch.utils.cpp_extension adds the standard its own headers need (C++17 or C++20).
    cxx = ["-O3", "-fopenmp"] if sys.platform == "linux" else ["-O3"]
    extra = {"cxx": cxx}
    if use_cuda:
        sources += sorted(str(p.relative_to(ROOT)) for p in (ROOT / "csrc").rglob("*.cu"))
        extra["nvcc"] = ["-O3", "--use_fast_math", "-lineinfo"]
        ext_cls = cpp_extension.CUDAExtension
        macros = [("RFT_WITH_CUDA", None)]
    else:
        ext_cls = cpp_extension.CppExtension
        macros = []
    ext = ext_cls(
        name="rft_fast._C",
        sources=sources,
        include_dirs=[str(ROOT / "csrc")],
        define_macros=macros,
        extra_compile_args=extra,
        extra_link_args=["-fopenmp"] if sys.platform == "linux" else [],
    )

    class OptionalBuildExt(cpp_extension.BuildExtension):
        """Builds the extension; a failed build warns and installs the package without it."""

        def run(self) -> None:
            try:
                super().run()
            except Exception as exc:  # noqa: BLE001 - any build failure degrades to the torch backend
                if os.environ.get("RFT_FAST_REQUIRE_EXT") == "1":
                    raise
                warnings.warn(f"building rft_fast._C failed ({exc}); installing without it", stacklevel=2)

    return [ext], {"build_ext": OptionalBuildExt.with_options(use_ninja=True)}


ext_modules, cmdclass = extensions()

setup(
    # kernels/ (top level) is installed as the subpackage rft_fast.kernels.
    packages=find_packages(include=["rft_fast", "rft_fast.*"], exclude=["rft_fast.kernels*"]) + ["rft_fast.kernels"],
    package_dir={"rft_fast": "rft_fast", "rft_fast.kernels": "kernels"},
    ext_modules=ext_modules,
    cmdclass=cmdclass,
)
