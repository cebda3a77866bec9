"""Images by URL, fetched by the gateway and inlined as data: URIs for upstreams that take no URL.

Workers AI takes an `image_url` content part only as a data: URI ("HTTP URL will not be
accepted", in Cloudflare's own types); OpenAI clients usually send an https URL. For a
request going to a provider whose `takes_image_urls` is False, `inline_images` fetches
each http(s) image and puts `data:<type>;base64,...` in its place, before any provider is
called; a data: URI already there is checked and passed on unchanged.

Fetching for a client is a way into the gateway's own network (SSRF), so `ImageFetcher`:

- resolves the host once and refuses it if any of its addresses is private, loopback,
  link-local, unique-local, multicast, unspecified, reserved, shared (CGNAT) or an IPv6
  form of one of those, unless it is in IMAGE_URL_ALLOWED_NETWORKS;
- connects to the very address it checked (the host name goes in the Host header and in
  TLS's SNI, and the certificate is checked against it), so that a second DNS answer
  cannot point elsewhere (DNS rebinding);
- follows at most IMAGE_URL_MAX_REDIRECTS redirects, each checked again as above;
- gives up after IMAGE_URL_TIMEOUT seconds for the whole fetch, redirects included;
- stops reading once the body passes IMAGE_URL_MAX_BYTES;
- takes only PNG, JPEG, GIF and WebP, by Content-Type and by the bytes' own signature.

Every refusal is a 400 naming the content part, `messages[i].content[j].image_url.url`.
"""

import asyncio
import base64
import binascii
import functools
import ipaddress
import logging
import socket

import httpx
from django.conf import settings

from gateway.errors import InvalidRequest

logger = logging.getLogger(__name__)

# The image types upstreams take, by the signature their bytes start with.
SIGNATURES = {
    "image/png": (b"\x89PNG\r\n\x1a\n",),
    "image/jpeg": (b"\xff\xd8\xff",),
    "image/gif": (b"GIF87a", b"GIF89a"),
}
IMAGE_TYPES = (*SIGNATURES, "image/webp")
TYPE_NAMES = "PNG, JPEG, GIF or WebP"
REDIRECT_STATUSES = (301, 302, 303, 307, 308)
# Shared address space (RFC 6598), which Python's ipaddress counts as neither private nor
# global.
CGNAT = ipaddress.ip_network("100.64.0.0/10")
# IPv6 addresses that carry an IPv4 address a gateway may reach through them: the
# well-known NAT64 prefix (RFC 6052); IPv4-mapped and 6to4 are read by ipaddress itself.
NAT64 = ipaddress.ip_network("64:ff9b::/96")


class InvalidImage(Exception):
    """An image that cannot be sent upstream; the message says why, for the client."""


def image_type(data):
    """Return the type of image the bytes are by their signature, or None."""
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    for mime, signatures in SIGNATURES.items():
        if data.startswith(signatures):
            return mime
    return None


def decode_data_uri(url, param=None):
    """Return (type, bytes) of a base64 data: URI of an image of at most IMAGE_URL_MAX_BYTES.

    Anything else is an InvalidRequest naming `param`. The type is the one the URI
    declares; the bytes are not sniffed (the upstream decodes them).
    """
    try:
        return _decode_data_uri(url)
    except InvalidImage as error:
        raise InvalidRequest(
            f"The image is not a usable data: URI: {error}.", param=param, code="invalid_image_url"
        ) from None


def _decode_data_uri(url):
    header, comma, payload = url.partition(",")
    if not header.lower().startswith("data:") or not comma:
        raise InvalidImage("it does not have the form data:<type>;base64,<data>")
    mime, *options = header[len("data:") :].split(";")
    mime = mime.strip().lower()
    if "base64" not in (option.strip().lower() for option in options):
        raise InvalidImage("its data must be base64 (data:<type>;base64,<data>)")
    if mime not in IMAGE_TYPES:
        raise InvalidImage(f"its type is {mime or 'missing'}, not {TYPE_NAMES}")
    # 4 characters of base64 carry 3 bytes: refuse before decoding what is far too long.
    limit = settings.IMAGE_URL_MAX_BYTES
    if len(payload) * 3 // 4 > limit + 3:
        raise InvalidImage(f"it is larger than {limit} bytes")
    try:
        data = base64.b64decode(payload, validate=True)
    except binascii.Error:
        raise InvalidImage("its data is not valid base64") from None
    if len(data) > limit:
        raise InvalidImage(f"it is larger than {limit} bytes")
    return mime, data


def data_uri(mime, data):
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"


