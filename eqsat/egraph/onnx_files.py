"""The weights of ONNX files: read in place and written without copies, at the protobuf wire
level; and what the pipeline does with a model read that way (map, hash, check, materialize).

Consumes the bytes of an ``.onnx`` file and produces a ModelProto *skeleton*; consumes a
skeleton plus numpy weights and produces the bytes of an ``.onnx`` file. :mod:`.onnx_io` reads
and writes models through it.

Why: protobuf keeps every tensor's bytes inside the message, so ``onnx.load`` of VGG-19 copies
548 MB into the proto, ``numpy_helper.to_array`` copies them again into numpy, and writing
copies them into a proto (``from_array``) and once more into one serialized string. Here
:func:`read_skeleton` scans the file's wire format (memory-mapped, nothing copied), parses
only what is left once each large embedded initializer's ``raw_data`` is cut out, and turns
those initializers into standard ONNX external-data references *into the file itself*
(``location`` = the file's name, ``offset``/``length`` of the bytes). The skeleton is a valid
ONNX model beside its file; its weights are memory-mapped on demand. :func:`write_inline` does
the reverse: it streams the skeleton's fields and each weight's buffer to the file, writing the
length prefixes protobuf needs by hand, so the bytes go from numpy to disk once.

Only top-level graph initializers whose ``raw_data`` is at least ``min_bytes`` long and holds
exactly ``prod(dims) * itemsize`` bytes of a fixed-size numeric type are cut out; everything
else (small tensors, typed ``float_data`` fields, packed 4-bit types, subgraphs) stays as
protobuf parsed it. ONNX stores raw data little-endian; on a big-endian machine nothing is cut.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import sys
from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np
import onnx
import onnx.checker
import onnx.helper
import onnx.numpy_helper

from eqsat.errors import InputError

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5
MODEL_GRAPH, GRAPH_INITIALIZER, TENSOR_RAW_DATA = 7, 5, 9
# dtypes whose raw_data is exactly prod(dims) * itemsize bytes, little-endian
PLAIN_DTYPES = frozenset("float16 float32 float64 int8 int16 int32 int64 uint8 uint16 uint32 "
                         "uint64 bool complex64 complex128".split())  # fmt: skip


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        b = buf[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        if b < 0x80:
            return value, pos
        shift += 7
        if shift > 63:
            raise ValueError("malformed varint")


def encode_varint(n: int) -> bytes:
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def _tag(field: int, wire: int) -> bytes:
    return encode_varint(field << 3 | wire)


def _fields(buf, start: int, end: int) -> Iterator[tuple[int, int, int, int, int]]:
    """(field number, wire type, field start, value start, value end) of a message's fields."""
    pos = start
    while pos < end:
        field_start = pos
        key, pos = _varint(buf, pos)
        number, wire = key >> 3, key & 7
        if wire == _VARINT:
            _, value_end = _varint(buf, pos)
        elif wire == _I64:
            value_end = pos + 8
        elif wire == _I32:
            value_end = pos + 4
        elif wire == _LEN:
            length, pos = _varint(buf, pos)
            value_end = pos + length
        else:  # groups (3, 4) are not used by onnx.proto
            raise ValueError(f"unsupported wire type {wire}")
        if value_end > end:
            raise ValueError("truncated message")
        yield number, wire, field_start, pos, value_end
        pos = value_end


def _strip_tensor(buf, start: int, end: int, min_bytes: int) -> tuple[bytes, tuple[int, int]]:
    """The tensor's bytes without its raw_data field, and that field's (offset, length); or
    (b"", (0, 0)) when there is no single raw_data field of at least min_bytes."""
    raw = [f for f in _fields(buf, start, end) if f[0] == TENSOR_RAW_DATA and f[1] == _LEN]
    if len(raw) != 1 or raw[0][4] - raw[0][3] < min_bytes:
        return b"", (0, 0)
    _, _, fs, vs, ve = raw[0]
    return bytes(buf[start:fs]) + bytes(buf[ve:end]), (vs, ve - vs)


def _strip_graph(buf, start: int, end: int, min_bytes: int):
    out = bytearray()
    spans: list[tuple[int, int] | None] = []
    for number, wire, fs, vs, ve in _fields(buf, start, end):
        if number == GRAPH_INITIALIZER and wire == _LEN:
            meta, span = _strip_tensor(buf, vs, ve, min_bytes)
            if span[1]:
                out += _tag(GRAPH_INITIALIZER, _LEN) + encode_varint(len(meta)) + meta
                spans.append(span)
                continue
            spans.append(None)
        out += buf[fs:ve]
    return bytes(out), spans


