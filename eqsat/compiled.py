"""A compiled model: eqsat's own kernels for one ONNX model, runnable, and saved as one file.

Consumes a TensorGraph (optimized by the e-graph or not) and a target; produces a
:class:`CompiledModel` whose ``run(feeds)`` returns the outputs in the graph's order, like
``onnxruntime.InferenceSession.run(None, feeds)``. The graph is lowered to a LoopProgram
(:func:`eqsat.lower.lower.lower`) and compiled by a backend: ``llvm`` (native code for this CPU,
:mod:`eqsat.backends.llvm.runtime`) or ``ref`` (the numpy interpreter, the oracle; not saved).
Every kernel of an ``llvm`` model is code eqsat generated: numpy only allocates the buffers.

The artifact (``save`` / :func:`load`) is one zip file, stored uncompressed (weights are floats,
which do not compress, and the object loads without inflating):

- ``manifest.json``: format version, eqsat version, target, the CPU it was compiled for and the
  features its code needs, the model's inputs and outputs (name, dtype, shape with symbols),
  the program's buffers in signature order, the graph-to-buffer names, the lowering report;
- ``code.o``: the object code (relocatable; loaded with MCJIT like a cache hit);
- ``weights.npz``: the weights by buffer name;
- ``program.txt``: the printed LoopProgram, for people.

Loading on a CPU that lacks a feature the code was compiled with is an InputError naming the
features (the code would die of an illegal instruction otherwise). Files are written atomically.
"""

from __future__ import annotations

import functools
import io
import json
import os
import tempfile
import zipfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from eqsat.egraph.ir import TensorGraph
from eqsat.errors import InputError
from eqsat.lower.indexing import size_values
from eqsat.lower.loops import Buffer, BufferKind, LoopProgram
from eqsat.lower.schedule import ScheduleTarget
from eqsat.version import __version__

FORMAT = 1
BACKENDS = ("llvm", "ref", "cuda")  # cuda: PTX only, nothing runs it yet


@dataclass(frozen=True)
class Port:
    """One input or output of the model: its graph name, buffer name, dtype and shape."""

    name: str
    buffer: str
    dtype: str
    shape: tuple  # ints and symbols

    def to_json(self) -> dict:
        return {"name": self.name, "buffer": self.buffer, "dtype": self.dtype,
                "shape": list(self.shape)}  # fmt: skip


