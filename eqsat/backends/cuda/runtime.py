"""Loading and launching a model's PTX through the CUDA driver API. UNTESTED: it was written on
a machine without a GPU (issue 20); ``benchmarks/gpu_check.sh`` is the first thing to run on
one. Only the refusal without a driver is tested.

Consumes a :class:`~eqsat.backends.cuda.program.CudaProgram` (its kernels' PTX and launch
configurations) and host arrays; produces the output arrays. A ctypes layer over
``libcuda.so.1`` (CODEGEN_NOTES, "NVPTX": "the driver API through cuda-bindings ... or a small
ctypes layer over libcuda.so.1"), so that it needs no package whose major version must match
the driver's; no kernel library (cuBLAS, cuDNN) is loaded.

- :class:`Device`: the driver initialized once, device 0's primary context made current, its
  compute capability choosing the PTX (sm_90 code from compute capability 9.0 up, else sm_80;
  below 8.0 refused); ``cuModuleLoadData`` JIT-compiles the PTX.
- :class:`Session`: a program's modules and functions, its weights copied to device memory once
  (the first run), a stream per run; temporaries and outputs are allocated per run (sizes may
  change between runs) and freed after it; outputs are copied back after the stream syncs.
- Kernel arguments: one ``CUdeviceptr`` per buffer param, then the int64 size params, in the
  order :mod:`eqsat.backends.cuda.codegen` gives them; the grid is the launch's expression
  evaluated over the run's sizes (:func:`grid_size`).
"""

from __future__ import annotations

import ctypes
import functools
import math

import numpy as np

from eqsat.backends.cuda import NO_GPU
from eqsat.errors import InputError
from eqsat.lower.loops import BinaryOp, BinOp, Const, Expr, LoopProgram, Var

_COMPUTE_MAJOR, _COMPUTE_MINOR = 75, 76  # CUdevice_attribute


def grid_size(e: Expr, sizes: dict[str, int]) -> int:
    """An int64 launch expression (constants, size params, + - * // % min max) evaluated."""
    if isinstance(e, Const):
        return int(e.value)
    if isinstance(e, Var):
        return int(sizes[e.name])
    if isinstance(e, BinOp):
        a, b = grid_size(e.a, sizes), grid_size(e.b, sizes)
        ops = {
            BinaryOp.ADD: lambda: a + b,
            BinaryOp.SUB: lambda: a - b,
            BinaryOp.MUL: lambda: a * b,
            BinaryOp.FLOORDIV: lambda: a // b if b else 0,
            BinaryOp.MOD: lambda: a % b if b else 0,
            BinaryOp.MIN: lambda: min(a, b),
            BinaryOp.MAX: lambda: max(a, b),
        }
        if e.op in ops:
            return ops[e.op]()
    raise ValueError(f"not a launch expression: {e}")


class Device:
    """The CUDA driver and device 0 (InputError in one line when there is no driver)."""

    def __init__(self):
        try:
            self.lib = ctypes.CDLL("libcuda.so.1")
        except OSError as e:
            raise InputError(f"cannot run CUDA code here: no CUDA driver ({e}); {NO_GPU}") from None
        self.check(self.lib.cuInit(0), "cuInit")
        self.dev = ctypes.c_int()
        self.check(self.lib.cuDeviceGet(ctypes.byref(self.dev), 0), "cuDeviceGet")
        self.ctx = ctypes.c_void_p()
        self.check(
            self.lib.cuDevicePrimaryCtxRetain(ctypes.byref(self.ctx), self.dev), "primary context"
        )
        self.check(self.lib.cuCtxSetCurrent(self.ctx), "cuCtxSetCurrent")
        major, minor = (self.attribute(a) for a in (_COMPUTE_MAJOR, _COMPUTE_MINOR))
        if major < 8:
            raise InputError(f"GPU compute capability {major}.{minor}: eqsat's PTX needs 8.0+")
        self.arch = "sm_90" if major >= 9 else "sm_80"

    def check(self, rc: int, what: str) -> None:
        if rc != 0:
            name = ctypes.c_char_p()
            self.lib.cuGetErrorName(rc, ctypes.byref(name))
            raise RuntimeError(f"{what}: CUDA error {rc} ({(name.value or b'?').decode()})")

    def attribute(self, attr: int) -> int:
        v = ctypes.c_int()
        self.check(self.lib.cuDeviceGetAttribute(ctypes.byref(v), attr, self.dev), "attribute")
        return v.value

    def alloc(self, nbytes: int) -> ctypes.c_uint64:
        p = ctypes.c_uint64()
        self.check(
            self.lib.cuMemAlloc_v2(ctypes.byref(p), ctypes.c_size_t(max(nbytes, 1))), "alloc"
        )
        return p

    def free(self, p: ctypes.c_uint64) -> None:
        self.check(self.lib.cuMemFree_v2(p), "free")

    def upload(self, p: ctypes.c_uint64, a: np.ndarray) -> None:
        a = np.ascontiguousarray(a)
        if a.nbytes:
            self.check(
                self.lib.cuMemcpyHtoD_v2(
                    p, a.ctypes.data_as(ctypes.c_void_p), ctypes.c_size_t(a.nbytes)
                ),
                "copy to device",
            )

    def download(self, a: np.ndarray, p: ctypes.c_uint64) -> None:
        if a.nbytes:
            self.check(
                self.lib.cuMemcpyDtoH_v2(
                    a.ctypes.data_as(ctypes.c_void_p), p, ctypes.c_size_t(a.nbytes)
                ),
                "copy to host",
            )


