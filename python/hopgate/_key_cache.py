"""``KeyCacheInfo``: what ``hopgate.key_cache_info()`` reports."""

from __future__ import annotations

from typing import NamedTuple


class KeyCacheInfo(NamedTuple):
    """The process's cache of decoded public keys, as ``functools``' ``cache_info()``
    reports an LRU cache: lookups answered from it (``hits``), lookups that decoded
    (``misses``), keys held now (``entries``) and the most it holds (``capacity``; 0: off)."""

    hits: int
    misses: int
    entries: int
    capacity: int
