from asgiref.sync import sync_to_async
from django.db import connections


def close_connections():
    """Close this thread's database connections, unless a transaction holds them.

    A test's transaction is the only open one on the request path; closing it would
    throw away the test's data.
    """
    for connection in connections.all(initialized_only=True):
        if not connection.in_atomic_block:
            connection.close()


aclose_connections = sync_to_async(close_connections)


def off_the_request_thread(function):
    """Make an async function that runs `function` in a pooled thread, then closes the
    database connections it opened there.

    Django runs the sync code of each request in a thread made for that request. The
    request path's rare reads (a key or the model catalogue not in the process cache, a
    sum of usage for a limit) go to a small shared pool instead: no thread is made per
    request, and no request, nor any open stream, holds a connection.
    """

    def run_and_close(*args, **kwargs):
        try:
            return function(*args, **kwargs)
        finally:
            close_connections()

    pooled = sync_to_async(run_and_close, thread_sensitive=False)
    in_request_thread = sync_to_async(function)

    async def call(*args, **kwargs):
        if separate_threads:
            return await pooled(*args, **kwargs)
        return await in_request_thread(*args, **kwargs)

    return call


# False in tests that hold everything in one transaction on the test's own connection,
# which no other thread's connection can see into (see tests/conftest.py).
separate_threads = True
