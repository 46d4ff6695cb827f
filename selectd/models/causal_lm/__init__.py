"""Causal language models (GPT-2, GPT-NeoX, Llama) exported to ONNX graphs of per-token log-probabilities.

``model`` runs an exported directory on ONNX Runtime (no torch); ``export`` writes one from a
Hugging Face checkpoint and holds the PyTorch reference; ``train`` builds small prior / conditional
pairs from local text; ``cli`` is the ``selectd export|verify|bench causal-lm`` family.
"""
