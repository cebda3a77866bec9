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
