"""`manage.py check --deploy` finds nothing to warn about in production settings."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# 50 characters, more than 5 of them different: what Django's deploy check asks of a key.
PRODUCTION_SECRET_KEY = "production-only-" + "k7Qx" * 9


def test_the_deploy_check_is_clean_in_production(tmp_path):
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("SECURE_", "DEBUG"))}
    env = {
        **clean,
        "DJANGO_SETTINGS_MODULE": "gateway.settings",
        "ENVIRONMENT": "production",
        "SECRET_KEY": PRODUCTION_SECRET_KEY,
        "ALLOWED_HOSTS": "api.example.com",
        "METRICS_TOKEN": "scrape-" + "m3Tz" * 6,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'db.sqlite3'}",
        # Rate limits need a cache every process shares; nothing connects to it here.
        "REDIS_URL": "redis://127.0.0.1:6379/0",
    }

    process = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )

    assert process.returncode == 0, process.stderr
    assert "no issues" in process.stdout
