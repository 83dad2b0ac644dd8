"""A small Kubernetes API client for the real lab's own components (its kubelet and its
cloud): JSON over HTTPS with a bearer token, one kept-alive connection, stdlib only.

The harness itself talks to the cluster through the official ``kubernetes`` client
(``discovery.py``); the lab's components run inside the gevent-patched lab process and need
only a handful of calls, so they use this instead.
"""

from __future__ import annotations

import http.client
import json
import ssl
import threading
import urllib.parse
from typing import Any

from harness.errors import LabError


class ApiStatus(LabError):
    """The API server answered with an error status."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code


class KubeApi:
    def __init__(self, url: str, token: str, cafile: str, timeout: float = 10.0):
        parts = urllib.parse.urlsplit(url)
        self.host, self.port = parts.hostname or "127.0.0.1", parts.port or 443
        self.token = token
        self.context = ssl.create_default_context(cafile=cafile)
        self.timeout = timeout
        self._conn: http.client.HTTPSConnection | None = None
        self._lock = threading.Lock()

    def request(self, method: str, path: str, body: Any = None,
                content_type: str = "application/json") -> dict[str, Any]:
        """One call; the decoded JSON reply. ApiStatus for an error status, LabError when
        the server cannot be reached."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json",
                   "User-Agent": "nodeport-harness-lab"}
        if data is not None:
            headers["Content-Type"] = content_type
        with self._lock:
            for attempt in (1, 2):  # a kept-alive connection the server closed: once more
                conn = self._conn or http.client.HTTPSConnection(
                    self.host, self.port, context=self.context, timeout=self.timeout)
                self._conn = conn
                try:
                    conn.request(method, path, body=data, headers=headers)
                    reply = conn.getresponse()
                    raw = reply.read()
                    break
                except (OSError, http.client.HTTPException) as err:
                    conn.close()
                    self._conn = None
                    if attempt == 2:
                        raise LabError(f"the API server at {self.host}:{self.port} is not "
                                       f"reachable ({err})") from None
        try:
            doc = json.loads(raw) if raw else {}
        except ValueError:
            doc = {"message": raw.decode(errors="replace")}
        if reply.status >= 400:
            raise ApiStatus(reply.status, str(doc.get("message") or reply.reason))
        return doc

    def get(self, path: str) -> dict[str, Any]:
        return self.request("GET", path)

    def create(self, path: str, obj: dict[str, Any], exist_ok: bool = True) -> dict[str, Any]:
        try:
            return self.request("POST", path, obj)
        except ApiStatus as err:
            if err.code == 409 and exist_ok:
                return {}
            raise

    def merge_patch(self, path: str, patch: dict[str, Any]) -> dict[str, Any]:
        return self.request("PATCH", path, patch, "application/merge-patch+json")

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
