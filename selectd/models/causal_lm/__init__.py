"""Causal language models (GPT-2, GPT-NeoX, Llama) exported to ONNX graphs of per-token log-probabilities.

``model`` runs an exported directory on ONNX Runtime (no torch). The offline side is
:mod:`selectd.tools.causal_lm`.
"""
