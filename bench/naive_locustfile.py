"""The yardstick for bench/overhead.py: the bare user plus the naive recorder.

An ``events.request`` listener that parses every reply as JSON and counts requests per pod:
what the issue measured at 4.7 % of a FastHttpUser on the reference machines. Measured in
the same run as NodePortUser, it says how this machine scales such costs.
"""

from __future__ import annotations

import json

from bare_locustfile import BareUser  # noqa: F401  (the same user and request)
from locust import events

served: dict[str, int] = {}


@events.request.add_listener
def count_pod(response=None, exception=None, **_kwargs) -> None:
    if exception is not None or response is None:
        return
    try:
        pod = json.loads(response.content).get("host", "unknown")
    except (ValueError, TypeError, AttributeError):
        pod = "unknown"
    served[pod] = served.get(pod, 0) + 1
