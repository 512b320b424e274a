"""Keep freed memory in the process instead of handing it back to the system (glibc on Linux).

Training and search allocate and free tensors of tens of megabytes at every step (a batch's (N, V) logits, their
log-softmax and gradients: 24 MB each on Multi30k). glibc serves such sizes with ``mmap`` or trims them off the
top of its heap once freed, so every step faults the same amount of fresh, zeroed pages in again. Measured with
``bench/seq2seq_throughput.py`` on the Multi30k GRU recipe (one thread, 2026-12-06, bench/RESULTS-seq2seq.md): with
glibc's defaults the bench spent 4.9 s a round in the kernel, with these settings 0.3 s; the plain PyTorch loop
trained 14% faster and hourglass 21% (medians of separate runs), and hourglass's ratio to the plain loop went from
0.949 to 1.006. Greedy search on the trained GRU run took 18% less time, beam search 15% less.

PyTorch's CPU performance guide answers the same problem by preloading jemalloc or tcmalloc; glibc's own
``mallopt`` does it without another library: a large ``M_MMAP_THRESHOLD`` keeps large blocks in the heap and a
large ``M_TRIM_THRESHOLD`` keeps the heap's freed top. The cost is that the process keeps its peak memory until
it ends, which a training or translation process reaches anyway.

The ``hourglass`` command calls :func:`keep_freed_memory` when it starts; a Python program may call it too. It
changes nothing where the user chose for themselves (``MALLOC_MMAP_THRESHOLD_``, ``MALLOC_TRIM_THRESHOLD_`` or
``GLIBC_TUNABLES`` set, another allocator in ``LD_PRELOAD``, or ``HOURGLASS_KEEP_FREED_MEMORY=0``), and nothing on
another C library or system.
"""
from __future__ import annotations

import ctypes
import os
import sys

_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # glibc's malloc.h
_MMAP_THRESHOLD = 1 << 30  # blocks under 1 GiB come from the heap
_TRIM_THRESHOLD = (1 << 31) - 1  # mallopt takes an int: the heap keeps up to 2 GiB of freed memory at its top
_FALLBACK_MMAP_THRESHOLD = 32 << 20  # the most that glibc versions with an upper bound accept (64-bit)
_USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")
_ALLOCATORS = ("jemalloc", "tcmalloc", "mimalloc")  # preloaded in place of glibc's malloc: mallopt would not reach it


def keep_freed_memory() -> bool:
    """Set glibc's thresholds (module docstring); True when they are set, False when this process keeps its own
    settings or does not run on glibc."""
    if os.environ.get("HOURGLASS_KEEP_FREED_MEMORY", "1") == "0" or any(k in os.environ for k in _USER_SETTINGS):
        return False
    if any(name in os.environ.get("LD_PRELOAD", "") for name in _ALLOCATORS):
        return False
    if not sys.platform.startswith("linux"):
        return False
    try:
        mallopt = ctypes.CDLL("libc.so.6").mallopt  # glibc; musl has no libc.so.6 and no mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = (ctypes.c_int, ctypes.c_int), ctypes.c_int
    # The mmap threshold first: setting either one stops glibc from raising the mmap threshold by itself, and
    # with only the trim threshold set every block over 128 KiB would be mmapped (and faulted in) afresh.
    # Some glibc versions refuse a threshold above 32 MiB; that still covers a step's tensors of tens of MB.
    if not (mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) or mallopt(_M_MMAP_THRESHOLD, _FALLBACK_MMAP_THRESHOLD)):
        return False
    return bool(mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD))
