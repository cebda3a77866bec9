"""/readyz tells whether limits are counted across processes (a shared cache) or not."""

import os

import pytest
from django.core.cache.backends.filebased import FileBasedCache
from django.core.cache.backends.locmem import LocMemCache
from django.core.cache.backends.redis import RedisCache

from gateway.memo import cache_kind

pytestmark = pytest.mark.django_db(transaction=True)


async def test_readyz_says_which_kind_of_cache_the_limits_are_counted_in(api):
    response = await api.get("/readyz")

    assert response.status_code == 200
    # The suite runs on the in-process cache, and again on Redis (make test-production-stack).
    expected = "shared" if os.environ.get("REDIS_URL") else "local"
    assert response.json()["cache_kind"] == expected


def test_redis_and_file_caches_are_shared_and_the_in_process_one_is_local(tmp_path):
    # Made without connecting: Redis is reached on the first command.
    assert cache_kind(RedisCache("redis://127.0.0.1:1/0", {})) == "shared"
    assert cache_kind(FileBasedCache(str(tmp_path), {})) == "shared"
    assert cache_kind(LocMemCache("readiness", {})) == "local"