def is_allowed_address(address, allowed_networks):
    """Whether the gateway may fetch from this address: a public one, or in an allowed network.

    An IPv6 address that carries an IPv4 one (IPv4-mapped, 6to4, NAT64) is judged by the
    IPv4 address it reaches.
    """
    embedded = _embedded_ipv4(address)
    if any(a in network for network in allowed_networks for a in (address, embedded) if a):
        return True
    if embedded is not None:
        return is_allowed_address(embedded, [])
    return address.is_global and not (
        address.is_private
        or address.is_loopback
        or address.is_link_local
        or address.is_multicast
        or address.is_unspecified
        or address.is_reserved
        or address in CGNAT
    )


def _embedded_ipv4(address):
    if address.version != 6:
        return None
    if address in NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return address.ipv4_mapped or address.sixtofour


async def resolve_host(host, port):
    """Return every address the host name resolves to, as strings, in the resolver's order."""
    loop = asyncio.get_running_loop()
    try:
        answers = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError):
        return []
    return list(dict.fromkeys(str(answer[4][0]) for answer in answers))


@functools.cache
def default_ssl_context():
    """Return the TLS context image fetches verify servers with (loaded once a process)."""
    return httpx.create_ssl_context()


class ImageFetcher:
    """Fetch one image by URL within the bounds of the IMAGE_URL_* settings.

    The resolver, the TLS context and the transport are class attributes, so that tests
    decide what a host name resolves to and see every connection attempt.
    """

    resolver = staticmethod(resolve_host)
    ssl_context = staticmethod(default_ssl_context)
    transport_class = httpx.AsyncHTTPTransport

    def __init__(self):
        self.timeout = settings.IMAGE_URL_TIMEOUT
        self.max_bytes = settings.IMAGE_URL_MAX_BYTES
        self.max_redirects = settings.IMAGE_URL_MAX_REDIRECTS
        self.allowed_networks = [
            ipaddress.ip_network(network) for network in settings.IMAGE_URL_ALLOWED_NETWORKS
        ]

    async def fetch(self, url):
        """Return (type, bytes) of the image at an http(s) URL, or raise InvalidImage."""
        # No proxy from the environment: a proxy would make its own connection, to an
        # address this guard never saw.
        transport = self.transport_class(verify=self.ssl_context(), retries=0, trust_env=False)
        try:
            async with (
                asyncio.timeout(self.timeout),
                httpx.AsyncClient(
                    transport=transport, trust_env=False, timeout=self.timeout
                ) as client,
            ):
                return await self._follow(client, url)
        except (TimeoutError, httpx.TimeoutException):
            raise InvalidImage(f"it did not arrive within {self.timeout:g} seconds") from None

    async def _follow(self, client, url):
        for _ in range(self.max_redirects + 1):
            target = self._target(url)
            addresses = await self._checked_addresses(target)
            response = await self._open(client, target, addresses)
            try:
                location = response.headers.get("Location")
                if response.status_code in REDIRECT_STATUSES and location:
                    try:
                        url = target.join(location)
                    except httpx.InvalidURL:
                        raise InvalidImage("it was redirected to an invalid URL") from None
                    continue
                if response.status_code != 200:
                    raise InvalidImage(f"its server answered HTTP {response.status_code}")
                return await self._read(response)
            finally:
                await response.aclose()
        raise InvalidImage(f"it was redirected more than {self.max_redirects} times")

    @staticmethod
    def _target(url):
        try:
            target = httpx.URL(url)
        except (httpx.InvalidURL, TypeError):
            raise InvalidImage("its URL is not valid") from None
        if target.scheme not in ("http", "https") or not target.raw_host:
            raise InvalidImage("only http and https URLs of images are fetched")
        return target

    async def _checked_addresses(self, target):
        host = target.raw_host.decode("ascii")
        try:
            addresses = [ipaddress.ip_address(host)]
        except ValueError:
            answers = await self.resolver(host, target.port or _default_port(target))
            addresses = [ipaddress.ip_address(answer) for answer in answers]
            if not addresses:
                raise InvalidImage(f"its host {host} could not be resolved") from None
        refused = [a for a in addresses if not is_allowed_address(a, self.allowed_networks)]
        if refused:
            # Which addresses, only in the log: they would map the internal network for
            # whoever sends the URL.
            logger.warning(
                "Image host %s refused: it resolves to %s", host, ", ".join(map(str, refused))
            )
            raise InvalidImage(
                "its host's address is not allowed (private, loopback, link-local and other "
                "internal addresses are not fetched)"
            )
        return addresses

    async def _open(self, client, target, addresses):
        """Send the request to the first of the checked addresses that accepts a connection."""
        host = target.raw_host.decode("ascii")
        extensions = {}
        if target.scheme == "https" and not _is_address(host):
            extensions["sni_hostname"] = host
        for position, address in enumerate(addresses):
            request = client.build_request(
                "GET",
                target.copy_with(host=str(address), username=None, password=None),
                headers={
                    "Host": target.netloc.decode("ascii"),
                    "Accept": ", ".join(IMAGE_TYPES),
                    # Bytes as they are: a compressed body could inflate past the limit
                    # between two checks.
                    "Accept-Encoding": "identity",
                },
                extensions=extensions,
            )
            try:
                return await client.send(request, stream=True)
            except httpx.TimeoutException:
                raise
            except httpx.TransportError as error:
                if position < len(addresses) - 1 and isinstance(error, httpx.ConnectError):
                    continue
                logger.info("Image host %s unreachable: %s", host, error)
                raise InvalidImage(f"could not connect to its host {host}") from None
        raise AssertionError("_open needs at least one address")

    async def _read(self, response):
        declared = response.headers.get("Content-Type", "").partition(";")[0].strip().lower()
        if declared not in IMAGE_TYPES:
            raise InvalidImage(f"it is not an image: its type is {declared or 'missing'}")
        encoding = response.headers.get("Content-Encoding", "identity").lower()
        if encoding != "identity":
            raise InvalidImage(f"its server sent it compressed ({encoding}), which is not taken")
        length = response.headers.get("Content-Length", "")
        if length.isdigit() and int(length) > self.max_bytes:
            raise InvalidImage(f"it is larger than {self.max_bytes} bytes")
        body = bytearray()
        try:
            async for chunk in response.aiter_raw():
                body += chunk
                if len(body) > self.max_bytes:
                    raise InvalidImage(f"it is larger than {self.max_bytes} bytes")
        except httpx.TimeoutException:
            raise
        except httpx.TransportError:
            raise InvalidImage("its server broke off the answer") from None
        mime = image_type(bytes(body[:12]))
        if mime is None:
            raise InvalidImage(f"its bytes are not a {TYPE_NAMES} image")
        return mime, bytes(body)


