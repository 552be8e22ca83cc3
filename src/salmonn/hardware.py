"""What this machine can do, read once where a choice depends on it: physical cores, the CPU's feature flags,
whether bf16 is native, and a one-line description for benchmark outputs. No torch at import time."""

from __future__ import annotations

import os


def physical_cores() -> int:
    """Physical cores this process may run on (hyper-threads counted once); os.cpu_count() when unknown."""
    try:
        allowed = os.sched_getaffinity(0)
    except AttributeError:  # not Linux
        return os.cpu_count() or 1
    cores = set()
    for cpu in allowed:
        try:
            base = f"/sys/devices/system/cpu/cpu{cpu}/topology"
            with open(f"{base}/core_id") as f, open(f"{base}/physical_package_id") as g:
                cores.add((f.read().strip(), g.read().strip()))
        except OSError:
            return len(allowed)
    return max(1, len(cores))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux /proc/cpuinfo; empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((set(line.split(":", 1)[1].split()) for line in f if line.startswith("flags")), set())
    except OSError:
        return set()


def native_bf16() -> bool:
    """Whether this CPU multiplies bf16 natively (AVX512-BF16 or AMX-BF16); elsewhere bf16 is emulated and
    slower than float32, so nothing here ever picks bf16 on such a CPU."""
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def machine_line() -> str:
    """CPU model, cores, the vector extensions that matter here and torch's kernel level, in one line."""
    import platform
    import torch
    model = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as f:
            model = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), model)
    except OSError:
        pass
    flags = [f for f in ("avx2", "avx512f", "avx512_bf16", "amx_bf16") if f in cpu_flags()]
    return (f"{model}, {os.cpu_count()} logical CPUs / {physical_cores()} cores, flags {' '.join(flags) or 'none'}, "
            f"torch {torch.__version__} ({torch.backends.cpu.get_cpu_capability()} kernels)")