def read_skeleton(path: Path, min_bytes: int) -> onnx.ModelProto | None:
    """The model in ``path`` with its large embedded weights turned into external-data
    references to their bytes in the file itself; None when the file's layout is not the
    plain one this handles (the caller then reads it with ``onnx.load``). DecodeError (from
    protobuf) or ValueError when the file is not a protobuf message."""
    if sys.byteorder != "little" or path.stat().st_size == 0:
        return None
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        out = bytearray()
        spans = None
        for number, wire, fs, vs, ve in _fields(buf, 0, len(buf)):
            if number == MODEL_GRAPH and wire == _LEN:
                if spans is not None:
                    return None  # two graph fields (protobuf would merge them): not handled
                graph, spans = _strip_graph(buf, vs, ve, min_bytes)
                out += _tag(MODEL_GRAPH, _LEN) + encode_varint(len(graph)) + graph
            else:
                out += buf[fs:ve]
        model = onnx.ModelProto.FromString(bytes(out))
        if spans is None or len(spans) != len(model.graph.initializer):
            return None
        for t, span in zip(model.graph.initializer, spans, strict=True):
            if span is None:
                continue
            if _plain_nbytes(t) != span[1] or t.data_location == onnx.TensorProto.EXTERNAL:
                t.raw_data = bytes(buf[span[0] : span[0] + span[1]])  # an odd one: keep inline
                continue
            t.data_location = onnx.TensorProto.EXTERNAL
            for k, v in (("location", path.name), ("offset", span[0]), ("length", span[1])):
                t.external_data.add(key=k, value=str(v))
    return model


def _plain_nbytes(t: onnx.TensorProto) -> int:
    """prod(dims) * itemsize for a fixed-size numeric dtype; -1 for the others."""
    try:
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    except (KeyError, TypeError, ValueError):
        return -1
    if dtype.name not in PLAIN_DTYPES:
        return -1
    return int(np.prod(t.dims, dtype=np.int64)) * dtype.itemsize


def write_inline(
    model: onnx.ModelProto, path: Path, weights: Mapping[str, np.ndarray], pending: set[str]
) -> None:
    """Write ``model`` to ``path`` with the initializers named in ``pending`` (external
    references in ``model``) embedded as raw_data taken from ``weights``, streamed from each
    array's buffer. The initializers keep their order; the file is a normal ONNX file."""
    if sys.byteorder != "little":
        raise ValueError("write_inline writes little-endian raw data only")
    head = onnx.ModelProto()
    head.CopyFrom(model)
    head.ClearField("graph")
    graph = onnx.GraphProto()
    graph.CopyFrom(model.graph)
    del graph.initializer[:]
    pieces: list[bytes | memoryview] = []
    for t in model.graph.initializer:
        if t.name not in pending:
            b = t.SerializeToString()
            pieces.append(_tag(GRAPH_INITIALIZER, _LEN) + encode_varint(len(b)) + b)
            continue
        meta = onnx.TensorProto()
        meta.CopyFrom(t)
        meta.ClearField("data_location")
        del meta.external_data[:]
        arr = np.ascontiguousarray(weights[t.name])
        data = memoryview(arr.reshape(-1).view(np.uint8))
        m = meta.SerializeToString()
        raw_head = _tag(TENSOR_RAW_DATA, _LEN) + encode_varint(data.nbytes)
        size = len(m) + len(raw_head) + data.nbytes
        pieces.append(_tag(GRAPH_INITIALIZER, _LEN) + encode_varint(size) + m + raw_head)
        pieces.append(data)
    g = graph.SerializeToString()
    graph_len = len(g) + sum(p.nbytes if isinstance(p, memoryview) else len(p) for p in pieces)
    with open(path, "wb") as f:
        f.write(head.SerializeToString())
        f.write(_tag(MODEL_GRAPH, _LEN) + encode_varint(graph_len))
        f.write(g)
        for p in pieces:
            f.write(p)


# ------------------------------------------------------------------ weights of loaded models


def external_ref(t: onnx.TensorProto) -> tuple[str, int, int]:
    ext = {e.key: e.value for e in t.external_data}
    n = int(np.prod(t.dims, dtype=np.int64))
    itemsize = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type)).itemsize
    return ext.get("location", ""), int(ext.get("offset", 0)), int(ext.get("length", n * itemsize))


