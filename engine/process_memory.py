"""Resident memory of a process, from Linux's /proc: what the service reports for its worker processes and what the
benchmarks compare."""

from __future__ import annotations

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
