"""Images by URL: fetched by the gateway and sent inline to upstreams that take only data: URIs.

No test sends traffic beyond loopback: addresses the guard must refuse are literal or come
from an injected resolver, and `no_connections` replaces the transport with one that only
records what it was asked to open. The images that are fetched come from a loopback server
(tests/image_server.py), reached because the tests allow 127.0.0.1/32 as an operator would
allow an internal image network.
"""

import base64
import ipaddress
import time

import httpx
import pytest
from django.core.exceptions import ImproperlyConfigured

from completions.image_urls import (
    ImageFetcher,
    InvalidImage,
    decode_data_uri,
    is_allowed_address,
)
from completions.models import Model
from gateway.env import envnetworks
from gateway.errors import InvalidRequest
from tests import fake_upstream
from tests.image_server import ENDLESS_BYTES, ImageServer, tiny_png, tls_contexts

# The tests through the chat endpoint; the others need no database.
through_the_api = pytest.mark.django_db(transaction=True)

VISION = "@cf/meta/llama-4-scout-17b-16e-instruct"
PNG_DATA_URI = "data:image/png;base64," + base64.b64encode(tiny_png()).decode()


@pytest.fixture(scope="module")
def images():
    with ImageServer() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_images(request):
    if "images" in request.fixturenames:
        request.getfixturevalue("images").reset()


@pytest.fixture
def loopback_allowed(settings):
    settings.IMAGE_URL_ALLOWED_NETWORKS = ["127.0.0.1/32"]


class RecordingTransport(httpx.AsyncBaseTransport):
    """A transport that opens nothing: it records the request and fails to connect."""

    opened = []

    def __init__(self, **options):
        pass

    async def handle_async_request(self, request):
        self.opened.append(str(request.url))
        raise httpx.ConnectError("the tests open no connection here")


@pytest.fixture
def no_connections(monkeypatch):
    """Return the list of requests the fetcher tried to send; none goes anywhere."""
    opened = []
    monkeypatch.setattr(RecordingTransport, "opened", opened)
    monkeypatch.setattr(ImageFetcher, "transport_class", RecordingTransport)
    return opened


@pytest.fixture
def dns(monkeypatch):
    """An injected resolver: tests fill `dns.names` ({host: [address, ...]}); `dns.asked`
    lists the names looked up."""

    class FakeDns:
        names = {}
        asked = []

        async def resolve(self, host, port):
            self.asked.append(host)
            return list(self.names.get(host, []))

    fake = FakeDns()
    monkeypatch.setattr(ImageFetcher, "resolver", staticmethod(fake.resolve))
    return fake


def _image(url):
    return {"type": "image_url", "image_url": {"url": url}}


def _asking(*parts):
    return [{"role": "user", "content": [{"type": "text", "text": "what is this?"}, *parts]}]


async def _chat(api, persona, **body):
    body.setdefault("model", VISION)
    return await api.post(
        "/v1/chat/completions", data=body, content_type="application/json", headers=persona.headers
    )


def _sent_images(upstream, marker="/ai/run/"):
    [sent] = [r for r in upstream.requests if marker in r["path"]]
    return [
        part["image_url"]["url"]
        for message in sent["json"]["messages"]
        if isinstance(message["content"], list)
        for part in message["content"]
        if part["type"] == "image_url"
    ]


@pytest.fixture
def vision(cloudflare):
    return Model.objects.create(name=VISION, provider=cloudflare, accepts_images=True)


# The address guard


@pytest.mark.parametrize(
    "address",
    [
        "10.0.0.1",
        "172.16.5.4",
        "192.168.1.1",
        "127.0.0.1",
        "127.8.9.10",
        "169.254.169.254",
        "100.64.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd12:3456::1",
        "ff02::1",
        "::ffff:10.0.0.1",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "::ffff:100.64.0.1",
        "64:ff9b::a00:1",
        "2002:a00:1::1",
    ],
)
def test_it_refuses_private_loopback_link_local_and_other_internal_addresses(address):
    assert not is_allowed_address(ipaddress.ip_address(address), [])


@pytest.mark.parametrize(
    "address", ["93.184.216.34", "8.8.8.8", "2606:4700::1111", "::ffff:8.8.8.8"]
)
def test_it_allows_public_addresses(address):
    assert is_allowed_address(ipaddress.ip_address(address), [])