class CompiledModel:
    """A model compiled for ``target``: ``run(feeds)`` -> outputs in the graph's order."""

    def __init__(
        self,
        program: LoopProgram,
        executable,
        weights: Mapping[str, np.ndarray],
        inputs: Sequence[Port],
        outputs: Sequence[Port],
        target: str,
        report: dict | None = None,
        features: str = "",
        cpu: str = "",
        products: Sequence[str] = (),
    ):
        self.program, self.executable, self.target = program, executable, target
        self.weights = dict(weights)
        self.inputs, self.outputs = list(inputs), list(outputs)
        self.report = report or {}
        self.features, self.cpu = features, cpu
        self.products = tuple(products)  # symbolic product dims the program has a size for
        self._prepared = hasattr(executable, "prepare")  # llvm: weights bound once
        if self._prepared:
            executable.prepare(self.weights)

    @property
    def input_names(self) -> list[str]:
        return [p.name for p in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [p.name for p in self.outputs]

    def _bind(self, feeds: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, int]]:
        unknown = sorted(set(feeds) - set(self.input_names))
        if unknown:
            raise InputError(f"no input named {unknown[0]!r}; inputs: {self.input_names}")
        env: dict[str, int] = {}
        bound = {} if self._prepared else dict(self.weights)
        for p in self.inputs:
            if p.name not in feeds:
                raise InputError(f"input {p.name!r} is missing")
            a = np.asarray(feeds[p.name])
            if a.dtype != np.dtype(p.dtype):
                raise InputError(f"input {p.name!r}: dtype {a.dtype}, the model takes {p.dtype}")
            if a.ndim != len(p.shape):
                raise InputError(f"input {p.name!r}: rank {a.ndim}, the model takes {p.shape}")
            for d, n in zip(p.shape, a.shape, strict=True):
                if isinstance(d, int) and d != n:
                    raise InputError(
                        f"input {p.name!r}: shape {a.shape}, the model takes {p.shape}"
                    )
                if isinstance(d, str) and env.setdefault(d, n) != n:
                    raise InputError(f"input {p.name!r}: dim {d} is {n} here, {env[d]} elsewhere")
            bound[p.buffer] = a
        env.update(size_values(self.products, env))  # products of symbols (batch*8 -> batch_x8)
        return bound, env

    def run(self, feeds: Mapping[str, np.ndarray]) -> list[np.ndarray]:
        """The outputs, in the model's order, for ``feeds`` (input name -> array)."""
        bound, env = self._bind(feeds)
        run = self.executable.run_inputs if self._prepared else self.executable.run
        out = run(bound, env)
        return [out[p.buffer] for p in self.outputs]

    __call__ = run

    def manifest(self) -> dict:
        return {
            "format": FORMAT,
            "eqsat": __version__,
            "target": self.target,
            "cpu": self.cpu,
            "features": self.features,
            "inputs": [p.to_json() for p in self.inputs],
            "outputs": [p.to_json() for p in self.outputs],
            "buffers": [
                {"name": b.name, "shape": list(b.shape), "dtype": b.dtype, "kind": b.kind.value}
                for b in self.program.buffers
            ],
            "program": self.program.name,
            "products": list(self.products),
            "report": self.report,
        }

    def save(self, path: str | os.PathLike) -> Path:
        """Write the artifact (atomically: a failed save leaves no file)."""
        if self.target != "llvm":
            raise InputError(f"a {self.target} model cannot be saved (only llvm code is)")
        from eqsat.lower.printer import print_program

        path = Path(path)
        weights = io.BytesIO()
        np.savez(weights, **self.weights)
        fd, tmp = tempfile.mkstemp(prefix=".eqsat-", suffix=".tmp", dir=path.parent or ".")
        try:
            with os.fdopen(fd, "wb") as f, zipfile.ZipFile(f, "w", zipfile.ZIP_STORED) as z:
                z.writestr("manifest.json", json.dumps(self.manifest(), indent=1))
                z.writestr("code.o", self.executable.object)
                z.writestr("weights.npz", weights.getvalue())
                z.writestr("program.txt", print_program(self.program))
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes it private; a model is not secret
            os.replace(tmp, path)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return path


def build(
    graph: TensorGraph,
    target: str = "llvm",
    threads: int | None = None,
    use_cache: bool = True,
    precision: str = "fp32",
    tuning=None,
    layouts: bool = True,
) -> CompiledModel:
    """Lower ``graph`` and compile it for ``target`` (one of :data:`BACKENDS`); ``precision``
    other than fp32 (:mod:`eqsat.verify.precision`) only for cuda (tensor cores). ``tuning``: a
    :class:`~eqsat.autoschedule.log.TuningLog` whose best schedule on this machine replaces
    the default for each kernel it has one for (llvm only; the report counts them).
    ``layouts=False`` keeps every temp row-major (llvm: no blocked channels between direct
    convs, :mod:`eqsat.backends.llvm.layout`; for before/after measurements)."""
    from eqsat.lower.lower import lower

    if target not in BACKENDS:
        raise InputError(f"unknown backend {target!r}; known: {', '.join(BACKENDS)}")
    from eqsat.lower.gpu_mma import check_precision

    check_precision(precision, target)
    lowered = lower(graph)
    program = lowered.program
    cpu = features = ""
    if target == "llvm":
        from eqsat.backends.llvm.capabilities import Capabilities
        from eqsat.backends.llvm.runtime import compile as llvm_compile

        caps = Capabilities.host()
        chosen = tuning.choices(program, threads or caps.cores) if tuning is not None else {}
        program = schedule_llvm(program, threads, chosen, layouts=layouts)
        executable = llvm_compile(program, threads=threads, use_cache=use_cache)
        cpu, features = caps.cpu_name, caps.features
    elif target == "cuda":
        from eqsat.backends.cuda.program import CudaProgram
        from eqsat.lower.gpu_schedule import schedule_program as gpu_schedule

        # default GPU schedules (lower/gpu_schedule); tensor cores at precision != fp32
        program = gpu_schedule(program, precision=precision)
        executable = CudaProgram(program)
        cpu = ",".join(executable.archs)
    else:
        from eqsat.backends import ref

        executable = ref.compile(program)
    types = graph.types
    inputs = [
        Port(v, lowered.names[v], types[v].dtype, tuple(types[v].shape)) for v in graph.inputs
    ]
    outputs = [
        Port(v, lowered.outputs[v], types[v].dtype, tuple(types[v].shape)) for v in graph.outputs
    ]
    report = _report(lowered)
    if target == "llvm":
        report["tuned_kernels"] = len(chosen)
    return CompiledModel(
        program, executable, lowered.weights, inputs, outputs, target, report, features,
        cpu, lowered.products,
    )  # fmt: skip


