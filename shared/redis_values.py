"""Reading values back from Redis, whichever way the client was built.

Why here: producers and workers share clients made with and without `decode_responses` (Celery's broker connection
returns bytes), so every module that reads its own keys needs the same two conversions; and variadic commands
(SADD, HDEL, ...) with hundreds of thousands of arguments are sent in slices so one command never builds a huge
request buffer.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, TypeVar

T = TypeVar("T")


def as_text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def as_text_or_none(value: Any) -> str | None:
    return None if value is None else as_text(value)


def argument_slices(items: Sequence[T], size: int = 5000) -> Iterable[Sequence[T]]:
    """`items` in slices of `size`, for one variadic command each."""
    for start in range(0, len(items), size):
        yield items[start : start + size]
