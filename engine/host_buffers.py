"""Host buffers for ONNX Runtime on the CPU: numpy arrays bound in place (IO binding, no copies), and large arrays
whose memory becomes resident only where written and goes back to the operating system when rows are freed.

The step model (engine/step_model.py) keeps its caches, per-row inputs and candidates in such buffers.
"""

from __future__ import annotations

import ctypes
import mmap
import sys

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import _pybind_state as ort_native

MADV_DONTNEED = 4
HUGE_PAGE_ADVICE_BYTES = 1 << 22  # numpy's threshold for madvise(MADV_HUGEPAGE)
LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None


def lazy_zeros(shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
    """A zeroed array whose pages become resident only when written. numpy asks for transparent huge pages
    for arrays of 4 MB and more, which makes a cache resident in 2 MB pieces as soon as each row's first slot
    is written: those come from a private anonymous memory map instead (zeroed by the kernel, page by page), which
    declines huge pages where the system would otherwise give them unasked. Private, not Python's default shared
    mapping: pages of a shared one stay allocated after `release_rows` and come back with their old contents."""
    count = int(np.prod(shape))
    size = count * np.dtype(dtype).itemsize
    if size < HUGE_PAGE_ADVICE_BYTES:
        return np.zeros(shape, dtype)
    memory = mmap.mmap(-1, size, flags=mmap.MAP_PRIVATE) if hasattr(mmap, "MAP_PRIVATE") else mmap.mmap(-1, size)
    if hasattr(mmap, "MADV_NOHUGEPAGE"):
        memory.madvise(mmap.MADV_NOHUGEPAGE)
    return np.frombuffer(memory, dtype=dtype, count=count).reshape(shape)


def release_rows(array: np.ndarray, first: int) -> None:
    """Give the pages of rows [first, end) of a C-contiguous array back to the operating system (Linux): they
    read as zeros when touched again. The rows must hold nothing that is read later. Only arrays as large as
    `lazy_zeros` maps: a smaller one goes back with its batch anyway, and the system call is not free (3.6 % of
    an inference thread's samples under 32 greedy connections, batches of about 10, py-spy)."""
    if LIBC is None or array.nbytes < HUGE_PAGE_ADVICE_BYTES:
        return
    page = mmap.PAGESIZE
    start = -(-(array.ctypes.data + first * array.strides[0]) // page) * page  # whole pages inside the rows only:
    end = (array.ctypes.data + array.nbytes) // page * page  # a page shared with other memory is never released
    if end > start:
        LIBC.madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), MADV_DONTNEED)


def as_ortvalue(array: np.ndarray) -> ort.OrtValue:
    """Wrap a C-contiguous numpy array without a copy: the OrtValue reads and writes the array's memory."""
    return ort.OrtValue.ortvalue_from_numpy(array)


HOST = ort.OrtDevice.make("cpu", 0)._get_c_device()


def bind_host_input(binding: ort.IOBinding, name: str, array: np.ndarray) -> None:
    """Bind a host array in place through ONNX Runtime's native binding: the Python wrapper's checks (WebGPU graph
    capture, session-scoped allocators; none apply here) cost more than the binding itself, and a step binds its
    attention mask every time. The native value does not keep the array alive: the state holds every array bound."""
    binding._iobinding.bind_ortvalue_input(name, ort_native.OrtValue.ortvalue_from_numpy(array, HOST))


def bind_host_output(binding: ort.IOBinding, name: str, array: np.ndarray) -> None:
    """Bind a host array as an output, written in place; the same native path (and caveat) as `bind_host_input`."""
    binding._iobinding.bind_ortvalue_output(name, ort_native.OrtValue.ortvalue_from_numpy(array, HOST))


def run_bound(session: ort.InferenceSession, binding: ort.IOBinding, run_options: ort.RunOptions | None) -> None:
    """`session.run_with_iobinding` without the wrapper's WebGPU graph-capture checks (measured: README)."""
    session._sess.run_with_iobinding(binding._iobinding, run_options)
