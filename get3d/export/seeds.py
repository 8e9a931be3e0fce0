"""Seed lists from the command line / params: ``"0-63,70"`` → ``[0, 1, ..., 63, 70]``."""
from __future__ import annotations

MAX_SEED = 2**32 - 1
MAX_COUNT = 1_000_000


class SeedError(ValueError):
    """A seed list does not parse; the message names the offending part."""


def parse_seeds(text: str | int | list) -> list[int]:
    """Comma-separated seeds and inclusive ranges ``a-b`` (order kept, duplicates removed)."""
    if isinstance(text, int):
        text = str(text)
    if isinstance(text, (list, tuple)):
        text = ",".join(str(t) for t in text)
    parts = [p.strip() for p in str(text).split(",")]
    if not any(parts):
        raise SeedError(f"seed list {text!r} is empty (expected e.g. '0-63,70')")
    out: list[int] = []
    for p in parts:
        if not p:
            raise SeedError(f"seed list {text!r} has an empty item")
        lo_s, sep, hi_s = p.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise SeedError(f"seed list {text!r}: {p!r} is not a seed or a range 'a-b' of non-negative integers") \
                from None
        if lo < 0 or hi > MAX_SEED:
            raise SeedError(f"seed list {text!r}: {p!r} is outside 0..{MAX_SEED}")
        if hi < lo:
            raise SeedError(f"seed list {text!r}: range {p!r} ends before it starts")
        if len(out) + hi - lo + 1 > MAX_COUNT:
            raise SeedError(f"seed list {text!r} names more than {MAX_COUNT} seeds")
        out.extend(range(lo, hi + 1))
    return list(dict.fromkeys(out))
