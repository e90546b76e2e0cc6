"""Real receivers for notifications, on free local ports: a webhook (http.server) that keeps what was POSTed, and an
SMTP server (aiosmtpd) that wants a login and keeps the mails. Either can be started late on a port chosen early,
so a test can point a channel at a receiver that is down and bring it up later.
"""

from __future__ import annotations

import email
import email.policy
import http.server
import socket
import threading
import time

import orjson
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Webhook:
    """POSTs to ``/hook/<token>`` are kept (the JSON body, and when it came); another path gets 404 and is not kept."""

    def __init__(self, token: str, port: int | None = None):
        self.token, self.port = token, port or free_port()
        self.received: list[dict] = []
        self.arrived: list[float] = []  # time.perf_counter() of each kept POST (for the benchmark)
        self.refused = 0
        self._server: http.server.ThreadingHTTPServer | None = None
        self._lock = threading.Lock()

    @property
    def path(self) -> str:
        return f"/hook/{self.token}"

    def start(self) -> Webhook:
        hook = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                ok = self.path == hook.path
                with hook._lock:
                    if ok:
                        hook.received.append(orjson.loads(body))
                        hook.arrived.append(time.perf_counter())
                    else:
                        hook.refused += 1
                self.send_response(200 if ok else 404)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self._server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


class Mailbox:
    """An SMTP server that takes mail only after AUTH with ``user`` / ``password`` (no TLS: loopback only)."""

    def __init__(self, user: str, password: str):
        self.user, self.password, self.port = user, password, free_port()
        self.mails: list[email.message.EmailMessage] = []
        box = self

        class Handler:
            async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's name
                box.mails.append(email.message_from_bytes(envelope.original_content or envelope.content,
                                                          policy=email.policy.default))
                return "250 OK"

        def check(server, session, envelope, mechanism, auth_data):
            return AuthResult(success=auth_data.login == box.user.encode() and
                              auth_data.password == box.password.encode())

        self._controller = Controller(Handler(), hostname="127.0.0.1", port=self.port, auth_require_tls=False,
                                      auth_required=True, authenticator=check)

    def start(self) -> Mailbox:
        self._controller.start()
        return self

    def stop(self) -> None:
        self._controller.stop()

    def texts(self) -> list[tuple[str, str]]:
        """(subject, plain-text body) of each mail, decoded."""
        return [(str(m["subject"]), m.get_body(preferencelist=("plain",)).get_content()) for m in self.mails]
