"""Counters and latency windows of the node, shared between the callback and the inference thread."""

from __future__ import annotations

import threading
import time
from collections import Counter, deque

import numpy as np

__all__ = ["NodeStats", "percentiles"]


def percentiles(values, qs=(50, 95, 99)) -> dict[str, float]:
    """``{"p50": ..., "p95": ..., "p99": ...}`` (NaN when empty); linear interpolation like numpy."""
    arr = np.asarray(list(values), dtype=np.float64)
    if arr.size == 0:
        return {f"p{q}": float("nan") for q in qs}
    return {f"p{q}": float(v) for q, v in zip(qs, np.percentile(arr, qs), strict=True)}


class NodeStats:
    """Totals since start plus a window of per-frame stage timings since the last summary."""

    def __init__(self, window: int = 2000) -> None:
        self._lock = threading.Lock()
        self.totals: Counter[str] = Counter()
        self.rejected: Counter[str] = Counter()
        self._window: deque[dict[str, float]] = deque(maxlen=window)
        self._period: Counter[str] = Counter()
        self._period_start = time.monotonic()

    def count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.totals[key] += n
            self._period[key] += n

    def reject(self, category: str) -> None:
        with self._lock:
            self.rejected[category] += 1
            self.totals["rejected"] += 1
            self._period["rejected"] += 1

    def frame_done(self, timings_ms: dict[str, float]) -> None:
        with self._lock:
            self.totals["labeled"] += 1
            self._period["labeled"] += 1
            self._window.append(dict(timings_ms))

    def snapshot(self) -> dict:
        """Totals (for tests and bag evaluation) without resetting the summary window."""
        with self._lock:
            return {"totals": dict(self.totals), "rejected": dict(self.rejected)}

    def take_period(self) -> tuple[float, Counter[str], list[dict[str, float]]]:
        """(seconds, counts, per-frame timings) since the previous call; starts a new period."""
        with self._lock:
            now = time.monotonic()
            out = (now - self._period_start, self._period, list(self._window))
            self._period, self._period_start = Counter(), now
            self._window.clear()
            return out


def summary_line(seconds: float, counts: Counter[str], frames: list[dict[str, float]],
                 totals: Counter[str], stages: tuple[str, ...]) -> tuple[str, dict[str, float]]:
    """One log line for a period and the numbers behind it (also published on /diagnostics)."""
    labeled = counts.get("labeled", 0)
    values: dict[str, float] = {
        "period_s": seconds, "received": counts.get("received", 0), "labeled": labeled,
        "dropped": counts.get("dropped", 0), "rejected": counts.get("rejected", 0),
        "errors": counts.get("errors", 0), "rate_hz": labeled / seconds if seconds > 0 else 0.0,
    }
    text = (f"{seconds:.0f} s: {values['received']} in, {labeled} labeled ({values['rate_hz']:.1f} Hz), "
            f"{values['dropped']} dropped (busy), {values['rejected']} rejected, {values['errors']} errors")
    if frames:
        tot = percentiles([f["total"] for f in frames], (50, 95))
        values.update({"total_p50_ms": tot["p50"], "total_p95_ms": tot["p95"]})
        parts = []
        for st in stages:
            vals = [f[st] for f in frames if st in f]
            if vals:
                med = float(np.median(vals))
                values[f"{st}_p50_ms"] = med
                parts.append(f"{st} {med:.1f}")
        text += f"; ms p50/p95 total {tot['p50']:.1f}/{tot['p95']:.1f} (" + ", ".join(parts) + ")"
    text += (f"; since start {totals.get('labeled', 0)} labeled, {totals.get('dropped', 0)} dropped, "
             f"{totals.get('rejected', 0)} rejected")
    return text, values
