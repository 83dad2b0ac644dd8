"""The baseline for bench/overhead.py: a bare FastHttpUser sending NodePortUser's request.

Same request as NodePortUser's defaults (POST /api/messages, JSON body naming the user,
Content-Type header), same wait time (none) and connection handling (one keep-alive
connection per user), but no entry-node choice, pod extraction or recording.
Does not import the harness: Locust gets none of its options, events or reports.
"""

from __future__ import annotations

import itertools

from locust import constant, task
from locust.contrib.fasthttp import FastHttpUser

_user_ids = itertools.count(1)


class BareUser(FastHttpUser):
    wait_time = constant(0)
    concurrency = 1

    def on_start(self) -> None:
        self.body = f'{{"sender": "user-{next(_user_ids)}"}}'.encode()
        self.request_headers = {"Content-Type": "application/json"}

    @task
    def send(self) -> None:
        self.client.request("POST", "/api/messages", data=self.body,
                            headers=self.request_headers)
