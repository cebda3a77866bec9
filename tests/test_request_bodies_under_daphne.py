"""Request bodies through a real server (gateway/server.py, daphne with bodies bounded):
a body over MAX_REQUEST_BYTES, declared or chunked, is answered 413 before it is read, and a
body without a key 401, while the client is still sending."""

import json
import select
import socket
import time
from urllib.parse import urlsplit

import pytest

from tests.live_server import LiveGateway

pytestmark = pytest.mark.integration

# The limit of this module's gateway, in bytes.
LIMIT = 64 * 1024
# Seconds an answer may take to come; a server that waits for the body never answers.
ANSWER_WITHIN = 10
SETUP = """
from apikeys.models import ApiKey

key, secret = ApiKey.objects.create_key(name="uploader", rate_limit="1000/s")
print("secret", secret)
"""


@pytest.fixture(scope="module")
def live(tmp_path_factory):
    folder = tmp_path_factory.mktemp("bodies")
    with LiveGateway(folder, SETUP, MAX_REQUEST_BYTES=str(LIMIT)) as gateway:
        yield gateway


def _connect(live):
    address = urlsplit(live.base_url)
    return socket.create_connection((address.hostname, address.port), timeout=ANSWER_WITHIN)


def _head(live, *headers, path="/v1/chat/completions"):
    lines = [f"POST {path} HTTP/1.1", f"Host: {urlsplit(live.base_url).netloc}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _key(live):
    return f"Authorization: Bearer {live.printed['secret']}"


def _answer(sock):
    """Return (status, headers, body) of the answer, waiting up to ANSWER_WITHIN seconds."""
    data = b""
    deadline = time.monotonic() + ANSWER_WITHIN
    while b"\r\n\r\n" not in data or len(data) < _expected_length(data):
        remaining = deadline - time.monotonic()
        ready, _, _ = select.select([sock], [], [], max(remaining, 0))
        if not ready:
            raise AssertionError(f"no whole answer within {ANSWER_WITHIN} s: {data!r}")
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    return int(status_line.split()[1]), headers, body


def _expected_length(data):
    head, _, _ = data.partition(b"\r\n\r\n")
    for line in head.decode("latin-1").split("\r\n")[1:]:
        name, _, value = line.partition(": ")
        if name.lower() == "content-length":
            return len(head) + 4 + int(value)
    return len(data) + 1


def _send_chunks(sock, total):
    """Send `total` bytes of a chunked body in pieces of 16 KiB, without its end."""
    piece = b"x" * 16 * 1024
    sent = 0
    while sent < total:
        sock.sendall(b"%x\r\n%s\r\n" % (len(piece), piece))
        sent += len(piece)
    return sent


def test_a_huge_declared_length_is_answered_413_at_once(live):
    with _connect(live) as sock:
        sock.sendall(
            _head(live, _key(live), "Content-Type: application/json", f"Content-Length: {10**20}")
        )

        status, headers, body = _answer(sock)

    assert status == 413
    assert headers["content-type"] == "application/json"
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_chunked_body_is_cut_at_the_limit_while_the_client_still_sends(live):
    with _connect(live) as sock:
        sock.sendall(
            _head(live, _key(live), "Content-Type: application/json", "Transfer-Encoding: chunked")
        )
        # Twice the limit of a body meant to be 200 MiB: the rest is never sent.
        _send_chunks(sock, 2 * LIMIT)

        status, _, body = _answer(sock)

    assert status == 413
    assert json.loads(body)["error"]["code"] == "request_too_large"


def test_a_chunked_body_without_a_key_is_answered_401_before_any_of_it(live):
    with _connect(live) as sock:
        sock.sendall(_head(live, "Content-Type: application/json", "Transfer-Encoding: chunked"))

        status, headers, body = _answer(sock)

    assert status == 401
    assert headers["connection"] == "close"
    assert json.loads(body)["error"]["code"] == "missing_api_key"
    # Headers every answer of the API carries.
    assert headers["x-request-id"].startswith("req_")
    assert headers["content-security-policy"].startswith("default-src 'none'")
    assert headers["x-content-type-options"] == "nosniff"


def test_a_declared_body_with_a_key_that_is_not_a_gateway_key_is_answered_401_at_once(live):
    with _connect(live) as sock:
        sock.sendall(_head(live, "Authorization: Bearer not-a-key", f"Content-Length: {LIMIT - 1}"))

        status, _, body = _answer(sock)

    assert status == 401
    assert json.loads(body)["error"]["code"] == "invalid_api_key"


@pytest.mark.parametrize("framing", ["Content-Length", "chunked"])
def test_a_body_within_the_limit_reaches_the_application(live, framing):
    body = b"not json" + b" " * (LIMIT - 100)
    with _connect(live) as sock:
        if framing == "chunked":
            sock.sendall(
                _head(
                    live, _key(live), "Content-Type: application/json", "Transfer-Encoding: chunked"
                )
            )
            sock.sendall(b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body))
        else:
            sock.sendall(
                _head(
                    live,
                    _key(live),
                    "Content-Type: application/json",
                    f"Content-Length: {len(body)}",
                )
                + body
            )

        status, _, answer = _answer(sock)

    # The application read the body: it is not JSON.
    assert status == 400
    assert json.loads(answer)["error"]["code"] == "invalid_json"


def test_a_body_for_the_admin_is_not_asked_for_an_api_key(live):
    form = b"username=root&password=wrong"
    with _connect(live) as sock:
        sock.sendall(
            _head(
                live,
                "Content-Type: application/x-www-form-urlencoded",
                f"Content-Length: {len(form)}",
                path="/admin/login/",
            )
            + form
        )

        status, _, _ = _answer(sock)

    # Django's own answer: the form came without its CSRF token.
    assert status == 403
