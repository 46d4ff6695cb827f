"""A 1-D numpy array appended to in place, shared by the featurizers' growing tables."""
from __future__ import annotations

import numpy as np


class GrowingArray:
    """Appends cost what is appended (capacity doubles when full), where ``np.concatenate`` would
    copy the whole, vocabulary-sized array again at every batch."""

    def __init__(self, dtype, capacity: int = 1024) -> None:
        self._data = np.empty(max(capacity, 16), dtype=dtype)
        self._size = 0

    def extend(self, values) -> None:
        values = np.asarray(values, dtype=self._data.dtype)
        size = self._size + len(values)
        if size > len(self._data):
            grown = np.empty(max(size, 2 * len(self._data)), dtype=self._data.dtype)
            grown[:self._size] = self._data[:self._size]
            self._data = grown
        self._data[self._size:size] = values
        self._size = size

    def __len__(self) -> int:
        return self._size

    @property
    def values(self) -> np.ndarray:
        """The appended values (a view: it does not see later appends)."""
        return self._data[:self._size]
