"""Runs tests/clients/node/run.mjs once per test session: Node's clients, all scenarios at once.

`npm ci` (scripts/node-clients, run by `make install`) puts the pinned packages in
tests/clients/node/node_modules; nothing is fetched while the tests run.
"""

import json
import shutil
import subprocess
from pathlib import Path

from tests.clients.conftest import CHAT_MODEL, EMBEDDING_MODEL, REASONING_MODEL

FOLDER = Path(__file__).resolve().parent / "node"
# Seconds the whole batch may take: each scenario stops itself after 45 s.
BATCH_TIMEOUT = 120


def run_scenarios(gateway, names):
    """Return {scenario: result} as run.mjs prints it."""
    if not (FOLDER / "node_modules").is_dir():
        raise RuntimeError("tests/clients/node/node_modules is missing: run `make install`")
    config = {
        "baseURL": gateway.api_base,
        "keys": {name: gateway.printed[name] for name in ("alice", "bob", "dave")},
        "models": {
            "chat": CHAT_MODEL,
            "embeddings": EMBEDDING_MODEL,
            "reasoning": REASONING_MODEL,
        },
        "scenarios": names,
    }
    finished = subprocess.run(
        [shutil.which("node") or "node", "run.mjs"],
        input=json.dumps(config),
        cwd=FOLDER,
        capture_output=True,
        text=True,
        timeout=BATCH_TIMEOUT,
    )
    if finished.returncode != 0:
        raise RuntimeError(f"run.mjs failed: {finished.stderr[-2000:]}")
    return json.loads(finished.stdout)
