"""The engine's host buffers (engine/host_buffers.py) for real: anonymous memory maps released with madvise, and
numpy arrays bound in place to a real ONNX Runtime session."""

from __future__ import annotations

import mmap
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from engine.host_buffers import (HUGE_PAGE_ADVICE_BYTES, bind_host_input, bind_host_output, lazy_zeros, release_rows,
                                 run_bound)

ROW_SHAPE = (4, 64, 64)  # a cache row [H, C, K] of float32: 64 KiB, a whole number of pages
LARGE_ROWS = HUGE_PAGE_ADVICE_BYTES // (4 * int(np.prod(ROW_SHAPE)))  # just large enough to be memory-mapped


def test_a_large_lazy_array_is_memory_mapped_zeroed_and_writable():
    array = lazy_zeros((LARGE_ROWS, *ROW_SHAPE))
    assert array.nbytes >= HUGE_PAGE_ADVICE_BYTES
    owner = array
    while isinstance(owner, np.ndarray):
        owner = owner.base
    owner = owner.obj if isinstance(owner, memoryview) else owner
    assert isinstance(owner, mmap.mmap)  # pages the kernel zeroes when first touched, not numpy's zeroed allocation
    assert not array.any()
    array[3, :, 5] = 2.5
    assert array[3, :, 5].sum() == 2.5 * ROW_SHAPE[0] * ROW_SHAPE[2] and array.sum() == array[3].sum()


def test_a_small_lazy_array_is_an_ordinary_zeroed_array():
    array = lazy_zeros((2, *ROW_SHAPE), np.int32)
    assert array.dtype == np.int32 and array.flags.owndata and not array.any()


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="madvise(MADV_DONTNEED) is Linux's")
def test_released_rows_read_as_zeros_and_the_rows_before_them_are_kept():
    array = lazy_zeros((LARGE_ROWS, *ROW_SHAPE))
    array[:] = 1.0
    release_rows(array, 10)
    assert (array[:10] == 1.0).all()  # kept
    assert not array[10:].any()  # the pages went back to the system: they read as zeros
    array[12] = 7.0  # and can be written again
    assert (array[12] == 7.0).all()


def test_release_rows_leaves_an_array_smaller_than_the_mapping_threshold_alone():
    array = np.ones((2, *ROW_SHAPE), np.float32)
    release_rows(array, 1)
    assert (array == 1.0).all()


def test_bound_host_arrays_are_read_and_written_in_place_by_a_real_session():
    node = helper.make_node("Add", ["x", "x"], ["y"])
    graph = helper.make_graph([node], "double", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n"])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n"])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 9
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    x, y = np.arange(6, dtype=np.float32), np.full(6, -1.0, np.float32)
    binding = session.io_binding()
    bind_host_input(binding, "x", x)
    bind_host_output(binding, "y", y)
    run_bound(session, binding, None)
    assert (y == 2 * np.arange(6)).all()  # written into our array, not a copy
    x[:] = 10.0  # the input is read from our array at each run, too
    run_bound(session, binding, None)
    assert (y == 20.0).all()
