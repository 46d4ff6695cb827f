"""Causal LMs offline: ``export`` writes a model directory from a Hugging Face checkpoint and holds
the PyTorch reference; ``train`` builds small prior / conditional pairs from local text; ``cli`` is
the ``selectd export|verify|bench causal-lm`` family. The runtime side is :mod:`selectd.models.causal_lm`.
"""
