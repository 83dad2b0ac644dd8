"""``--raw FILE``: every request as one gzip CSV row, beside the aggregates (a Locust process's
own file; workers write FILE.<pid>)."""

from __future__ import annotations

import csv
import gzip
import os
from pathlib import Path


class RawWriter:
    """Every request as one gzip CSV row; written to ``<path>.part`` and renamed on close."""

    FIELDS = (
        "time", "entry_node", "pod", "pod_node", "cross_node", "latency_ms", "failure",
        "connection",
    )

    def __init__(self, path: str | os.PathLike[str], compresslevel: int = 5):
        self.path = Path(path)
        self._part = self.path.with_name(self.path.name + ".part")
        self._file = gzip.open(  # noqa: SIM115 - closed in close()
            self._part, "wt", newline="", encoding="utf-8", compresslevel=compresslevel
        )
        self._writer = csv.writer(self._file)
        self._writer.writerow(self.FIELDS)
        self.rows = 0

    def write(
        self, t: float, entry_node: str, pod: str, pod_node: str | None,
        cross_node: bool | None, latency_ms: float, failure: str | None, connection: object,
    ) -> None:
        self._writer.writerow((
            f"{t:.6f}", entry_node, pod, pod_node or "",
            "" if cross_node is None else int(cross_node), f"{latency_ms:.3f}",
            failure or "", "" if connection is None else connection,
        ))
        self.rows += 1

    def close(self) -> None:
        if self._file.closed:
            return
        self._file.close()
        os.replace(self._part, self.path)

    def __enter__(self) -> RawWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
