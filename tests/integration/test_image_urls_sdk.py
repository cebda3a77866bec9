"""Images by URL through the official openai SDK, against daphne and the fake Workers AI.

The gateway allows 127.0.0.1/32, as an operator allows an internal image server, and
trusts the test's own certificate authority through SSL_CERT_FILE, as an operator with an
internal authority would.
"""

import base64

import openai
import pytest

from tests import fake_upstream
from tests.image_server import ImageServer, tiny_png, tls_contexts
from tests.live_server import LiveGateway

pytestmark = pytest.mark.integration

VISION = "@cf/meta/llama-4-scout-17b-16e-instruct"

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, Provider

cf = Provider.objects.create(
    name="cloudflare", kind="cloudflare", base_url="{base_url}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_TEST_CF_TOKEN",
)
Model.objects.create(name="{vision}", provider=cf, accepts_images=True)
key, secret = ApiKey.objects.create_key(name="alice")
print("secret", secret)
"""


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    folder = tmp_path_factory.mktemp("image-tls")
    server_tls, _ = tls_contexts("127.0.0.1", folder)
    with ImageServer(ssl_context=server_tls) as server:
        server.ca_file = folder / "ca.pem"
        yield server


@pytest.fixture(scope="module")
def live(upstream, images, tmp_path_factory):
    setup = SETUP.format(
        base_url=upstream.cloudflare_base_url,
        account=fake_upstream.CLOUDFLARE_ACCOUNT,
        vision=VISION,
    )
    with LiveGateway(
        tmp_path_factory.mktemp("images"),
        setup,
        GATEWAY_PROVIDER_TEST_CF_TOKEN=fake_upstream.CLOUDFLARE_TOKEN,
        IMAGE_URL_ALLOWED_NETWORKS="127.0.0.1/32",
        SSL_CERT_FILE=str(images.ca_file),
    ) as gateway:
        yield gateway


@pytest.fixture
def client(live):
    return openai.OpenAI(
        base_url=f"{live.base_url}/v1", api_key=live.printed["secret"], max_retries=0
    )


def _asking(url):
    return [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "what is this?"},
                {"type": "image_url", "image_url": {"url": url}},
            ],
        }
    ]


def test_an_https_image_url_reaches_workers_ai_as_a_data_uri(client, upstream, images):
    completion = client.chat.completions.create(
        model=VISION, messages=_asking(f"{images.url}/cat.png")
    )

    assert completion.choices[0].message.content
    [sent] = [r for r in upstream.requests if "/ai/run/" in r["path"]]
    image = sent["json"]["messages"][0]["content"][1]["image_url"]["url"]
    assert image == "data:image/png;base64," + base64.b64encode(tiny_png()).decode()


def test_an_image_at_an_internal_address_is_a_400_naming_the_part(client, upstream):
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model=VISION, messages=_asking("http://169.254.169.254/latest/meta-data/")
        )

    assert refused.value.param == "messages[0].content[1].image_url.url"
    assert refused.value.code == "invalid_image_url"
    assert upstream.requests == []
