"""daphne, with request bodies bounded as they arrive: `python -m gateway.server` takes
daphne's own arguments (`-b 127.0.0.1 -p 8000 gateway.asgi:application`).

daphne 4.2 reads a whole request body, into a temporary file past 100 kB, before the
application sees the request: whatever the application checks, a 200 MiB upload is on
disk first, and a body declared as 10**20 bytes is waited for forever. Its request class
is a Twisted Request, which is told the declared length once the head is in (gotLength)
and each piece of the body as it comes (handleContentChunk); this one answers there:

- 413 as soon as the declared length, or the body received so far, is over
  MAX_REQUEST_BYTES;
- 401 as soon as the head of an API request with a body (a POST to /v1/) carries no
  `Bearer sk-gw-...` key, which no body can make good.

Either answer is OpenAI's error object, written before the body is read, with
`Connection: close`. The rest of the body is then read and dropped for up to
LINGER_SECONDS (as nginx's lingering close does: a client still sending when the
connection is closed under it may get a reset instead of the answer), then the connection
is closed. A body with a well-formed but wrong key is read, within the limit, and answered
401 by the application.
"""

import json
import secrets
from http import HTTPStatus

from daphne.cli import CommandLineInterface
from daphne.http_protocol import HTTPFactory, WebRequest
from daphne.server import Server
from django.conf import settings

# Seconds the rest of a refused body is read (and dropped) before the connection closes.
LINGER_SECONDS = 2.0


class BoundedRequest(WebRequest):
    """daphne's request, refusing a body over MAX_REQUEST_BYTES or without a key."""

    refused = False
    received = 0

    def gotLength(self, length):
        from apikeys.authentication import bearer_secret
        from apikeys.models import SECRET_PREFIX
        from gateway.errors import AuthenticationFailed, PayloadTooLarge

        limit = settings.MAX_REQUEST_BYTES
        if length is not None and length > limit:
            return self._refuse(PayloadTooLarge(f"The request body is larger than {limit} bytes."))
        if length != 0 and self._is_api_post():
            try:
                secret = bearer_secret(self._header(b"authorization"))
                if not secret.startswith(SECRET_PREFIX):
                    raise AuthenticationFailed()
            except AuthenticationFailed as error:
                return self._refuse(error)
        return super().gotLength(length)

    def handleContentChunk(self, data):
        if self.refused:
            return
        self.received += len(data)
        limit = settings.MAX_REQUEST_BYTES
        if self.received > limit:
            from gateway.errors import PayloadTooLarge

            self.content.close()
            return self._refuse(PayloadTooLarge(f"The request body is larger than {limit} bytes."))
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        # The end of a refused body: there is nothing to hand the application.
        if not self.refused:
            super().requestReceived(command, path, version)

    def _is_api_post(self):
        # The channel has parsed the request line, which the request itself is given only
        # with the whole body (requestReceived).
        method = getattr(self.channel, "_command", b"")
        path = getattr(self.channel, "_path", b"")
        return method == b"POST" and path.startswith(b"/v1/")

    def _header(self, name):
        values = self.requestHeaders.getRawHeaders(name) or [b""]
        return values[0].decode("latin-1")

    def _refuse(self, error):
        """Answer `error` now, drop what else comes, and close the connection soon."""
        self.refused = True
        transport = self.channel.transport
        self.channel.persistent = False
        body = json.dumps(error.as_dict()).encode()
        headers = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "close",
            # Every answer has an id, as the application's own do (RequestIdMiddleware).
            "x-request-id": "req_" + secrets.token_hex(16),
            **_security_headers(),
            **self._cors_headers(),
            **error.headers,
        }
        head = f"HTTP/1.1 {error.status} {HTTPStatus(error.status).phrase}\r\n" + "".join(
            f"{name}: {value}\r\n" for name, value in headers.items()
        )
        transport.write(head.encode("latin-1") + b"\r\n" + body)
        transport.loseWriteConnection()
        from twisted.internet import reactor

        reactor.callLater(LINGER_SECONDS, transport.abortConnection)
        if self.server.action_logger:
            peer = self.channel.transport.getPeer()
            self.server.log_action(
                "http",
                "complete",
                {
                    "path": getattr(self.channel, "_path", b"").decode("ascii", "replace"),
                    "status": error.status,
                    "method": getattr(self.channel, "_command", b"").decode("ascii", "replace"),
                    "client": f"{getattr(peer, 'host', '')}:{getattr(peer, 'port', '')}",
                    "time_taken": 0,
                    "size": len(body),
                },
            )

    def _cors_headers(self):
        """Return what lets a browser read the refusal of an API request, as the
        application's CORS middleware would."""
        origin = self._header(b"origin")
        if not origin or not getattr(self.channel, "_path", b"").startswith(b"/v1/"):
            return {}
        if settings.CORS_ALLOW_ALL_ORIGINS:
            return {"Access-Control-Allow-Origin": "*"}
        if origin in settings.CORS_ALLOWED_ORIGINS:
            return {"Access-Control-Allow-Origin": origin, "Vary": "Origin"}
        return {}


def _security_headers():
    """Return the security headers the application sends on its API answers, from the
    same settings."""
    policy = settings.API_CONTENT_SECURITY_POLICY["DIRECTIVES"]
    return {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": settings.X_FRAME_OPTIONS,
        "X-XSS-Protection": "0",
        "Referrer-Policy": settings.SECURE_REFERRER_POLICY,
        "Cross-Origin-Opener-Policy": settings.SECURE_CROSS_ORIGIN_OPENER_POLICY,
        "Content-Security-Policy": "; ".join(
            f"{name} {' '.join(values)}" for name, values in policy.items()
        ),
        "Permissions-Policy": ", ".join(
            f"{feature}=({' '.join(allowed)})"
            for feature, allowed in settings.PERMISSIONS_POLICY.items()
        ),
    }


class BoundedHTTPFactory(HTTPFactory):
    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = BoundedRequest
        return protocol


class GatewayServer(Server):
    """daphne's Server, with BoundedRequest for every HTTP connection.

    Server.run() makes its HTTP factory and starts listening with it in one method; the
    factory it makes is swapped for BoundedHTTPFactory as it is stored, rather than
    copying run().
    """

    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory):
        self._http_factory = BoundedHTTPFactory(factory.server)


class GatewayCommandLine(CommandLineInterface):
    description = "The gateway's HTTP server: daphne, with request bodies bounded"
    server_class = GatewayServer


def main():
    GatewayCommandLine.entrypoint()


if __name__ == "__main__":
    main()