def schedule_llvm(program: LoopProgram, threads: int | None = None,
                  chosen: Mapping | None = None, layouts: bool = True) -> LoopProgram:
    """``program`` (as lowered) scheduled for the LLVM backend on this host: contractions
    tensorized to the GEMM or direct-conv drivers (``chosen``: ``{kernel name: schedule}``, a
    tuning log's, replayed instead of the default), the temps between direct convs kept in
    blocked channels (NCHW16c; ``layouts=False``: all row-major; kernels with a logged schedule
    are left as logged), int8 GEMMs to the VNNI micro-kernel where the host has one, the
    default heuristic schedules for the other kernels. One function for
    :func:`build` and the auto-scheduler's measurements, so a kernel is timed as it is built."""
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.backends.llvm.layout import block_layouts
    from eqsat.backends.llvm.tensorize_targets import select
    from eqsat.lower.default_schedule import schedule_program
    from eqsat.lower.schedule_gemm import tensorize_contractions
    from eqsat.lower.schedule_int8 import tensorize_int8

    caps, chosen = Capabilities.host(), dict(chosen or {})
    program = tensorize_contractions(program, chosen=chosen)
    if layouts:
        program = block_layouts(program, caps.vector_width, fixed=chosen.keys())
    program = tensorize_int8(program, select(caps, ("uint8", "int8")) is not None)
    return schedule_program(program, target_caps(caps, threads), chosen)


def target_caps(caps, threads: int | None = None) -> ScheduleTarget:
    """What schedulers may read of a backend's ``Capabilities`` (they never see its name)."""
    return ScheduleTarget(
        vector_width=caps.vector_width,
        threads=threads or caps.cores,
        scalar_calls=caps.scalar_calls,
    )


def _report(lowered) -> dict:
    r = lowered.report
    return {
        "kernels": len(r.kernels),
        "inlined": len(r.inlined),
        "peak_temp_bytes": r.peak_temp_bytes,
        "unshared_temp_bytes": r.unshared_temp_bytes,
    }