def read_tensor(
    t: onnx.TensorProto, base_dir: Path | None, maps: dict[Path, np.ndarray] | None = None
) -> np.ndarray:
    """A weight as a numpy array; external data is a read-only view of its file, memory-mapped
    once per file (``maps`` holds the maps of one import)."""
    if t.data_location != onnx.TensorProto.EXTERNAL:
        try:
            return onnx.numpy_helper.to_array(t)
        except (ValueError, TypeError) as e:  # the stored data does not fill the declared dims
            dims = [int(d) for d in t.dims]
            text = str(e).strip().splitlines()
            reason = text[0][:200] if text else type(e).__name__
            raise InputError(f"weight {t.name!r} of shape {dims}: {reason}") from e
    if base_dir is None:
        raise InputError(f"weight {t.name!r} is in an external file: load the model from a path")
    loc, offset, length = external_ref(t)
    dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
    shape = tuple(int(d) for d in t.dims)
    n = int(np.prod(shape, dtype=np.int64))
    if n == 0:
        return np.zeros(shape, dtype)
    maps = {} if maps is None else maps
    f = base_dir / loc
    if f not in maps:
        maps[f] = np.memmap(f, dtype=np.uint8, mode="r")
    return maps[f][offset : offset + n * dtype.itemsize].view(dtype).reshape(shape)


def external_weights(model: onnx.ModelProto, base_dir: Path | None) -> dict[str, np.ndarray]:
    """The initializers of ``model`` whose bytes are outside the proto (in the model file itself
    or in data files), as read-only memory-mapped arrays."""
    maps: dict[Path, np.ndarray] = {}
    return {
        t.name: read_tensor(t, base_dir, maps)
        for t in model.graph.initializer
        if t.data_location == onnx.TensorProto.EXTERNAL
    }


def digest(model: onnx.ModelProto, base_dir: Path | None) -> bytes:
    """sha256 of the model and of its external weights' bytes (read in place)."""
    h = hashlib.sha256(model.SerializeToString())
    for name, w in external_weights(model, base_dir).items():
        h.update(name.encode())
        h.update(bytes_view(w))
    return h.digest()


def differing_weight(
    model: onnx.ModelProto, base_dir: Path, weights: Mapping[str, np.ndarray]
) -> str | None:
    """The name of the first external initializer of ``model`` (a file as :func:`load_model`
    read it) whose bytes in the file differ from ``weights[name]``, or None when all match.
    The file is read in chunks, not mapped: checking a file just written costs no memory."""
    chunk = 1 << 24
    buf = bytearray(chunk)
    for t in model.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        loc, offset, length = external_ref(t)
        w = weights.get(t.name)
        dtype = np.dtype(onnx.helper.tensor_dtype_to_np_dtype(t.data_type))
        if w is None or w.dtype != dtype or w.shape != tuple(t.dims) or w.nbytes != length:
            return t.name
        want = bytes_view(w)
        with open(base_dir / loc, "rb") as f:
            f.seek(offset)
            for start in range(0, length, chunk):
                n = f.readinto(memoryview(buf)[: min(chunk, length - start)])
                if n != min(chunk, length - start) or buf[:n] != want[start : start + n]:
                    return t.name
    return None


def materialize(
    model: onnx.ModelProto,
    base_dir: str | os.PathLike | None = None,
    weights: Mapping[str, np.ndarray] | None = None,
) -> onnx.ModelProto:
    """A self-contained copy of ``model``: every external initializer's bytes inside the proto,
    read from ``weights`` (by name) or else from the files under ``base_dir``. Costs a copy of
    the weights; for APIs that hand a ModelProto to someone else (tests, reports)."""
    ext = [t for t in model.graph.initializer if t.data_location == onnx.TensorProto.EXTERNAL]
    if not ext:
        return model
    out = onnx.ModelProto()
    out.CopyFrom(model)
    base = Path(base_dir) if base_dir is not None else None
    maps: dict[Path, np.ndarray] = {}
    for t in out.graph.initializer:
        if t.data_location != onnx.TensorProto.EXTERNAL:
            continue
        w = weights[t.name] if weights is not None and t.name in weights else None
        w = read_tensor(t, base, maps) if w is None else w
        t.CopyFrom(onnx.numpy_helper.from_array(np.asarray(w), t.name))
    return out


def bytes_view(w: np.ndarray) -> memoryview:
    """The bytes of an array without a copy where it is contiguous (memory-mapped weights)."""
    return memoryview(np.ascontiguousarray(w).reshape(-1).view(np.uint8))


def check_file(model: onnx.ModelProto, path: Path) -> None:
    """onnx.checker (full check) on ``model``, the file ``path`` as ``onnx_io.load_model`` read
    it: its large weights are references into ``path``, so the checker reads the structure and
    checks that the references resolve, without loading the weights. ValidationError."""
    probe = path.with_name(f".{path.name}.check.onnx")
    try:
        onnx.save_model(model, str(probe))
        onnx.checker.check_model(str(probe), full_check=True)
    finally:
        probe.unlink(missing_ok=True)
