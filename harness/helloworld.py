"""The target app: a gevent WSGI server that answers which pod and node served each request.

The same code runs in the Kubernetes image (``python -m harness.helloworld``) and, many at
once, inside the lab process (``make_app`` + ``serve``). A pod can be given a service time
and a concurrency cap so its capacity is known: ``concurrency / service time`` requests/s.

Endpoints: ``POST /api/messages`` (``{"sender": ...}`` -> ``id``, ``sender``, ``message``,
``host`` (the pod), ``node``, ``client``: the peer the pod saw, ``IP:PORT``), ``GET
/clientip`` (that peer as text, as agnhost netexec answers), ``GET /healthz``, ``GET
/api/stats`` (pod, node, served).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import mmap
import os
import signal
import socket
import struct
import sys
import uuid
from collections.abc import Callable, Iterable

import gevent
from gevent import pywsgi
from gevent.lock import BoundedSemaphore

MAX_BODY = 64 * 1024  # bytes; a bigger body is refused with 413 without being read
IDLE_TIMEOUT_S = 60.0  # the standalone server's default: a client silent this long is dropped
_TIMEOUT_RESPONSE = (b"HTTP/1.1 408 Request Timeout\r\nConnection: close\r\n"
                     b"Content-Length: 0\r\n\r\n")
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends an RST
KILL_SIGNAL = signal.SIGUSR1  # die now, resetting every connection (the lab's pod kill)

Environ = dict
StartResponse = Callable[..., object]


class HelloApp:
    """The WSGI application of one pod; ``served`` counts successful ``/api/messages``."""

    def __init__(self, pod: str, node: str, service_ms: float = 0, concurrency: int = 0):
        self.pod = pod
        self.node = node
        self.service_s = max(0.0, float(service_ms)) / 1000.0
        # A cap on requests in service at once; the rest queue on the semaphore.
        self.slots = BoundedSemaphore(concurrency) if concurrency and concurrency > 0 else None
        self.served = 0
        self.on_served: Callable[[int], None] | None = None  # told each new count

    def __call__(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        path = environ.get("PATH_INFO") or "/"
        method = environ.get("REQUEST_METHOD", "GET")
        try:
            if path == "/api/messages":
                if method != "POST":
                    return _error(start_response, "405 Method Not Allowed",
                                  "use POST for /api/messages", [("Allow", "POST")])
                return self._message(environ, start_response)
            if path in ("/healthz", "/api/stats", "/clientip"):
                if method not in ("GET", "HEAD"):
                    return _error(start_response, "405 Method Not Allowed",
                                  f"use GET for {path}", [("Allow", "GET, HEAD")])
                if path == "/healthz":
                    return _reply(start_response, "200 OK", b"ok\n", "text/plain")
                if path == "/clientip":  # as agnhost netexec's: the peer, IP:PORT
                    return _reply(start_response, "200 OK", _peer(environ).encode(),
                                  "text/plain")
                body = {"pod": self.pod, "node": self.node, "served": self.served}
                return _json(start_response, "200 OK", body)
            return _error(start_response, "404 Not Found", f"no such path: {path[:200]}")
        except Exception as err:  # never let one bad request take the pod down
            return _error(start_response, "500 Internal Server Error", type(err).__name__)

    def _message(self, environ: Environ, start_response: StartResponse) -> Iterable[bytes]:
        try:
            body, problem = _read_body(environ)
        except TimeoutError:  # a body trickled slower than the idle timeout
            _forget_rest(environ["wsgi.input"])
            return _error(start_response, "408 Request Timeout", "request body too slow",
                          [("Connection", "close")])
        if problem:
            # The rest of the body stays unread: the connection must not be reused.
            return _error(start_response, "413 Content Too Large", problem,
                          [("Connection", "close")])
        try:
            data = json.loads(body or b"null")
        except (ValueError, UnicodeDecodeError):
            return _error(start_response, "400 Bad Request", "body is not valid JSON")
        sender = data.get("sender") if isinstance(data, dict) else None
        if not isinstance(sender, str):
            return _error(start_response, "400 Bad Request",
                          'body must be a JSON object with a string "sender"')
        if self.slots is not None:
            with self.slots:
                if self.service_s:
                    gevent.sleep(self.service_s)
        elif self.service_s:
            gevent.sleep(self.service_s)
        answer = {
            "id": str(uuid.uuid4()),
            "sender": sender,
            "message": f"Hello {sender} (direct)",
            "host": self.pod,
            "node": self.node,
            "client": _peer(environ),
        }
        self.served += 1
        if self.on_served is not None:
            self.on_served(self.served)
        return _json(start_response, "200 OK", answer, [("X-Served-By", self.pod)])


def _peer(environ: Environ) -> str:
    """The connection's peer as this server saw it, written as Go's RemoteAddr (and so
    agnhost netexec's /clientip): ``IP:PORT``, ``[IPv6]:PORT``. Behind a NodePort or a
    LoadBalancer with externalTrafficPolicy Cluster it is the node that forwarded (kube-proxy
    source-NATs), with Local the client itself."""
    host = environ.get("REMOTE_ADDR") or ""
    if ":" in host:
        host = f"[{host}]"
    return f"{host}:{environ.get('REMOTE_PORT') or ''}"


def _read_body(environ: Environ) -> tuple[bytes, str]:
    """Read at most MAX_BODY + 1 bytes: (body, "") or (b"", why it is refused)."""
    stream = environ["wsgi.input"]
    length = environ.get("CONTENT_LENGTH") or ""
    if length:
        try:
            declared = int(length)
        except ValueError:
            declared = -1
        if declared > MAX_BODY:
            _forget_rest(stream)
            return b"", f"body over {MAX_BODY} bytes"
        if declared >= 0:
            return stream.read(declared), ""
    body = stream.read(MAX_BODY + 1)  # chunked (or odd) bodies: bounded read
    if len(body) > MAX_BODY:
        _forget_rest(stream)
        return b"", f"body over {MAX_BODY} bytes"
    return body, ""


def _forget_rest(stream: object) -> None:
    # pywsgi discards an unread body after the response by reading it all; a huge body
    # must not be read, so mark the input consumed (the connection is closed instead).
    if isinstance(stream, pywsgi.Input):
        stream.content_length = stream.position
        stream.chunked_input = False


def _reply(start_response: StartResponse, status: str, body: bytes, ctype: str,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    start_response(status, [("Content-Type", ctype), ("Content-Length", str(len(body))),
                            *(headers or [])])
    return [body]


def _json(start_response: StartResponse, status: str, data: dict,
          headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    return _reply(start_response, status, json.dumps(data).encode(), "application/json",
                  headers)


def _error(start_response: StartResponse, status: str, message: str,
           headers: list[tuple[str, str]] | None = None) -> list[bytes]:
    return _json(start_response, status, {"error": message, "status": int(status[:3])},
                 headers)


class HelloHandler(pywsgi.WSGIHandler):
    """pywsgi's handler, minus the per-request costs a fast pod does not want."""

    def log_request(self) -> None:
        pass  # pywsgi formats an access-log line even with log=None; skip the work

    def _handle_client_error(self, ex):
        # Headers trickled slower than the idle timeout (slowloris): a 408 and close, without
        # the traceback pywsgi prints for errors it did not expect.
        if isinstance(ex, TimeoutError):
            return ("408", _TIMEOUT_RESPONSE)
        return super()._handle_client_error(ex)

    def handle_error(self, t, v, tb):
        # The pod was killed mid-request (HelloServer.kill): it dies without a word, no 500;
        # the connection closes with the reset kill() armed.
        if isinstance(v, gevent.GreenletExit):
            self.close_connection = True
            return
        super().handle_error(t, v, tb)

    def _write_with_headers(self, data: bytes) -> None:
        # One send for headers and body (pywsgi makes two): one segment on the wire, as a
        # Go or Java server would send, and half the wake-ups for the lab's proxy.
        self.headers_sent = True
        self.finalize_headers()
        towrite = bytearray(b"HTTP/1.1 ")
        towrite += self.status
        towrite += b"\r\n"
        for header, value in self.response_headers:
            towrite += header + b": " + value + b"\r\n"
        towrite += b"\r\n"
        if self.response_use_chunked and data:
            towrite += b"%x\r\n%s\r\n" % (len(data), data)
        else:
            towrite += data
        self._sendall(towrite)


class HelloServer(pywsgi.WSGIServer):
    """pywsgi with TCP_NODELAY on every connection and a way to drop them all (pod kill)."""

    handler_class = HelloHandler

    def __init__(self, *args, idle_timeout: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.connections: dict = {}  # socket -> the greenlet serving it
        # Seconds a connection may stay silent (before or within a request) before it is
        # dropped: slow or stuck clients (slowloris) cannot hold descriptors forever.
        self.idle_timeout = idle_timeout

    def handle(self, sock, address):
        # Without TCP_NODELAY small responses wait for delayed ACKs: ~44 ms per request.
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if self.idle_timeout:
            sock.settimeout(self.idle_timeout)
        self._serve(sock, address)

    def _serve(self, sock, address) -> None:
        self.connections[sock] = gevent.getcurrent()
        try:
            super().handle(sock, address)
        finally:
            self.connections.pop(sock, None)

    def adopt(self, sock, address: tuple[str, int]) -> None:
        """Serve a connection accepted elsewhere (the lab's node proxy hands it over)."""
        if self.closed:
            _reset(sock)  # a dead pod: the client sees a reset, as from a closed port
            return
        gevent.spawn(self._serve_adopted, sock, address)

    def _serve_adopted(self, sock, address: tuple[str, int]) -> None:
        try:
            self._serve(sock, address)
        finally:
            sock.close()

    def kill(self) -> None:
        """Stop now: close the listener and reset every open connection."""
        self.close()
        for sock, greenlet in list(self.connections.items()):
            # Closing the socket object is not enough (pywsgi's reader holds a reference);
            # the handler's own cleanup closes the descriptor, and SO_LINGER 0 makes it an RST.
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
            greenlet.kill(block=False)
        self.connections.clear()


def _die(server: HelloServer) -> None:
    """Die at once, as a killed pod's process does, every open connection reset (not closed
    with a FIN): what the lab's kernel datapath sends a pod it kills (KILL_SIGNAL)."""
    for sock in list(server.connections):
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
    os._exit(137)  # 128 + SIGKILL, as the container runtime reports a killed process


def _reset(sock) -> None:
    """Close with an RST (SO_LINGER 0), as a client sees when the process behind dies."""
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
        sock.close()


class ServedFile:
    """A pod's served count in an 8-byte file (little-endian), rewritten in place on every
    reply: whoever runs the pod reads it at any time, even after the pod was killed."""

    def __init__(self, path: str):
        with open(path, "w+b") as file:
            file.write(bytes(8))
            file.flush()
            self.map = mmap.mmap(file.fileno(), 8)

    def __call__(self, count: int) -> None:
        struct.pack_into("<Q", self.map, 0, count)


def make_app(pod: str, node: str, service_ms: float = 0, concurrency: int = 0) -> HelloApp:
    return HelloApp(pod, node, service_ms=service_ms, concurrency=concurrency)


def serve(app: HelloApp, host: str, port: int,
          idle_timeout: float | None = None) -> HelloServer:
    """Start serving ``app`` on host:port in the current gevent hub; returns the server."""
    server = HelloServer((host, port), app, log=None, error_log=None,
                         idle_timeout=idle_timeout)
    server.start()
    return server


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.helloworld",
        description="Hello-world target app: answers POST /api/messages with its pod and node.",
    )
    parser.add_argument("--host", default="0.0.0.0", help="address to listen on (default all)")
    parser.add_argument("--port", type=int, default=8080, help="port (default 8080)")
    parser.add_argument("--service-ms", type=float, default=0.0,
                        help="time each /api/messages request takes, in ms (default 0)")
    parser.add_argument("--concurrency", type=int, default=0,
                        help="requests in service at once; the rest queue (0: no cap)")
    parser.add_argument("--idle-timeout", type=float, default=IDLE_TIMEOUT_S,
                        help="drop a connection silent this many seconds, within a request "
                             "or between keep-alive requests (default %(default)s; 0: never)")
    parser.add_argument("--pod-name", default=os.environ.get("POD_NAME") or socket.gethostname(),
                        help="pod name reported (default $POD_NAME or the hostname)")
    parser.add_argument("--node-name",
                        default=os.environ.get("NODE_NAME") or socket.gethostname(),
                        help="node name reported (default $NODE_NAME or the hostname)")
    parser.add_argument("--served-file", default=None,
                        help="keep the count of successful /api/messages in this file (8 bytes, "
                             "little-endian), readable even after the process died")
    args = parser.parse_args(argv)
    if args.service_ms < 0 or args.concurrency < 0 or args.idle_timeout < 0:
        parser.error("--service-ms, --concurrency and --idle-timeout must not be negative")
    app = make_app(args.pod_name, args.node_name, args.service_ms, args.concurrency)
    if args.served_file:
        try:
            app.on_served = ServedFile(args.served_file)
        except OSError as err:
            print(f"error: cannot write --served-file {args.served_file}: {err.strerror}",
                  file=sys.stderr)
            return 2
    try:
        server = serve(app, args.host, args.port, idle_timeout=args.idle_timeout or None)
    except OSError as err:
        print(f"error: cannot listen on {args.host}:{args.port}: {err.strerror}; "
              "choose another --port or --host", file=sys.stderr)
        return 2
    print(f"helloworld {args.pod_name} on {args.node_name} listening on "
          f"{args.host}:{server.server_port}", file=sys.stderr, flush=True)
    # SIGTERM (kubelet) and Ctrl-C: stop accepting, let in-flight requests finish.
    for signum in (signal.SIGTERM, signal.SIGINT):
        gevent.signal_handler(signum, lambda: gevent.spawn(server.stop, 5))
    gevent.signal_handler(KILL_SIGNAL, _die, server)
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
