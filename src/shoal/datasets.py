"""Datasets from Python: the same operations the ``shoal dataset`` commands run.

Examples:
    >>> from shoal import datasets                                        # doctest: +SKIP
    >>> ds = datasets.create("photos/", "pets")                           # doctest: +SKIP
    >>> ds.splits                                                         # doctest: +SKIP
    {'train': {'cat': 49, 'dog': 43}, 'val': {'cat': 16, 'dog': 14}, 'test': {'cat': 0, 'dog': 0}}
    >>> [d.name for d in datasets.list()]                                 # doctest: +SKIP
    ['pets']
    >>> datasets.load("pets").images("val").shape                         # doctest: +SKIP
    (30, 256, 256, 3)
"""

from __future__ import annotations

from shoal.data import *  # noqa: F403 - one public surface, kept in shoal.data
from shoal.data import __all__  # noqa: F401
