"""Bounded device memory for many live streams: a :class:`CacheResidency` keeps at most a few stream caches on their
accelerator and spills the least recently used to host memory (every stream started with it, and every state derived
from them, shares the budget). :mod:`chameleon_core.streaming` touches a state's box before each use of its cache."""

from __future__ import annotations

import logging
import threading
import weakref

import torch

from .cache import KVCache

logger = logging.getLogger(__name__)


class CacheBox:
    """Holds a state's cache; its residency manager may swap the storage between device and host."""

    def __init__(self, cache: KVCache, home: torch.device, residency: CacheResidency) -> None:
        self.cache = cache
        self.home = home
        self.residency = residency


class CacheResidency:
    """Keeps at most ``max_device_caches`` stream caches on their accelerator; spills the rest to host memory.

    One manager bounds the caches of every stream started with it (and of every state derived from them)."""

    def __init__(self, max_device_caches: int = 2) -> None:
        self.max_device_caches = max_device_caches
        self._lru: list[weakref.ref[CacheBox]] = []
        self._lock = threading.Lock()

    def touch(self, box: CacheBox) -> KVCache:
        """Mark ``box`` most recently used, bring it to its device, spill the least recently used beyond budget."""
        with self._lock:
            live = [b for b in (r() for r in self._lru) if b is not None and b is not box] + [box]
            self._lru = [weakref.ref(b) for b in live]
            if box.cache.device != box.home:
                logger.debug("bringing a stream cache back to %s", box.home)
                box.cache = box.cache.to(box.home)
            on_device = [b for b in live if b.home.type != "cpu" and b.cache.device.type != "cpu"]
            for old in on_device[: max(0, len(on_device) - self.max_device_caches)]:
                logger.debug("spilling a stream cache (%.1f MB) to host", old.cache.nbytes / 2**20)
                old.cache = old.cache.to("cpu", non_blocking=False)
            return box.cache

    def resident(self) -> int:
        """How many tracked caches currently sit on an accelerator."""
        with self._lock:
            return sum(1 for r in self._lru if r() is not None and r().cache.device.type != "cpu")
