"""What the run's CUDA devices can do, asked without initialising CUDA.

lab decides a run's precision before the Trainer exists. `torch.cuda.get_device_capability()`
would create a CUDA context in the launching process, and fork-based strategies (ddp_fork,
ddp_notebook) then refuse to start. The driver's management library (NVML, libnvidia-ml,
installed with every NVIDIA driver) answers the same questions without a context, so it is
asked first, through ctypes (no extra package). Without NVML, torch is asked and a note
says that CUDA is now initialised.
"""

from __future__ import annotations

import ctypes
import os
from dataclasses import dataclass, field
from functools import lru_cache


@dataclass(frozen=True)
class CudaDevice:
    """One visible CUDA device as NVML (or torch) reports it."""

    name: str
    capability: tuple[int, int]
    total_bytes: int
    uuid: str = field(default="", compare=False)  # GPU-…, what CUDA_VISIBLE_DEVICES may name

    @property
    def has_bf16(self) -> bool:
        """bf16 tensor cores and kernels: Ampere (compute capability 8.0) and later."""
        return self.capability[0] >= 8


def cuda_device_count() -> int:
    """Visible CUDA devices, counted the fork-safe way Lightning counts them (NVML first). On Linux
    without the NVIDIA driver's libnvidia-ml the answer is 0 at once, without importing torch and
    lightning (about 10 s on 2 cores where nothing has imported them yet: a sweep's launcher)."""
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libnvidia-ml.so.1")
        except OSError:
            return 0
    from lightning.fabric.accelerators.cuda import num_cuda_devices

    return num_cuda_devices()


class _NvmlMemory(ctypes.Structure):
    """nvmlMemory_t: bytes of device memory."""

    _fields_ = [("total", ctypes.c_ulonglong), ("free", ctypes.c_ulonglong), ("used", ctypes.c_ulonglong)]


def _nvml_devices() -> list[CudaDevice] | None:
    """Every device NVML sees, in NVML's (PCI bus) order; None without NVML."""
    try:
        lib = ctypes.CDLL("libnvidia-ml.so.1")
    except OSError:
        return None
    if lib.nvmlInit_v2() != 0:
        return None
    try:
        count = ctypes.c_uint()
        if lib.nvmlDeviceGetCount_v2(ctypes.byref(count)) != 0:
            return None
        found = []
        for i in range(count.value):
            handle = ctypes.c_void_p()
            if lib.nvmlDeviceGetHandleByIndex_v2(i, ctypes.byref(handle)) != 0:
                return None
            major, minor = ctypes.c_int(), ctypes.c_int()
            name, uuid = ctypes.create_string_buffer(96), ctypes.create_string_buffer(96)
            memory = _NvmlMemory()
            if (lib.nvmlDeviceGetCudaComputeCapability(handle, ctypes.byref(major), ctypes.byref(minor)) != 0
                    or lib.nvmlDeviceGetName(handle, name, 96) != 0 or lib.nvmlDeviceGetUUID(handle, uuid, 96) != 0
                    or lib.nvmlDeviceGetMemoryInfo(handle, ctypes.byref(memory)) != 0):
                return None
            found.append(CudaDevice(name.value.decode(), (major.value, minor.value), int(memory.total),
                                    uuid.value.decode()))
        return found
    finally:
        lib.nvmlShutdown()


def visible(devices: list[CudaDevice], spec: str | None) -> list[CudaDevice]:
    """The devices CUDA_VISIBLE_DEVICES=`spec` leaves visible (indices or GPU-UUID prefixes, in the
    order given, stopping at the first invalid entry as CUDA does); all of them when unset.
    Indices are read in NVML's PCI-bus order (CUDA's own order when CUDA_DEVICE_ORDER=PCI_BUS_ID);
    lab only asks whether every visible device has bf16, which the order does not change."""
    if spec is None:
        return list(devices)
    chosen = []
    for entry in (e.strip() for e in spec.split(",")):
        if entry.isdigit() and int(entry) < len(devices):
            chosen.append(devices[int(entry)])
        elif entry.startswith("GPU-"):
            match = [d for d in devices if d.uuid.startswith(entry)]
            if len(match) != 1:
                break
            chosen.append(match[0])
        else:
            break  # MIG-…, -1 or an index past the end: CUDA ignores it and everything after
    return chosen


@lru_cache(maxsize=1)
def cuda_devices() -> tuple[CudaDevice, ...]:
    """The visible CUDA devices; empty without one. NVML when it answers, otherwise torch (which
    initialises CUDA in this process: said once, since fork-based DDP cannot start after it)."""
    if cuda_device_count() == 0:
        return ()
    found = _nvml_devices()
    if found is not None:
        shown = visible(found, os.environ.get("CUDA_VISIBLE_DEVICES"))
        if shown:
            return tuple(shown)
    import torch

    print("note: NVML (libnvidia-ml.so.1) did not answer; asked torch for the GPUs' compute capability, "
          "which initialises CUDA in this process (trainer.strategy=ddp_fork cannot start after it)")
    return tuple(CudaDevice(torch.cuda.get_device_name(i), tuple(torch.cuda.get_device_capability(i)),
                            int(torch.cuda.get_device_properties(i).total_memory))
                 for i in range(torch.cuda.device_count()))


def all_have_bf16() -> bool:
    """Whether every visible CUDA device runs bf16 natively (compute capability 8.0 or later); true
    with none visible (nothing to refuse: Lightning then stops with its own message)."""
    return all(d.has_bf16 for d in cuda_devices())


def describe() -> str:
    """`NVIDIA H200 (sm 9.0, 139.8 GiB)` for each visible device, or `no CUDA device`."""
    devices = cuda_devices()
    if not devices:
        return "no CUDA device"
    return "; ".join(f"{d.name} (sm {d.capability[0]}.{d.capability[1]}, {d.total_bytes / 2**30:.1f} GiB)"
                     for d in devices)


# Share of a GPU's free memory an in-memory dataset split may take: the rest is for the
# model, its activations and the allocator's slack.
DATA_SHARE_OF_FREE = 0.5


def room_for(nbytes: int, free_bytes: int) -> bool:
    """Whether a split of `nbytes` may move to a device with `free_bytes` free (DATA_SHARE_OF_FREE)."""
    return nbytes <= DATA_SHARE_OF_FREE * free_bytes


def free_bytes(device) -> int:
    """Free memory of a CUDA device now (the run's own process has CUDA by then)."""
    import torch

    return int(torch.cuda.mem_get_info(device)[0])
