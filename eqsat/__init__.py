"""eqsat: an equality-saturation superoptimizer and compiler for ONNX models."""

__version__ = "0.1.0"
