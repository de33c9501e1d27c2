"""A fault-injecting HTTP proxy in front of the test S3 server (moto on 127.0.0.1): clients
pointed at it (``endpoint_override``, ``AWS_ENDPOINT_URL``) reach moto through it, except the
requests a rule picks, which get an S3 error response (a status and an S3 error code) or a
connection reset instead, as many times in a row as the rule says.

It speaks HTTP/1.1 with keep-alive, as the AWS SDK does, and reads request bodies whole
(``Content-Length`` or chunked), so that a failed upload is refused after its body was sent,
as a real store refuses one.

Examples:
    proxy = FaultProxy(s3_server.endpoint)
    proxy.fail("PUT", "/bucket/runs/.*/model.pt", status=503, code="SlowDown", times=6)
    ... pyarrow.fs.S3FileSystem(endpoint_override=proxy.endpoint, scheme="http") ...
    proxy.served  # [(method, path, status or "reset"), ...] of the faults it injected
"""

from __future__ import annotations

import http.client
import re
import socket
import struct
import threading
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

_HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


@dataclass
class Rule:
    method: str
    path: re.Pattern[str]
    status: int | None  # None: reset the connection
    code: str
    times: int
    skip: int = 0


class FaultProxy:
    """The proxy, serving on a free port of 127.0.0.1 from a daemon thread until
    :meth:`close`."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.rules: list[Rule] = []
        self.served: list[tuple[str, str, int | str]] = []
        self.seen: list[tuple[str, str]] = []
        self.lock = threading.Lock()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: object) -> None:  # quiet
                pass

            def _body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass  # trailers
                            return b"".join(parts)
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _any(self) -> None:
                body = self._body()
                rule = proxy._take(self.command, self.path)
                if rule is not None:
                    if rule.status is None:  # RST instead of an answer
                        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                   struct.pack("ii", 1, 0))
                        self.close_connection = True
                        self.connection.close()
                        return
                    text = (f"<?xml version='1.0' encoding='UTF-8'?><Error><Code>{rule.code}"
                            f"</Code><Message>injected</Message></Error>").encode()
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(text)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(text)
                    return
                self._forward(body)

            def _forward(self, body: bytes) -> None:
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in _HOP and k.lower() != "expect"}
                # a chunked body goes on chunked (moto reads aws-chunked uploads so only)
                chunked = self.headers.get("Transfer-Encoding", "").lower() == "chunked"
                if not chunked:
                    headers["Content-Length"] = str(len(body))
                host, port = proxy.upstream.rsplit(":", 1)
                conn = http.client.HTTPConnection(host, int(port), timeout=60)
                try:
                    conn.request(self.command, self.path,
                                 body=iter([body]) if chunked else body, headers=headers,
                                 encode_chunked=chunked)
                    answer = conn.getresponse()
                    data = answer.read()
                finally:
                    conn.close()
                self.send_response(answer.status, answer.reason)
                for key, value in answer.getheaders():  # HEAD: the object's length stays
                    if key.lower() not in _HOP and (key.lower() != "content-length"
                                                    or self.command == "HEAD"):
                        self.send_header(key, value)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _any  # noqa: N815

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.endpoint = f"127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def fail(self, method: str, path: str, *, status: int | None, code: str = "",
             times: int = 1, skip: int = 0) -> None:
        """Answer ``times`` requests of ``method`` whose path (``/bucket/key?query``) matches
        the regular expression ``path`` with ``status`` and S3 error ``code``, or with a
        connection reset (``status=None``): the next ones, after letting ``skip`` of them
        pass (rules are asked in the order given; the first that takes a request answers
        it)."""
        with self.lock:
            self.rules.append(Rule(method, re.compile(path), status, code, times, skip))

    def _take(self, method: str, path: str) -> Rule | None:
        with self.lock:
            self.seen.append((method, path))
            for rule in self.rules:
                if rule.times > 0 and rule.method == method and rule.path.search(path):
                    if rule.skip > 0:
                        rule.skip -= 1
                        return None
                    rule.times -= 1
                    self.served.append((method, path, "reset" if rule.status is None
                                        else rule.status))
                    return rule
        return None

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
