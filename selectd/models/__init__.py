"""Exported model directories at run time: manifests with checksums, ONNX Runtime sessions, one package per
family. Writing them (export, verify, bench, fixture training) is offline work in :mod:`selectd.tools`."""
