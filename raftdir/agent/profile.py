"""What a worker says about itself when it registers (wire-types.md §7).

Owns: the ``WorkerProfile`` of this machine: the OS and CPU architecture from ``platform``
normalised to the wire names, which are Rust's ``std::env::consts`` names as ZLayer's worker
sends them (``linux``, ``windows``, ``freebsd``, ...; raftdir says ``darwin`` for macOS,
which placement treats as ZLayer's ``macos``; ``x86_64``, ``aarch64``, ``arm``, ``x86``,
``powerpc64``, ...), any other name lowercased as it is (the wire keeps any string), CPU
cores and total memory (best effort: 0 when unknown). Pure apart from
reading the machine's facts; called from ``WorkerAgent.start()``. Imports the model only.
"""

from __future__ import annotations

import logging
import os
import platform
from typing import Mapping

from ..model import WorkerProfile

__all__ = ["detect_profile", "normalize_os", "normalize_arch", "cpu_total",
           "memory_total_bytes"]

log = logging.getLogger(__name__)

_OS = {"win32": "windows", "cygwin": "windows", "msys": "windows", "macos": "darwin",
       "macosx": "darwin", "sunos": "solaris"}
_ARCH = {"amd64": "x86_64", "x64": "x86_64", "em64t": "x86_64", "arm64": "aarch64",
         "armv8": "aarch64", "armv8l": "aarch64", "aarch64_be": "aarch64",
         "i386": "x86", "i486": "x86", "i586": "x86", "i686": "x86", "armv6l": "arm",
         "armv7l": "arm", "armv7": "arm", "ppc": "powerpc", "ppc64": "powerpc64",
         "ppc64le": "powerpc64", "mips64el": "mips64", "mipsel": "mips"}


def normalize_os(name: str) -> str:
    """``Linux`` -> ``linux``, ``Darwin`` -> ``darwin``, ``Windows`` -> ``windows``,
    ``FreeBSD`` -> ``freebsd``: Rust's names, any other lowercased."""
    key = name.strip().lower()
    return _OS.get(key, key)


def normalize_arch(name: str) -> str:
    """``AMD64`` -> ``x86_64``, ``arm64`` -> ``aarch64``, ``i686`` -> ``x86``, ``armv7l`` ->
    ``arm``, ``ppc64le`` -> ``powerpc64``: Rust's names, any other lowercased."""
    key = name.strip().lower()
    return _ARCH.get(key, key)


def cpu_total() -> int:
    """Whole CPU cores this process may use (0 when unknown)."""
    try:
        return len(os.sched_getaffinity(0))  # type: ignore[attr-defined]
    except (AttributeError, OSError):
        return os.cpu_count() or 0


def memory_total_bytes() -> int:
    """Total physical memory in bytes (0 when unknown)."""
    try:
        pages = os.sysconf("SC_PHYS_PAGES")
        size = os.sysconf("SC_PAGE_SIZE")
        if pages > 0 and size > 0:
            return int(pages) * int(size)
    except (AttributeError, ValueError, OSError):
        pass
    return 0


def detect_profile(api_addr: str, labels: Mapping[str, str] | None = None, *,
                   os_name: str | None = None, arch: str | None = None,
                   cpus: int | None = None, memory_bytes: int | None = None
                   ) -> WorkerProfile:
    """This machine's profile; every fact may be overridden. An OS or architecture
    ``platform`` cannot name is registered as ``unknown`` with a warning (override it)."""
    wire_os = normalize_os(os_name if os_name is not None else platform.system())
    wire_arch = normalize_arch(arch if arch is not None else platform.machine())
    for what, value in (("OS", wire_os), ("architecture", wire_arch)):
        if not value:
            log.warning("this machine's %s is unknown; registering it as 'unknown'", what)
    wire_os, wire_arch = wire_os or "unknown", wire_arch or "unknown"
    return WorkerProfile(
        api_addr=api_addr, os=wire_os, arch=wire_arch, labels=dict(labels or {}),
        cpu_total=min(cpu_total() if cpus is None else cpus, 2**32 - 1),
        memory_total_bytes=memory_total_bytes() if memory_bytes is None else memory_bytes)
