"""Exported model directories: manifests with checksums, and ONNX Runtime sessions."""