def load(path: str | os.PathLike, threads: int | None = None) -> CompiledModel:
    """A model saved by :meth:`CompiledModel.save`; InputError when the file is not one, or this
    CPU lacks a feature its code needs."""
    from eqsat.backends.llvm.capabilities import Capabilities
    from eqsat.backends.llvm.runtime import CompiledProgram

    path = Path(path)
    try:
        with zipfile.ZipFile(path) as z:
            manifest = json.loads(z.read("manifest.json"))
            obj = z.read("code.o")
            with np.load(io.BytesIO(z.read("weights.npz"))) as npz:
                weights = {k: npz[k] for k in npz.files}
    except FileNotFoundError:
        raise InputError(f"{path}: no such file") from None
    except (zipfile.BadZipFile, KeyError, ValueError, OSError) as e:
        raise InputError(f"{path} is not an eqsat compiled model ({e})") from None
    if manifest.get("format") != FORMAT:
        raise InputError(
            f"{path}: artifact format {manifest.get('format')}, this eqsat reads {FORMAT}"
        )
    caps = Capabilities.host()
    host = {f[1:] for f in caps.features.split(",") if f.startswith("+")}
    need = {f[1:] for f in manifest["features"].split(",") if f.startswith("+")}
    missing = sorted(need - host)
    if missing:
        raise InputError(
            f"{path} was compiled for {manifest['cpu']}; this CPU ({caps.cpu_name}) lacks "
            f"{', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}: compile it here"
        )
    buffers = tuple(
        Buffer(b["name"], tuple(b["shape"]), b["dtype"], BufferKind(b["kind"]))
        for b in manifest["buffers"]
    )
    program = LoopProgram(manifest["program"], buffers, ())
    executable = CompiledProgram(program, threads=threads, obj=obj)
    ports = {k: [Port(p["name"], p["buffer"], p["dtype"], tuple(p["shape"])) for p in manifest[k]]
             for k in ("inputs", "outputs")}  # fmt: skip
    return CompiledModel(
        program, executable, weights, ports["inputs"], ports["outputs"], "llvm",
        manifest.get("report"), manifest["features"], manifest["cpu"], manifest.get("products", ()),
    )  # fmt: skip


def emit(model: CompiledModel, what: str, folder: Path) -> list[Path]:
    """Write ``model``'s loop nests (``loops``: the printed LoopProgram), LLVM IR (``llvm``, as
    generated, before optimization) or assembly (``asm``, for this CPU; for a cuda model the PTX
    of each kernel for each architecture, ``<kernel>.<arch>.ptx``) into ``folder``."""
    from eqsat.lower.printer import print_program

    folder.mkdir(parents=True, exist_ok=True)
    name = model.program.name
    if what == "loops":
        files = {f"{name}.loops.txt": print_program(model.program)}
    elif model.target == "cuda":  # one file a kernel (and architecture)
        files = model.executable.files(what)
    elif model.target != "llvm" or not getattr(model.executable, "ir", ""):
        raise InputError(f"--emit {what}: only a model compiled here for llvm has code to show")
    elif what == "llvm":
        files = {f"{name}.ll": model.executable.ir}
    else:
        from eqsat.backends.llvm.jit import assembly

        files = {f"{name}.s": assembly(model.executable.ir)}
    written = []
    for fname, text in files.items():
        path = folder / fname
        path.write_text(text)
        written.append(path)
    return written


# ------------------------------------------------------------------------------ model cache


def cache_dir() -> Path:
    """Where compiled models are cached: ``models/`` in the user's cache folder
    (:func:`eqsat.paths.user_cache_dir`: ``$EQSAT_CACHE_DIR`` or ``~/.cache/eqsat``)."""
    from eqsat.paths import user_cache_dir

    return user_cache_dir() / "models"


def cache_key(model_bytes: bytes, settings: str) -> str:
    """sha256 of the model, the settings that change the code, eqsat's code and the CPU."""
    import hashlib

    from eqsat.backends.llvm.capabilities import Capabilities

    h = hashlib.sha256(model_bytes)
    h.update(f"\n{settings}\n{code_version()}\n{Capabilities.host().key()}".encode())
    return h.hexdigest()


@functools.cache
def code_version() -> str:
    """A digest of eqsat's own source and data files: a cached model is only reused by the
    code that made it (the version string alone would serve stale code to a developer whose
    checkout changed; hashing the package takes a few milliseconds, once per process)."""
    import hashlib

    root = Path(__file__).resolve().parent
    h = hashlib.sha256(f"{__version__}\n{FORMAT}".encode())
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


def store(model: CompiledModel, key: str) -> None:
    """Keep a verified model in the cache; a cache that cannot be written is skipped."""
    try:
        folder = cache_dir()
        folder.mkdir(parents=True, exist_ok=True)
        model.save(folder / f"{key}.eqsat")
    except OSError:
        pass


def cached(key: str, threads: int | None = None) -> CompiledModel | None:
    """The model cached under ``key``, or None (a damaged entry counts as a miss)."""
    path = cache_dir() / f"{key}.eqsat"
    if not path.exists():
        return None
    try:
        return load(path, threads=threads)
    except InputError:
        return None
