"""What a worker says about itself when it registers (wire-types.md §7).

Owns: the ``WorkerProfile`` of this machine: the OS and CPU architecture from ``platform``
normalised to the wire names (``linux`` / ``windows`` / ``darwin``, ``x86_64`` /
``aarch64``), CPU cores and total memory (best effort: 0 when unknown). Pure apart from
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

_OS = {"linux": "linux", "windows": "windows", "win32": "windows", "cygwin": "windows",
       "darwin": "darwin", "macos": "darwin", "macosx": "darwin"}
_ARCH = {"x86_64": "x86_64", "amd64": "x86_64", "x64": "x86_64", "em64t": "x86_64",
         "aarch64": "aarch64", "arm64": "aarch64", "armv8": "aarch64", "armv8l": "aarch64",
         "aarch64_be": "aarch64"}


def normalize_os(name: str) -> str | None:
    """``Linux`` -> ``linux``, ``Darwin`` -> ``darwin``, ``Windows`` -> ``windows``; None
    for an OS the wire cannot name."""
    return _OS.get(name.strip().lower())


def normalize_arch(name: str) -> str | None:
    """``AMD64`` / ``x86_64`` -> ``x86_64``, ``arm64`` / ``aarch64`` -> ``aarch64``; None
    for an architecture the wire cannot name."""
    return _ARCH.get(name.strip().lower())


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
    """This machine's profile; every fact may be overridden. An OS or architecture the
    wire cannot name falls back to ``linux`` / ``x86_64`` with a warning (override it)."""
    system = os_name if os_name is not None else platform.system()
    wire_os = normalize_os(system)
    if wire_os is None:
        log.warning("OS %r has no wire name; registering as linux (pass os_name)", system)
        wire_os = "linux"
    machine = arch if arch is not None else platform.machine()
    wire_arch = normalize_arch(machine)
    if wire_arch is None:
        log.warning("architecture %r has no wire name; registering as x86_64 (pass arch)",
                    machine)
        wire_arch = "x86_64"
    return WorkerProfile(
        api_addr=api_addr, os=wire_os, arch=wire_arch, labels=dict(labels or {}),
        cpu_total=min(cpu_total() if cpus is None else cpus, 2**32 - 1),
        memory_total_bytes=memory_total_bytes() if memory_bytes is None else memory_bytes)
