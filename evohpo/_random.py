"""Per-trial random streams.

Every random decision evohpo makes is drawn from a stream derived from
``(root seed, trial number, purpose)``. A study therefore gives the same
trials whether it runs 20 trials at once or 10, stops, and resumes for 10
more: no stream is ever carried across trials in memory.
"""

from __future__ import annotations

import hashlib
import random
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["derive_seed", "fresh_root_seed", "python_random", "seeded_global_random"]

_SEED_BITS = 63


def fresh_root_seed() -> int:
    """Return an unpredictable root seed (used when the user gives none)."""
    return secrets.randbits(_SEED_BITS)


def derive_seed(root: int, *keys: int | str) -> int:
    """Return a 63-bit seed that depends on ``root`` and every key, in order.

    A cryptographic hash keeps streams of neighbouring trial numbers or
    purposes independent, which the arithmetic of most RNG seeding does not.
    """
    text = "\x1f".join([str(int(root)), *(str(k) for k in keys)])
    digest = hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> (64 - _SEED_BITS)


def python_random(root: int, *keys: int | str) -> random.Random:
    """A private ``random.Random`` stream for ``(root, *keys)``."""
    return random.Random(derive_seed(root, *keys))


_GLOBAL_RANDOM_LOCK = threading.RLock()


@contextmanager
def seeded_global_random(rng: random.Random) -> Iterator[None]:
    """Run DEAP calls, which draw from the global ``random`` module, reproducibly.

    The global state is seeded from ``rng`` for the duration of the block and
    restored afterwards, so neither the caller nor other libraries see any
    change. A lock keeps concurrent threads from interleaving their draws.
    """
    with _GLOBAL_RANDOM_LOCK:
        saved = random.getstate()
        random.seed(rng.getrandbits(64))
        try:
            yield
        finally:
            random.setstate(saved)
