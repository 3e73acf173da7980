"""Keeping freed host memory for the next minibatch.

PyTorch's CPU tensors come from the C library's malloc and go back to it when freed. glibc
serves blocks above a threshold (128 KB, rising to at most 32 MB as it sees such blocks freed)
with fresh mmap()s and returns them to the kernel when freed, and trims the top of its heap
beyond 128 KB; a training step allocates the same multi-megabyte tensors every minibatch, so
each of them page-faults in again (about 6 ms of a 45 ms LSTMP step, benchmarks/throughput.py).
Raising both thresholds keeps the memory in the process, as PyTorch's performance guide gets
with jemalloc or tcmalloc. The price is resident memory that is no longer given back: set after
start-up (driver.run), it raised the peak RSS per rank of benchmarks/scale.py's runs by about
100 MB (10 h corpus) to 170 MB (100 h), for 10-30% more frames/s. Other C libraries are left as
they are.
"""
from __future__ import annotations

import ctypes
import ctypes.util

M_TRIM_THRESHOLD = -1
M_MMAP_THRESHOLD = -3
MMAP_THRESHOLD = 32 << 20    # glibc's largest allowed value (64-bit)
TRIM_THRESHOLD = 1 << 30


def keep_freed_host_memory() -> bool:
    """Sets glibc's mmap and trim thresholds for this process; False where there is no glibc."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c"))
    except (OSError, TypeError):
        return False
    if not hasattr(libc, "gnu_get_libc_version"):   # glibc only: other libcs' mallopt differ
        return False
    mallopt = libc.mallopt
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD))
