"""fastText offline: ``export`` (a .bin/.ftz to a model directory, the output layer as an ONNX
``graph``) and ``cli``, the ``selectd export|verify|bench fasttext`` family. The runtime side is
:mod:`selectd.models.fasttext`.
"""
