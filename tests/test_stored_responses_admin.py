"""The admin's listing of stored responses (/v1/responses): read-only, deletable."""

import pytest

from apikeys.models import ApiKey
from completions.models import StoredResponse

pytestmark = pytest.mark.django_db

STORED = "/admin/completions/storedresponse/"


@pytest.fixture
def stored():
    key, _ = ApiKey.objects.create_key(name="alice")
    return StoredResponse.objects.create(
        id="resp_abc",
        api_key=key,
        model="echo",
        input_items=[{"type": "message", "role": "user", "content": "hello"}],
        output_items=[],
        body={"id": "resp_abc", "object": "response"},
    )


def test_the_admin_lists_stored_responses_with_their_key(admin_client, stored):
    page = admin_client.get(STORED).content.decode()

    assert "resp_abc" in page
    assert "alice" in page


def test_the_admin_shows_a_stored_response_but_cannot_change_it(admin_client, stored):
    page = admin_client.get(f"{STORED}resp_abc/change/")

    assert page.status_code == 200
    assert "hello" in page.content.decode()
    assert admin_client.post(f"{STORED}resp_abc/change/", {"model": "other"}).status_code == 403
    assert admin_client.get(f"{STORED}add/").status_code == 403
