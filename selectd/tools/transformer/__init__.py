"""Hugging Face sequence classifiers offline: ``export`` (and its int8 ``quantize``), the PyTorch
reference, ``train`` for test fixtures, and ``cli``, the ``selectd export|verify|bench hf`` family.
The runtime side is :mod:`selectd.models.transformer`.
"""
