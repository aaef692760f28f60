"""Resident memory of a process, from Linux's /proc: what the service reports for its worker processes and what the
benchmarks compare; and handing freed heap back to the system."""

from __future__ import annotations

import ctypes
import ctypes.util
from pathlib import Path


def proc_status_bytes(pid: int | str, field: str) -> int | None:
    """A memory field of /proc/<pid>/status (VmRSS: resident now, VmHWM: peak resident) in bytes, `pid` "self" for this
    process; None where /proc is not there (not Linux) or the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024  # reported in kB
    except (OSError, ValueError, IndexError):
        return None
    return None


def return_freed_memory() -> bool:
    """Ask glibc to return the free parts of its heap to the system (malloc_trim): memory freed by closing ONNX Runtime
    sessions otherwise stays resident, reused by nothing. → whether anything was returned; False without glibc."""
    name = ctypes.util.find_library("c")
    try:
        trim = ctypes.CDLL(name).malloc_trim
    except (OSError, AttributeError, TypeError):  # musl or another libc: nothing to ask
        return False
    return bool(trim(0))
