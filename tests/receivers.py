"""Local stand-ins for SaaS endpoints: an HTTP webhook receiver and an SMTP server (aiosmtpd).

Real servers on 127.0.0.1 that record what they receive; `status` makes the webhook fail on
purpose. Used only where the real thing is a vendor's host this machine cannot reach.
"""

from __future__ import annotations

import email
import email.policy
import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Webhook:
    url: str
    status: int = 200
    requests: list[dict[str, Any]] = field(default_factory=list)

    def json_bodies(self) -> list[dict[str, Any]]:
        return [json.loads(r["body"]) for r in self.requests]


@contextmanager
def webhook_receiver(status: int = 200) -> Iterator[Webhook]:
    """An HTTP server answering every POST with `status` and recording it."""
    hook = Webhook(url="", status=status)
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's name)
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            with lock:
                hook.requests.append({"path": self.path, "body": body,
                                      "headers": dict(self.headers)})
            self.send_response(hook.status)
            self.end_headers()
            self.wfile.write(b"{}")

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    hook.url = f"http://127.0.0.1:{server.server_address[1]}/hook"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hook
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Grafana:
    """A stand-in for Grafana's dashboard API (Grafana Cloud cannot run here): it records each
    request and answers as Grafana 11 does — 401 without the right bearer token."""

    url: str
    token: str
    requests: list[dict[str, Any]] = field(default_factory=list)


@contextmanager
def grafana_receiver(token: str) -> Iterator[Grafana]:
    grafana = Grafana(url="", token=token)
    versions: dict[str, int] = {}

    class Handler(BaseHTTPRequestHandler):
        def _answer(self, status: int, doc: dict[str, Any]) -> None:
            raw = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(raw)))
            self.end_headers()
            self.wfile.write(raw)

        def do_POST(self) -> None:  # noqa: N802
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0)).decode()
            grafana.requests.append({"method": "POST", "path": self.path, "body": body,
                                     "headers": dict(self.headers)})
            if self.headers.get("Authorization") != f"Bearer {grafana.token}":
                self._answer(401, {"message": "invalid API key"})
                return
            if self.path != "/api/dashboards/db":
                self._answer(404, {"message": "Not found"})
                return
            dash = json.loads(body)["dashboard"]
            uid = dash["uid"]
            versions[uid] = versions.get(uid, 0) + 1
            self._answer(200, {"id": 7, "uid": uid, "status": "success",
                               "url": f"/d/{uid}/migwatch", "version": versions[uid]})

        def log_message(self, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    grafana.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield grafana
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Mailbox:
    port: int
    messages: list[email.message.EmailMessage] = field(default_factory=list)


@contextmanager
def smtp_server() -> Iterator[Mailbox]:
    """An aiosmtpd server on a free port collecting parsed messages."""
    from aiosmtpd.controller import Controller

    box = Mailbox(port=free_port())

    class Handler:
        async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:  # noqa: N802
            msg = email.message_from_bytes(envelope.content, policy=email.policy.default)
            box.messages.append(msg)  # type: ignore[arg-type]
            return "250 OK"

    controller = Controller(Handler(), hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        controller.stop()


def plain_text(msg: email.message.EmailMessage) -> str:
    part = msg.get_body(preferencelist=("plain",))
    return part.get_content() if part is not None else ""
