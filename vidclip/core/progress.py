"""Progress bars whose clock starts after start-up.

tqdm times a bar from its creation, so the first unit's share of start-up (a model load, worker
processes starting and importing torch, lazy imports, optimizer state) made the first rate and
ETA wildly off (``1/24 [00:57<22:13]`` for an encode that then ran at 2 s a video). Every vidclip
bar starts its clock once start-up is over: :func:`start_clock` at the point where it ends, or
:func:`progress_iter` for a loop whose first item carries it.

A leaf module: tqdm is imported when a bar is made.
"""

from __future__ import annotations

import time
from typing import Iterable, Iterator, TypeVar

__all__ = ["start_clock", "progress_iter"]

T = TypeVar("T")


def start_clock(bar, done: int = 0) -> None:
    """Start ``bar``'s clock (elapsed, rate, ETA) now, counting ``done`` more units as already
    done: what ran since the bar was created was start-up, which says nothing about the pace of
    the rest. Call it before the bar's first ``update()`` (tqdm's rate smoothing starts there)."""
    bar.n += done
    if bar.disable:
        return
    bar.initial = bar.last_print_n = bar.n  # the rate counts units done after this point only
    bar.start_t = bar.last_print_t = time.time()  # tqdm's own clock (time.time)
    bar.refresh()


def progress_iter(items: Iterable[T], *, total: int | None = None, **tqdm_kwargs) -> Iterator[T]:
    """Yield ``items`` under a ``tqdm.auto`` bar whose clock starts when the first item is done
    (its one-time costs, e.g. lazy imports, are start-up). ``tqdm_kwargs``: desc, unit,
    disable, leave, ..."""
    from tqdm.auto import tqdm

    if total is None and hasattr(items, "__len__"):
        total = len(items)
    bar = tqdm(total=total, **tqdm_kwargs)
    try:
        for i, item in enumerate(items):
            yield item
            if i == 0:
                start_clock(bar, done=1)
            else:
                bar.update(1)
    finally:
        bar.close()