def test_it_allows_the_internal_networks_the_operator_names():
    allowed = [ipaddress.ip_network("10.0.0.0/8")]

    assert is_allowed_address(ipaddress.ip_address("10.1.2.3"), allowed)
    assert is_allowed_address(ipaddress.ip_address("::ffff:10.1.2.3"), allowed)
    assert not is_allowed_address(ipaddress.ip_address("192.168.1.1"), allowed)


def test_it_reads_allowed_networks_from_the_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_TEST_NETWORKS", "10.0.0.0/8, fd00::/8,127.0.0.1")

    assert envnetworks("GATEWAY_TEST_NETWORKS") == ["10.0.0.0/8", "fd00::/8", "127.0.0.1"]


@pytest.mark.parametrize("value", ["10.0.0.0/33", "images.internal", "10.0.0.1/8"])
def test_it_refuses_an_allowed_network_that_is_not_one(monkeypatch, value):
    monkeypatch.setenv("GATEWAY_TEST_NETWORKS", value)

    with pytest.raises(ImproperlyConfigured, match="GATEWAY_TEST_NETWORKS"):
        envnetworks("GATEWAY_TEST_NETWORKS")


@pytest.mark.parametrize(
    "url",
    [
        "http://10.0.0.1/cat.png",
        "http://169.254.169.254/latest/meta-data/",
        "https://192.168.1.1/cat.png",
        "http://[::1]/cat.png",
        "http://[fe80::1]/cat.png",
        "http://[::ffff:127.0.0.1]/cat.png",
        "http://100.64.0.1/cat.png",
        "http://0.0.0.0/cat.png",
        "http://localhost/cat.png",
    ],
)
async def test_it_refuses_an_internal_address_before_connecting(url, no_connections):
    with pytest.raises(InvalidImage, match="not allowed"):
        await ImageFetcher().fetch(url)

    assert no_connections == []


async def test_it_refuses_loopback_unless_the_operator_allows_it(images, no_connections):
    with pytest.raises(InvalidImage, match="not allowed"):
        await ImageFetcher().fetch(f"{images.url}/cat.png")

    assert no_connections == []


async def test_it_refuses_a_host_name_that_resolves_to_a_private_address(dns, no_connections):
    dns.names["images.example.test"] = ["10.1.2.3"]

    with pytest.raises(InvalidImage, match="not allowed") as refused:
        await ImageFetcher().fetch("https://images.example.test/cat.png")

    assert no_connections == []
    # The client learns nothing of the internal network.
    assert "10.1.2.3" not in str(refused.value)


async def test_it_refuses_a_host_name_when_any_of_its_addresses_is_internal(dns, no_connections):
    dns.names["images.example.test"] = ["93.184.216.34", "169.254.169.254"]

    with pytest.raises(InvalidImage, match="not allowed"):
        await ImageFetcher().fetch("https://images.example.test/cat.png")

    assert no_connections == []


async def test_it_refuses_a_host_name_that_does_not_resolve(dns, no_connections):
    with pytest.raises(InvalidImage, match="resolve"):
        await ImageFetcher().fetch("https://nowhere.example.test/cat.png")

    assert no_connections == []


# Fetching


async def test_it_fetches_an_image_from_an_allowed_network(images, loopback_allowed):
    assert await ImageFetcher().fetch(f"{images.url}/cat.png") == ("image/png", tiny_png())


async def test_it_connects_to_the_address_it_checked_and_asks_dns_once(
    images, loopback_allowed, dns
):
    dns.names["images.example.test"] = ["127.0.0.1"]

    mime, _ = await ImageFetcher().fetch(f"http://images.example.test:{images.port}/cat.png")

    assert mime == "image/png"
    assert dns.asked == ["images.example.test"]
    assert images.requests == [{"path": "/cat.png", "host": f"images.example.test:{images.port}"}]


async def test_it_checks_the_certificate_against_the_host_name_not_the_address(
    tmp_path, monkeypatch, loopback_allowed, dns
):
    server_tls, client_tls = tls_contexts("images.example.test", tmp_path)
    monkeypatch.setattr(ImageFetcher, "ssl_context", staticmethod(lambda: client_tls))
    dns.names["images.example.test"] = ["127.0.0.1"]
    dns.names["other.example.test"] = ["127.0.0.1"]

    with ImageServer(ssl_context=server_tls) as secure:
        fetched = await ImageFetcher().fetch(f"https://images.example.test:{secure.port}/cat.png")
        with pytest.raises(InvalidImage, match="could not connect"):
            await ImageFetcher().fetch(f"https://other.example.test:{secure.port}/cat.png")

    assert fetched == ("image/png", tiny_png())


