"""The latency histogram: a fixed HdrHistogram-style log-linear layout over integer counts.

Values below 128 (µs) get one bucket each; above that every power of two is cut into 64
equal buckets, so a bucket is at most 1/64 of its lower bound wide and its midpoint is within
1/128 (0.78 %) of any value in it. 2048 buckets cover up to 2^37 µs (38 h); longer values
land in the last bucket. A histogram is therefore a list of counts: recording is an index
computation and an increment, merging is adding, percentiles walk cumulative counts. The
per-second series keep a coarser copy (4 fine buckets per coarse one, ≤ 3.1 % error).
A *hist* on disk is a sparse list of ``[bucket_index, count]`` pairs in ascending order.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence

SUB_BUCKET_BITS = 7
BUCKETS = 2048
SERIES_SHIFT = 2
SERIES_BUCKETS = BUCKETS >> SERIES_SHIFT
LAYOUT = {
    "unit": "us",
    "sub_bucket_bits": SUB_BUCKET_BITS,
    "buckets": BUCKETS,
    "series_shift": SERIES_SHIFT,
}
MAX_US = 1 << 40  # stands in for inf: lands in the last bucket

Hist = Sequence[int] | Mapping[int, int] | Iterable[Sequence[int]]


def bucket_of_us(value_us: int) -> int:
    """Bucket index of an integer count (µs, or requests per connection)."""
    if value_us < 128:
        return value_us if value_us > 0 else 0
    shift = value_us.bit_length() - SUB_BUCKET_BITS
    index = (shift << 6) + (value_us >> shift)
    return index if index < BUCKETS else BUCKETS - 1


def _index_table(size: int) -> list[int]:
    # Bucket index of every µs value below `size`, built a power of two at a time; the
    # entries share one int object per index (1 MB of references, no per-entry ints).
    indexes = list(range(BUCKETS))
    table = indexes[:128]
    shift = 1
    while len(table) < size:
        for top in range(64, 128):
            table.extend([indexes[(shift << 6) + top]] * (1 << shift))
        shift += 1
    return table[:size]


INDEX_TABLE = _index_table(1 << 17)  # up to 131 ms, where nearly all latencies fall


def bucket_index(latency_ms: float) -> int:
    """Bucket index of a latency in milliseconds."""
    return bucket_of_us(_to_us(latency_ms))


def bucket_range_us(index: int, shift: int = 0) -> tuple[int, int]:
    """[low, high) µs covered by a bucket (``shift``: a coarsened index, as in the series)."""
    first = index << shift
    last = first + (1 << shift) - 1
    return _fine_range(first)[0], _fine_range(last)[1]


def bucket_value_ms(index: int, shift: int = 0) -> float:
    """The value a bucket stands for: its midpoint, in ms."""
    low, high = bucket_range_us(index, shift)
    return (low + high) / 2000.0


def _fine_range(index: int) -> tuple[int, int]:
    if index < 128:
        return index, index + 1
    shift = (index >> 6) - 1
    low = (index - (shift << 6)) << shift
    return low, low + (1 << shift)


def _to_us(latency_ms: float) -> int:
    try:
        return int(latency_ms * 1000.0)
    except (ValueError, OverflowError):  # nan, inf
        return 0 if latency_ms != latency_ms else MAX_US


def hist_items(hist: Hist | None) -> list[tuple[int, int]]:
    """Non-zero ``(index, count)`` pairs, ascending, from a dense list, a dict or pairs."""
    if not hist:
        return []
    if isinstance(hist, Mapping):
        pairs = ((int(i), int(n)) for i, n in hist.items())
    elif isinstance(hist[0], int):  # type: ignore[index]
        pairs = enumerate(hist)  # type: ignore[arg-type]
    else:
        pairs = ((int(i), int(n)) for i, n in hist)  # type: ignore[misc]
    return sorted((i, n) for i, n in pairs if n)


def hist_count(hist: Hist | None) -> int:
    return sum(n for _, n in hist_items(hist))


def percentiles(
    hist: Hist | None, quantiles: Iterable[float], shift: int = 0
) -> list[float | None]:
    """Nearest-rank quantiles (0 < q <= 1) of a histogram, as bucket midpoints in ms.

    ``None`` for every quantile when the histogram is empty.
    """
    items = hist_items(hist)
    wanted = list(quantiles)
    total = sum(n for _, n in items)
    if total == 0:
        return [None] * len(wanted)
    ranks = sorted(
        (min(total, max(1, math.ceil(q * total - 1e-9))), pos) for pos, q in enumerate(wanted)
    )
    result: list[float | None] = [None] * len(wanted)
    seen = 0
    it = iter(items)
    index = 0
    for rank, pos in ranks:
        while seen < rank:
            index, count = next(it)
            seen += count
        result[pos] = bucket_value_ms(index, shift)
    return result


def add_hist(dense: list[int], hist: Hist | None) -> None:
    """Add a histogram (any form) into a dense list of counts."""
    for index, count in hist_items(hist):
        dense[index] += count


def sparse(dense: Sequence[int]) -> list[list[int]]:
    return [[i, n] for i, n in enumerate(dense) if n]