def _default_port(target):
    return 443 if target.scheme == "https" else 80


def _is_address(host):
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


def _image_parts(messages):
    """Yield (message index, part index, part) of every image content part."""
    for i, message in enumerate(messages):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                if part.get("type") == "image_url":
                    yield i, j, part


async def inline_images(messages, providers):
    """Return the messages with every http(s) image URL replaced by a data: URI, if any of the
    providers (the model's and its fallbacks') takes images only inline; else unchanged.

    The fetches happen once, before the first provider is called, so that every fallback
    gets the same images; the trade-off is that an image the gateway may not fetch is
    refused even when the first provider would have fetched it itself.
    """
    if all(provider.takes_image_urls for provider in providers):
        return messages
    parts = list(_image_parts(messages))
    if not parts:
        return messages
    to_fetch = []
    for i, j, part in parts:
        url = part["image_url"]["url"]
        param = f"messages[{i}].content[{j}].image_url.url"
        scheme = url.partition(":")[0].lower()
        if scheme == "data":
            decode_data_uri(url, param)
        elif scheme not in ("http", "https"):
            raise InvalidRequest(
                "An image must be an http(s) URL or a data: URI (data:image/png;base64,...).",
                param=param,
                code="invalid_image_url",
            )
        elif not settings.IMAGE_URL_FETCH:
            raise InvalidRequest(
                "This model takes images only inline, and this gateway does not fetch "
                "images by URL: send the image as a data: URI (data:image/png;base64,...).",
                param=param,
                code="invalid_image_url",
            )
        elif len(to_fetch) == settings.IMAGE_URL_MAX_IMAGES:
            raise InvalidRequest(
                f"A request may carry at most {settings.IMAGE_URL_MAX_IMAGES} images by URL; "
                "send the others as data: URIs.",
                param=param,
                code="invalid_image_url",
            )
        else:
            to_fetch.append((i, j, url, param))
    if not to_fetch:
        return messages
    fetched = await _fetch_all(to_fetch)
    inlined = [dict(message) for message in messages]
    for (i, j, _, _), (mime, data) in zip(to_fetch, fetched, strict=True):
        content = inlined[i]["content"] = list(inlined[i]["content"])
        part = content[j]
        content[j] = {**part, "image_url": {**part["image_url"], "url": data_uri(mime, data)}}
    return inlined


async def _fetch_all(to_fetch):
    """Fetch the images at once; the first failure cancels the others and is raised."""

    async def fetch(url, param):
        try:
            return await ImageFetcher().fetch(url)
        except InvalidImage as error:
            raise InvalidRequest(
                f"The image could not be fetched: {error}.",
                param=param,
                code="invalid_image_url",
            ) from None

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(fetch(url, param)) for _, _, url, param in to_fetch]
    except BaseExceptionGroup as failures:
        raise failures.exceptions[0] from None
    return [task.result() for task in tasks]
