"""ONNX Runtime sessions: execution providers from configuration, verified after creation.

ONNX Runtime silently falls back to the CPU when CUDA libraries are missing (toolchain notes),
so the provider that actually runs is read back from `session.get_providers()` and logged;
with `strict_providers` a fallback is an error instead of a log line.

On the CPU, sessions run the two attention operators of our graphs on the engine's own kernels
(engine/kernels/attention.cc, built by `pip install` where a C++ compiler is present), registered under
ONNX Runtime's operator names so that the graphs stay as exported: where the library is absent, or
`attention_kernels` is off, ONNX Runtime's kernels run them (the same results up to float rounding).
"""

from __future__ import annotations

import importlib.machinery
import logging
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import onnxruntime as ort

log = logging.getLogger(__name__)


class ProviderUnavailable(RuntimeError):
    """`strict_providers` is set and the first requested execution provider cannot run a model."""


CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
OPTIMIZATION_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}


@dataclass(frozen=True)
class RuntimeOptions:
    providers: tuple[str, ...] = (CPU,)  # in order of preference, e.g. ("CUDAExecutionProvider", "CPUExecutionProvider")
    strict_providers: bool = False  # raise instead of falling back when the first provider cannot run
    intra_op_threads: int = 0  # 0 = ONNX Runtime's default (one per physical core)
    inter_op_threads: int = 1  # the graphs are sequential chains: parallel execution only adds overhead
    # Idle intra-op threads spin for a while after each run: faster back-to-back runs, but on a small
    # machine the spinning steals the cores from the event loop that answers (and refuses) requests.
    spin_wait: bool = False
    optimization_level: str = "all"
    enable_cpu_mem_arena: bool = True
    # Arena growth: "kNextPowerOfTwo" (fast, wasteful) or "kSameAsRequested" (no over-allocation with
    # varying sequence lengths). Applies to the CUDA arena; the CPU arena is on/off above.
    arena_extend_strategy: str = "kNextPowerOfTwo"
    shrink_arena_after_run: bool = False  # give arena memory back after each decode (slower, flat RSS)
    device_id: int = 0
    profile_prefix: str | None = None  # ONNX Runtime's profiler on, its JSON files named with this prefix
    cuda_options: dict = field(default_factory=dict)  # extra CUDA provider options (cudnn_conv_algo_search, ...)
    attention_kernels: bool = True  # the engine's CPU attention kernels where built (module docstring)


def resolve_providers(requested: tuple[str, ...] | list[str]) -> list[str]:
    """The requested providers that this onnxruntime build has, in order, always ending with the CPU."""
    available = ort.get_available_providers()
    chosen = []
    for name in requested:
        if name in available:
            chosen.append(name)
        else:
            log.warning("execution provider %s was requested but this onnxruntime build lacks it (has %s)", name, available)
    if CPU not in chosen:
        chosen.append(CPU)
    return chosen


def provider_options(name: str, options: RuntimeOptions) -> dict:
    if name == CUDA:
        return {"device_id": options.device_id, "arena_extend_strategy": options.arena_extend_strategy, **options.cuda_options}
    return {}


@cache
def attention_kernels_library() -> Path | None:
    """The engine's compiled attention kernels (setup.py), or None where the install had no C++ compiler."""
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        library = Path(__file__).with_name("attention_kernels" + suffix)
        if library.is_file():
            return library
    log.warning("the engine's attention kernels are not built (no C++ compiler at install time): ONNX Runtime's "
                "slower kernels run attention")
    return None


def session_options(options: RuntimeOptions, on_cpu: bool = True) -> ort.SessionOptions:
    """on_cpu: the CPU provider runs the session (the engine's attention kernels are CPU kernels: registering them
    for a CUDA session would pull its attention onto the CPU)."""
    settings = ort.SessionOptions()
    settings.intra_op_num_threads = options.intra_op_threads
    settings.inter_op_num_threads = options.inter_op_threads
    settings.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    settings.graph_optimization_level = OPTIMIZATION_LEVELS[options.optimization_level]
    settings.enable_cpu_mem_arena = options.enable_cpu_mem_arena
    settings.add_session_config_entry("session.intra_op.allow_spinning", "1" if options.spin_wait else "0")
    if on_cpu and options.attention_kernels and (library := attention_kernels_library()) is not None:
        settings.register_custom_ops_library(str(library))
    if options.profile_prefix:
        settings.enable_profiling = True
        settings.profile_file_prefix = options.profile_prefix
    return settings


def run_options(options: RuntimeOptions, provider: str) -> ort.RunOptions | None:
    """Options for every run, or None when there is nothing to set: ORT's Python wrapper probes a set
    RunOptions for a CUDA-graph entry on every run, which costs tens of µs per decoder step."""
    if not options.shrink_arena_after_run:
        return None
    settings = ort.RunOptions()
    device = f"gpu:{options.device_id}" if provider == CUDA else "cpu:0"
    settings.add_run_config_entry("memory.enable_memory_arena_shrinkage", device)
    return settings


def create_session(model: Path | bytes, options: RuntimeOptions) -> tuple[ort.InferenceSession, str]:
    """model: a file or serialized ONNX → the session and the provider that actually runs it
    (the first of `session.get_providers()`)."""
    providers = resolve_providers(options.providers)
    session = ort.InferenceSession(
        model if isinstance(model, bytes) else str(model),
        session_options(options, on_cpu=providers[0] == CPU),
        providers=[(p, provider_options(p, options)) for p in providers],
    )
    active = session.get_providers()[0]
    wanted = options.providers[0] if options.providers else CPU
    if active != wanted:
        what = "an in-memory graph" if isinstance(model, bytes) else Path(model).name
        message = f"{what}: {wanted} was requested first but {active} runs it"
        if options.strict_providers:
            raise ProviderUnavailable(message + " (TRANSLATOR_STRICT_PROVIDERS is set: refusing to fall back)")
        log.warning("%s", message)
    return session, active
