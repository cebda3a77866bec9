"""The status line daphne writes carries the status's reason phrase, 429's included.

Twisted, daphne's HTTP layer, knows no phrase for some statuses and writes
"429 Unknown Status": harmless for SDKs, confusing in logs and curl.
"""

import json
import socket
from urllib.parse import urlsplit

import pytest

from tests.clients.conftest import CHAT_MODEL, USER


def status_line(gateway, key, body):
    """Send a chat request over a bare socket; return the response's first line."""
    address = urlsplit(gateway.base_url)
    payload = json.dumps(body).encode()
    request = (
        f"POST /v1/chat/completions HTTP/1.1\r\nHost: {address.netloc}\r\n"
        f"Authorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(request + payload)
        received = b""
        while b"\r\n" not in received:
            chunk = sock.recv(4096)
            if not chunk:
                break
            received += chunk
    return received.split(b"\r\n", 1)[0].decode()


@pytest.mark.parametrize(
    ("key", "change", "line"),
    [
        ("dave", {}, "HTTP/1.1 429 Too Many Requests"),
        ("bob", {}, "HTTP/1.1 403 Forbidden"),
        ("alice", {"temperature": 5}, "HTTP/1.1 400 Bad Request"),
        ("alice", {}, "HTTP/1.1 200 OK"),
    ],
)
def test_the_status_line_names_the_status(gateway, key, change, line):
    body = {"model": CHAT_MODEL, "messages": [{"role": "user", "content": USER}], **change}

    assert status_line(gateway, gateway.printed[key], body) == line
