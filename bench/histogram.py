"""Latency histograms in the HDR style: log-spaced buckets, 1% precision, constant memory."""

from __future__ import annotations

import math
from collections import Counter
from typing import Any

_GROWTH = 1.01  # each bucket is 1% wider than the one below: percentiles within 1%
_FLOOR = 1e-6  # one microsecond


class Histogram:
    def __init__(self) -> None:
        self.buckets: Counter[int] = Counter()
        self.count = 0
        self.total = 0.0
        self.max = 0.0

    def record(self, seconds: float) -> None:
        self.buckets[_bucket(seconds)] += 1
        self.count += 1
        self.total += seconds
        self.max = max(self.max, seconds)

    def merge(self, other: Histogram) -> None:
        self.buckets.update(other.buckets)
        self.count += other.count
        self.total += other.total
        self.max = max(self.max, other.max)

    def percentile(self, p: float) -> float:
        """The latency that p percent of the recorded ones do not exceed (0 when empty)."""
        if not self.count:
            return 0.0
        rank = max(1, math.ceil(self.count * p / 100))
        seen = 0
        for bucket in sorted(self.buckets):
            seen += self.buckets[bucket]
            if seen >= rank:
                return min(_upper(bucket), self.max)
        return self.max

    def summary_ms(self) -> dict[str, Any]:
        return {
            "count": self.count,
            "mean_ms": round(self.total / self.count * 1000, 3) if self.count else 0.0,
            "p50_ms": round(self.percentile(50) * 1000, 3),
            "p99_ms": round(self.percentile(99) * 1000, 3),
            "p999_ms": round(self.percentile(99.9) * 1000, 3),
            "max_ms": round(self.max * 1000, 3),
        }


def _bucket(seconds: float) -> int:
    return math.floor(math.log(max(seconds, _FLOOR) / _FLOOR, _GROWTH))


def _upper(bucket: int) -> float:
    return _FLOOR * _GROWTH ** (bucket + 1)
