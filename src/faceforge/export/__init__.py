"""Model export: ONNX with preprocessing metadata and a PyTorch parity check (``docs/export.md``)."""

from __future__ import annotations

from faceforge.export.onnx import PRECISIONS, check_parity, export_onnx, read_metadata

__all__ = ["PRECISIONS", "check_parity", "export_onnx", "read_metadata"]
