"""hourglass.allocator: large tensors come from glibc's heap and their memory stays in it once freed; the user's own
settings win."""
import ctypes
import json
import os
import subprocess
import sys
import textwrap

import pytest

import hourglass.cli as cli
from hourglass.allocator import _USER_SETTINGS, keep_freed_memory

# In a fresh process: where a 64 MiB tensor comes from, by glibc's own account (mallinfo2: ``hblkhd`` counts the
# bytes in mmapped blocks, ``arena`` the heap), while it lives and after it is freed.
_PROBE = textwrap.dedent("""
    import ctypes, json, torch
    from hourglass.allocator import keep_freed_memory
    class Info(ctypes.Structure):
        _fields_ = [(name, ctypes.c_size_t) for name in ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks",
                                                         "fsmblks", "uordblks", "fordblks", "keepcost")]
    libc = ctypes.CDLL("libc.so.6")
    libc.mallinfo2.restype = Info
    kept = keep_freed_memory()
    before = libc.mallinfo2()
    x = torch.empty(16 << 20)
    x.fill_(1.0)
    alive = libc.mallinfo2()
    del x
    freed = libc.mallinfo2()
    print(json.dumps({"kept": kept, "mmapped": alive.hblkhd - before.hblkhd, "heap_kept": freed.arena - before.arena}))
""")


def _probe(**env: str) -> dict:
    clean = {k: v for k, v in os.environ.items() if k not in (*_USER_SETTINGS, "LD_PRELOAD")}
    out = subprocess.run([sys.executable, "-c", _PROBE], env={**clean, **env}, capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _glibc() -> bool:
    try:
        return hasattr(ctypes.CDLL("libc.so.6"), "mallinfo2")
    except OSError:
        return False


@pytest.mark.skipif(not (sys.platform.startswith("linux") and _glibc()), reason="glibc 2.33 or newer")
def test_a_large_tensor_comes_from_the_heap_and_its_memory_stays_there():
    kept = _probe(HOURGLASS_KEEP_FREED_MEMORY="1")
    assert kept["kept"] is True
    assert kept["mmapped"] == 0  # served from the heap, not by mmap
    assert kept["heap_kept"] >= 64 << 20  # freed, and still in the heap: the next step reuses it
    default = _probe(HOURGLASS_KEEP_FREED_MEMORY="0")  # glibc's defaults: mmapped, and unmapped when freed
    assert default["kept"] is False and default["mmapped"] >= 64 << 20
    assert default["heap_kept"] < 64 << 20


@pytest.mark.parametrize("key,value", [("HOURGLASS_KEEP_FREED_MEMORY", "0"), ("MALLOC_MMAP_THRESHOLD_", "131072"),
                                       ("GLIBC_TUNABLES", "glibc.malloc.trim_threshold=0"),
                                       ("LD_PRELOAD", "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2")])
def test_the_users_own_setting_wins(monkeypatch, key, value):
    monkeypatch.setenv(key, value)
    assert keep_freed_memory() is False


def test_the_command_keeps_freed_memory(monkeypatch):
    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(True))
    with pytest.raises(SystemExit):
        cli.main(["no-such-command"])  # argparse refuses it after main has started
    assert calls == [True]
