"""A loopback web server of images for the tests of images by URL.

Like tests/fake_upstream.py it runs its own event loop in a daemon thread on a real loopback
port, so that the gateway reaches it over HTTP whether it runs in the test's process or in
daphne. Optionally over TLS, with a certificate for a host name of the test's choosing.

    /cat.png             a 1x1 PNG made here (`tiny_png()`)
    /redirect/{n}        n redirects (302), then /cat.png
    /redirect-to?url=U   a 302 to U
    /declared-huge.png   image/png whose Content-Length says 100 MiB
    /endless.png         image/png in 64 KiB chunks, without a Content-Length, up to 64 MiB
    /page.html           text/html
    /disguised.png       image/png whose bytes are HTML
    /trickle.png         image/png, one byte every 0.1 s for 30 s
    /missing.png         404

Requests are kept in `.requests` (path and Host header); `.endless_sent` counts the bytes
/endless.png managed to write before the client went away.
"""

import asyncio
import struct
import threading
import zlib

from aiohttp import web

CHUNK_BYTES = 64 * 1024
ENDLESS_BYTES = 64 * 1024 * 1024
DECLARED_HUGE_BYTES = 100 * 1024 * 1024
TRICKLE_INTERVAL_SECONDS = 0.1
TRICKLE_BYTES = 300
SHUTDOWN_TIMEOUT_SECONDS = 0.5


def tiny_png():
    """Return the bytes of a valid 1x1 red PNG."""

    def chunk(kind, data):
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0)  # 1x1, 8-bit RGB
    pixels = zlib.compress(b"\x00\xff\x00\x00")  # filter byte, then one red pixel
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", pixels) + chunk(b"IEND", b"")
    )


class ImageServer:
    def __init__(self, ssl_context=None):
        self.ssl_context = ssl_context
        self.port = 0
        self.requests = []
        self.endless_sent = 0
        self._loop = None
        self._thread = None
        self._runner = None

    @property
    def url(self):
        scheme = "https" if self.ssl_context else "http"
        return f"{scheme}://127.0.0.1:{self.port}"

    def start(self):
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="image-server", daemon=True
        )
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(timeout=10)
        return self

    def stop(self):
        cleanup = asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop)
        cleanup.result(timeout=SHUTDOWN_TIMEOUT_SECONDS + 10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def reset(self):
        self.requests.clear()
        self.endless_sent = 0

    def __enter__(self):
        return self.start()

    def __exit__(self, *exc_info):
        self.stop()

    async def _serve(self):
        app = web.Application(middlewares=[self._record])
        app.router.add_get("/cat.png", self._cat)
        app.router.add_get("/redirect/{n:\\d+}", self._redirect)
        app.router.add_get("/redirect-to", self._redirect_to)
        app.router.add_get("/declared-huge.png", self._declared_huge)
        app.router.add_get("/endless.png", self._endless)
        app.router.add_get("/page.html", self._page)
        app.router.add_get("/disguised.png", self._disguised)
        app.router.add_get("/trickle.png", self._trickle)
        self._runner = web.AppRunner(
            app,
            access_log=None,
            handler_cancellation=True,
            shutdown_timeout=SHUTDOWN_TIMEOUT_SECONDS,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        self.port = self._runner.addresses[0][1]

    @web.middleware
    async def _record(self, request, handler):
        self.requests.append({"path": request.path, "host": request.headers.get("Host")})
        return await handler(request)

    async def _cat(self, request):
        return web.Response(body=tiny_png(), content_type="image/png")

    async def _redirect(self, request):
        left = int(request.match_info["n"])
        raise web.HTTPFound("/cat.png" if left <= 1 else f"/redirect/{left - 1}")

    async def _redirect_to(self, request):
        raise web.HTTPFound(request.query["url"])

    async def _declared_huge(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        response.content_length = DECLARED_HUGE_BYTES
        await response.prepare(request)
        await response.write(tiny_png())
        return response

    async def _endless(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        first = tiny_png()
        await response.write(first + b"\x00" * (CHUNK_BYTES - len(first)))
        self.endless_sent = CHUNK_BYTES
        while self.endless_sent < ENDLESS_BYTES:
            await response.write(b"\x00" * CHUNK_BYTES)
            self.endless_sent += CHUNK_BYTES
            # Lets the client's reads, and its going away, keep pace with the writes.
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    async def _page(self, request):
        return web.Response(text="<html><body>a cat</body></html>", content_type="text/html")

    async def _disguised(self, request):
        return web.Response(body=b"<html><body>a cat</body></html>", content_type="image/png")

    async def _trickle(self, request):
        response = web.StreamResponse(headers={"Content-Type": "image/png"})
        await response.prepare(request)
        await response.write(tiny_png()[:8])
        for _ in range(TRICKLE_BYTES):
            await asyncio.sleep(TRICKLE_INTERVAL_SECONDS)
            await response.write(b"\x00")
        await response.write_eof()
        return response


def tls_contexts(hostname, folder):
    """Return (server, client) SSL contexts: a server certificate for `hostname` (a name or
    an IP address) signed by a certificate authority made here, and a client context that
    trusts only that authority, whose certificate is also written to folder/ca.pem."""
    import datetime
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "image tests CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(
            x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, hostname)]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(hours=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([_subject(hostname)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
            critical=False,
        )
        .add_extension(
            x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_path, key_path = folder / "server.pem", folder / "server.key"
    cert_path.write_bytes(leaf.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cadata=ca.public_bytes(serialization.Encoding.PEM).decode())
    return server, client


def _subject(hostname):
    import ipaddress

    from cryptography import x509

    try:
        return x509.IPAddress(ipaddress.ip_address(hostname))
    except ValueError:
        return x509.DNSName(hostname)
