"""The one compiled part: the engine's attention kernels for ONNX Runtime's CPU provider (engine/kernels/attention.cc).

Optional: where no C++ compiler is present the build goes on without them and the engine runs ONNX Runtime's own
attention kernels (same outputs, slower: README, "Benchmark"). Everything else is declared in pyproject.toml.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "engine.attention_kernels",
            sources=["engine/kernels/attention.cc"],
            depends=["engine/kernels/ort_abi.h"],
            language="c++",
            extra_compile_args=["-O3", "-std=c++17", "-fopenmp-simd", "-fvisibility=hidden", "-Wno-psabi"],
            optional=True,
        )
    ]
)
