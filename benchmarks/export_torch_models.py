"""Export torch models with random weights to ONNX, to try eqsat on real exporter output.

Not part of the test run: it needs PyTorch, which eqsat does not depend on. On these machines
torch 2.13.0 (CPU) installs for Python 3.11 only, so run it from a separate environment:

    python3.11 -m venv /tmp/torchenv && /tmp/torchenv/bin/pip install torch==2.13.0 onnx onnxscript
    /tmp/torchenv/bin/python benchmarks/export_torch_models.py OUTDIR [--tiny]

then `eqsat info/optimize/verify` the files in OUTDIR. The models are written out here in torch
(torchvision is not installable on these machines): a ResNet-18-style CNN, a transformer
encoder (torch.nn.TransformerEncoder) and a MobileNet-v2-style block stack, each exported with
both exporters (TorchScript: ``dynamo=False``; torch.export: ``dynamo=True``) where they work,
with a symbolic batch dim. ``--tiny`` writes the small transformer and MobileNet stacks that
are committed under tests/data/torch/ for the default test run.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch
from torch import nn


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.c1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.b1 = nn.BatchNorm2d(cout)
        self.c2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.b2 = nn.BatchNorm2d(cout)
        self.down = None
        if stride != 1 or cin != cout:
            self.down = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x):
        y = torch.relu(self.b1(self.c1(x)))
        y = self.b2(self.c2(y))
        return torch.relu(y + (x if self.down is None else self.down(x)))


class ResNet18ish(nn.Module):
    def __init__(self, classes: int = 100):
        super().__init__()
        self.stem = nn.Sequential(
            nn.Conv2d(3, 32, 7, 2, 3, bias=False),
            nn.BatchNorm2d(32),
            nn.ReLU(),
            nn.MaxPool2d(3, 2, 1),
        )
        chans = [(32, 32, 1), (32, 32, 1), (32, 64, 2), (64, 64, 1), (64, 128, 2), (128, 128, 1)]
        self.blocks = nn.Sequential(*[BasicBlock(a, b, s) for a, b, s in chans])
        self.fc = nn.Linear(128, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


class InvertedResidual(nn.Module):
    def __init__(self, c: int, expand: int = 4):
        super().__init__()
        h = c * expand
        self.body = nn.Sequential(
            nn.Conv2d(c, h, 1, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU6(),
            nn.Conv2d(h, h, 3, 1, 1, groups=h, bias=False),
            nn.BatchNorm2d(h),
            nn.ReLU6(),
            nn.Conv2d(h, c, 1, bias=False),
            nn.BatchNorm2d(c),
        )

    def forward(self, x):
        return x + self.body(x)


def models(tiny: bool = False):
    d = 32 if tiny else 128
    enc_layer = nn.TransformerEncoderLayer(d, 4, 4 * d, dropout=0.1, batch_first=True)
    return {
        "resnet18ish": (ResNet18ish(), torch.randn(1, 3, 64, 64)),
        "transformer": (
            nn.TransformerEncoder(enc_layer, 1 if tiny else 2, enable_nested_tensor=False),
            torch.randn(1, 8 if tiny else 32, d),
        ),
        "mobilenetish": (
            nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), *[InvertedResidual(16) for _ in range(3)]),
            torch.randn(1, 3, 64, 64),
        ),
    }


def main(outdir: str, tiny: bool = False) -> None:
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name, (model, example) in models(tiny).items():
        if tiny and name == "resnet18ish":
            continue
        model.eval()
        for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm2d)):
            bn.running_mean.uniform_(-0.5, 0.5)
            bn.running_var.uniform_(0.5, 1.5)
        for dynamo in (False, True):
            path = out / f"{name}-{'dynamo' if dynamo else 'ts'}.onnx"
            try:
                kw = {"dynamo": dynamo, "input_names": ["input"], "output_names": ["output"]}
                if dynamo:
                    kw["dynamic_shapes"] = ({0: torch.export.Dim("batch", max=64)},)
                else:
                    kw["dynamic_axes"] = {"input": {0: "batch"}, "output": {0: "batch"}}
                    kw["opset_version"] = 17
                torch.onnx.export(model, (example,), str(path), **kw)
                print(f"wrote {path}")
            except Exception as e:  # report and go on with the other exporter/model
                print(f"{path.name}: export failed: {type(e).__name__}: {str(e).splitlines()[0]}")


if __name__ == "__main__":
    args = [a for a in sys.argv[1:] if a != "--tiny"]
    main(args[0] if args else "torch-models", tiny="--tiny" in sys.argv)