async def test_it_follows_redirects_up_to_the_limit(images, loopback_allowed, settings):
    settings.IMAGE_URL_MAX_REDIRECTS = 3

    assert await ImageFetcher().fetch(f"{images.url}/redirect/3") == ("image/png", tiny_png())
    with pytest.raises(InvalidImage, match="redirect"):
        await ImageFetcher().fetch(f"{images.url}/redirect/4")


@pytest.mark.parametrize(
    "target", ["http://10.0.0.1/cat.png", "http://169.254.169.254/", "http://[::1]/cat.png"]
)
async def test_it_checks_the_address_of_every_redirect_again(images, loopback_allowed, target):
    with pytest.raises(InvalidImage, match="not allowed"):
        await ImageFetcher().fetch(f"{images.url}/redirect-to?url={target}")

    assert [r["path"] for r in images.requests] == ["/redirect-to"]


async def test_it_refuses_a_redirect_to_another_scheme(images, loopback_allowed):
    with pytest.raises(InvalidImage, match="http"):
        await ImageFetcher().fetch(f"{images.url}/redirect-to?url=file:///etc/passwd")


async def test_it_stops_reading_an_image_once_it_is_over_the_limit(
    images, loopback_allowed, settings
):
    settings.IMAGE_URL_MAX_BYTES = 100_000

    with pytest.raises(InvalidImage, match="larger than 100000 bytes"):
        await ImageFetcher().fetch(f"{images.url}/endless.png")

    assert images.endless_sent < ENDLESS_BYTES


async def test_it_refuses_an_image_whose_declared_length_is_over_the_limit(
    images, loopback_allowed, settings
):
    settings.IMAGE_URL_MAX_BYTES = 100_000

    with pytest.raises(InvalidImage, match="larger than 100000 bytes"):
        await ImageFetcher().fetch(f"{images.url}/declared-huge.png")


async def test_it_refuses_a_page_that_is_not_an_image(images, loopback_allowed):
    with pytest.raises(InvalidImage, match="text/html"):
        await ImageFetcher().fetch(f"{images.url}/page.html")


async def test_it_refuses_bytes_that_are_not_an_image_whatever_their_content_type(
    images, loopback_allowed
):
    with pytest.raises(InvalidImage, match="not a PNG, JPEG, GIF or WebP"):
        await ImageFetcher().fetch(f"{images.url}/disguised.png")


async def test_it_gives_up_on_an_image_that_does_not_arrive_in_time(
    images, loopback_allowed, settings
):
    settings.IMAGE_URL_TIMEOUT = 0.5
    started = time.monotonic()

    with pytest.raises(InvalidImage, match="within 0.5 seconds"):
        await ImageFetcher().fetch(f"{images.url}/trickle.png")

    # The bound is on the whole fetch: every read of the trickle comes within 0.1 s.
    assert time.monotonic() - started < 2


async def test_it_names_the_status_of_a_failed_fetch(images, loopback_allowed):
    with pytest.raises(InvalidImage, match="HTTP 404"):
        await ImageFetcher().fetch(f"{images.url}/missing.png")


# data: URIs


def test_it_decodes_a_data_uri():
    assert decode_data_uri(PNG_DATA_URI) == ("image/png", tiny_png())


@pytest.mark.parametrize(
    "url, words",
    [
        ("data:image/png,not-base64", "base64"),
        ("data:image/png;base64,@@@@", "base64"),
        ("data:text/html;base64,PGh0bWw+", "text/html"),
        ("data:;base64,AAAA", "PNG, JPEG, GIF or WebP"),
        ("data:image/png;base64," + "A" * 200_000, "larger than 100000 bytes"),
    ],
)
def test_it_refuses_a_data_uri_that_is_not_an_image_of_the_right_size(settings, url, words):
    settings.IMAGE_URL_MAX_BYTES = 100_000

    with pytest.raises(InvalidRequest, match=words) as refused:
        decode_data_uri(url, param="messages[0].content[1].image_url.url")

    assert refused.value.param == "messages[0].content[1].image_url.url"


# Through the chat endpoint


@through_the_api
async def test_it_sends_an_image_url_to_workers_ai_as_a_data_uri(
    api, alice, vision, upstream, images, loopback_allowed
):
    response = await _chat(api, alice, messages=_asking(_image(f"{images.url}/cat.png")))

    assert response.status_code == 200, response.json()
    assert _sent_images(upstream) == [PNG_DATA_URI]