@functools.cache
def device() -> Device:
    return Device()


class Session:
    """A CudaProgram loaded on the device: modules, functions, weights in device memory."""

    def __init__(self, cuda_program, weights: dict[str, np.ndarray]):
        self.dev = dev = device()
        self.program: LoopProgram = cuda_program.program
        self.kernels = cuda_program.kernels
        self.functions = []
        for gk in self.kernels:
            mod, fn = ctypes.c_void_p(), ctypes.c_void_p()
            ptx = gk.ptx[dev.arch].encode() + b"\0"
            dev.check(dev.lib.cuModuleLoadData(ctypes.byref(mod), ptx), f"load {gk.symbol}")
            dev.check(
                dev.lib.cuModuleGetFunction(ctypes.byref(fn), mod, gk.symbol.encode()),
                f"function {gk.symbol}",
            )
            self.functions.append(fn)
        self.weights = {}
        for b in self.program.weights:
            a = np.ascontiguousarray(weights[b.name], dtype=b.dtype)
            self.weights[b.name] = dev.alloc(a.nbytes)
            dev.upload(self.weights[b.name], a)

    def run(self, inputs: dict[str, np.ndarray], sizes: dict[str, int]) -> dict[str, np.ndarray]:
        dev, lib = self.dev, self.dev.lib
        ptrs = dict(self.weights)
        scratch, outputs = [], {}
        try:
            for b in self.program.buffers:
                if b.name in ptrs:
                    continue
                shape = b.sized(sizes)
                nbytes = math.prod(shape) * np.dtype(b.dtype).itemsize
                ptrs[b.name] = dev.alloc(nbytes)
                scratch.append(ptrs[b.name])
                if b.name in inputs:
                    dev.upload(ptrs[b.name], np.asarray(inputs[b.name], dtype=b.dtype))
                elif b in self.program.outputs:
                    outputs[b.name] = np.empty(shape, dtype=b.dtype)
            stream = ctypes.c_void_p()
            dev.check(lib.cuStreamCreate(ctypes.byref(stream), 0), "stream")
            self.launch(ptrs, sizes, stream)
            dev.check(lib.cuStreamSynchronize(stream), "synchronize")
            dev.check(lib.cuStreamDestroy_v2(stream), "stream destroy")
            for name, a in outputs.items():
                dev.download(a, ptrs[name])
        finally:
            for p in scratch:
                dev.free(p)
        return outputs

    def launch(self, ptrs: dict, sizes: dict[str, int], stream) -> None:
        """Launch every kernel in order on ``stream`` (not synchronized) with the device
        buffers ``ptrs`` (name -> pointer); ``run`` and the GEMM timing of
        benchmarks/gpu_check.py call it."""
        dev, lib = self.dev, self.dev.lib
        for gk, fn in zip(self.kernels, self.functions, strict=True):
            args = [ptrs[p.name] for p in gk.kernel.params]
            args += [ctypes.c_int64(sizes[s]) for s in gk.sizes]
            params = (ctypes.c_void_p * len(args))(
                *[ctypes.cast(ctypes.pointer(a), ctypes.c_void_p) for a in args]
            )
            grid = grid_size(gk.launch.grid, sizes)
            if grid == 0:
                continue
            dev.check(
                lib.cuLaunchKernel(
                    fn, ctypes.c_uint(grid), 1, 1, ctypes.c_uint(gk.launch.block), 1, 1,
                    0, stream, params, None,
                ),
                f"launch {gk.symbol}",
            )  # fmt: skip
