"""The scope an ASGI server passes the application for a chat request.

For tests that call the ASGI application directly, as daphne would, so that they choose when
the body arrives and when the client goes away, which a test client cannot.
"""


def chat_scope(authorization, *headers):
    """Return the scope of a JSON POST to /v1/chat/completions from a loopback client.

    `authorization` is the Authorization header's value; `headers` are further (name, value)
    byte pairs.
    """
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/chat/completions",
        "raw_path": b"/v1/chat/completions",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"localhost"),
            (b"content-type", b"application/json"),
            (b"authorization", authorization.encode()),
            *headers,
        ],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 8000),
    }