@through_the_api
async def test_it_sends_an_image_url_to_workers_ai_as_a_data_uri_in_a_stream(
    api, alice, vision, upstream, images, loopback_allowed
):
    response = await _chat(
        api, alice, stream=True, messages=_asking(_image(f"{images.url}/cat.png"))
    )

    assert response.status_code == 200
    assert b"[DONE]" in b"".join([chunk async for chunk in response.streaming_content])
    assert _sent_images(upstream) == [PNG_DATA_URI]


@through_the_api
async def test_it_sends_a_data_uri_to_workers_ai_unchanged(api, alice, vision, upstream, images):
    response = await _chat(api, alice, messages=_asking(_image(PNG_DATA_URI)))

    assert response.status_code == 200
    assert _sent_images(upstream) == [PNG_DATA_URI]
    assert images.requests == []


@through_the_api
async def test_it_leaves_image_urls_to_an_openai_compatible_upstream_that_fetches_them(
    api, alice, openai_upstream, upstream, images, no_connections
):
    await Model.objects.filter(name="gpt-test-mini").aupdate(accepts_images=True)
    url = "https://images.example.test/cat.png"

    response = await _chat(api, alice, model="gpt-test-mini", messages=_asking(_image(url)))

    assert response.status_code == 200
    assert _sent_images(upstream, "/chat/completions") == [url]
    assert no_connections == []


@through_the_api
async def test_it_inlines_images_for_a_workers_ai_fallback(
    api, alice, vision, openai_upstream, upstream, images, loopback_allowed
):
    failing = await Model.objects.aget(name="gpt-test-fail-500")
    failing.accepts_images = True
    await failing.asave()
    await failing.fallback_links.acreate(fallback=vision, position=0)

    response = await _chat(
        api, alice, model=failing.name, messages=_asking(_image(f"{images.url}/cat.png"))
    )

    assert response.status_code == 200, response.json()
    assert _sent_images(upstream) == [PNG_DATA_URI]


@through_the_api
async def test_it_names_the_message_part_whose_image_could_not_be_fetched(
    api, alice, vision, upstream, no_connections
):
    messages = [
        {"role": "user", "content": "hello"},
        {"role": "user", "content": [_image("http://169.254.169.254/latest/meta-data/")]},
    ]

    response = await _chat(api, alice, messages=messages)

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[1].content[0].image_url.url"
    assert error["code"] == "invalid_image_url"
    assert "not allowed" in error["message"]
    assert upstream.requests == []
    assert no_connections == []


@through_the_api
async def test_it_refuses_an_image_url_for_workers_ai_when_fetching_is_turned_off(
    api, alice, vision, upstream, images, settings
):
    settings.IMAGE_URL_FETCH = False

    response = await _chat(api, alice, messages=_asking(_image(f"{images.url}/cat.png")))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[1].image_url.url"
    assert "data: URI" in error["message"]
    assert upstream.requests == []
    assert images.requests == []


@through_the_api
async def test_it_refuses_more_image_urls_than_the_limit(
    api, alice, vision, upstream, images, loopback_allowed, settings
):
    settings.IMAGE_URL_MAX_IMAGES = 2
    url = f"{images.url}/cat.png"

    response = await _chat(api, alice, messages=_asking(_image(url), _image(url), _image(url)))

    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == "messages[0].content[3].image_url.url"
    assert "at most 2" in error["message"]
    assert images.requests == []


@through_the_api
@pytest.mark.parametrize(
    "url",
    ["ftp://images.example.test/cat.png", "file:///etc/passwd", "data:text/plain;base64,aGk="],
)
async def test_it_refuses_an_image_that_is_neither_http_nor_a_data_uri_of_an_image(
    api, alice, vision, upstream, no_connections, url
):
    response = await _chat(api, alice, messages=_asking(_image(url)))

    assert response.status_code == 400
    assert response.json()["error"]["param"] == "messages[0].content[1].image_url.url"
    assert upstream.requests == []
    assert no_connections == []


# The fake upstream


def test_the_fake_workers_ai_refuses_an_http_image_url_as_workers_ai_does(upstream):
    response = httpx.post(
        f"{upstream.cloudflare_base_url}/accounts/{fake_upstream.CLOUDFLARE_ACCOUNT}"
        f"/ai/run/{VISION}",
        headers={"Authorization": f"Bearer {fake_upstream.CLOUDFLARE_TOKEN}"},
        json={"messages": _asking(_image("https://images.example.test/cat.png"))},
    )

    assert response.status_code == 400
    assert response.json()["errors"][0]["code"] == 5006
