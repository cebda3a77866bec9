"""/readyz tells whether limits are counted across processes (a shared cache) or not."""

import pytest
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from gateway.memo import cache_kind

pytestmark = pytest.mark.django_db(transaction=True)


async def test_readyz_says_the_cache_is_local_to_this_process(api):
    response = await api.get("/readyz")

    assert response.status_code == 200
    # The tests run on Django's in-process cache, as development does.
    assert response.json()["cache_kind"] == "local"


def test_a_redis_cache_is_shared_and_an_in_process_one_is_local():
    # Made without connecting: Redis is reached on the first command.
    assert cache_kind(RedisCache("redis://127.0.0.1:1/0", {})) == "shared"
    assert cache_kind(LocMemCache("readiness", {})) == "local"
