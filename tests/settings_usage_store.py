"""The gateway's settings with the usage writer's store that TEST_USAGE_WRITER_STORE names
(a class in tests/usage_stores.py), for a daphne under test."""

import os

from gateway.settings import *  # noqa: F403

USAGE_WRITER_STORE = os.environ["TEST_USAGE_WRITER_STORE"]
