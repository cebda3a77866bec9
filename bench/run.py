"""Measure what the gateway adds, side by side with a bare proxy and the upstream itself.

    .venv/bin/python -m bench.run [--seconds 5] [--streams 1000] [--events 100]

Starts, on loopback: the bench upstream (bench/upstream.py), the gateway under daphne on a
fresh SQLite database (or --database-url), and the bare proxy (bench/bare_proxy.py) under
daphne; then drives each from this process with aiohttp and prints one table. Each server is
one daphne process, as in production; this process's load competes with them for the same
cores, equally for each target.
"""

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

ROOT = Path(__file__).resolve().parent.parent
MODEL = "@cf/bench/model"
ACCOUNT = "bench-account"
CHAT_BODY = {"model": MODEL, "messages": [{"role": "user", "content": "Hello bench"}]}
UPSTREAM_BODY = {"messages": [{"role": "user", "content": "Hello bench"}], "stream": False}
# Seconds each target is loaded before measuring, so that connections are open.
WARMUP_SECONDS = 1.0

SETUP = """
from apikeys.models import ApiKey
from completions.models import Model, Provider

provider = Provider.objects.create(
    name="bench", kind="cloudflare", base_url="{base}", account_id="{account}",
    api_key_env="GATEWAY_PROVIDER_BENCH_TOKEN",
)
Model.objects.create(name="{model}", provider=provider)
key, secret = ApiKey.objects.create_key(name="bench", rate_limit="1000000/s")
print(secret)
"""


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(url, process, timeout=30):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{process.args} exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), 0.2):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"{url} did not start")


def peak_rss_mb(pid):
    """Return the process's peak resident memory (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values, fraction):
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


class Servers:
    def __init__(self, args):
        self.args = args
        self.processes = []
        self.folder = Path(tempfile.mkdtemp(prefix="gateway-bench-"))

    def start(self, command, env, name):
        log = open(self.folder / f"{name}.log", "w")  # noqa: SIM115 - lives as long as the process
        process = subprocess.Popen(command, env=env, cwd=ROOT, stdout=log, stderr=log)
        self.processes.append(process)
        return process

    def __enter__(self):
        python = sys.executable
        upstream_port, gateway_port, bare_port = free_port(), free_port(), free_port()
        self.upstream = f"http://127.0.0.1:{upstream_port}"
        self.upstream_run = f"{self.upstream}/client/v4/accounts/{ACCOUNT}/ai/run/{MODEL}"
        upstream = self.start(
            [
                python,
                "-m",
                "bench.upstream",
                "--port",
                str(upstream_port),
                "--events",
                str(self.args.events),
                "--interval",
                str(self.args.interval),
            ],
            os.environ,
            "upstream",
        )
        wait_for(self.upstream, upstream)

        database = self.args.database_url or f"sqlite:///{self.folder / 'db.sqlite3'}"
        env = {
            **os.environ,
            "ENVIRONMENT": "development",
            "DEBUG": "false",
            "DATABASE_URL": database,
            "GATEWAY_PROVIDER_BENCH_TOKEN": "bench-token",
            "LOG_LEVEL": "WARNING",
            "UPSTREAM_MAX_CONNECTIONS": str(max(1024, self.args.streams + 64)),
        }
        manage = [python, "manage.py"]
        subprocess.run([*manage, "migrate", "--no-input", "-v0"], env=env, cwd=ROOT, check=True)
        setup = SETUP.format(base=f"{self.upstream}/client/v4", account=ACCOUNT, model=MODEL)
        self.secret = subprocess.run(
            [*manage, "shell", "-c", setup],
            env=env,
            cwd=ROOT,
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[-1]
        daphne = [python, "-m", "daphne", "-v", "0", "-b", "127.0.0.1"]
        # The gateway as production runs it: daphne with request bodies bounded.
        gateway_server = [python, "-m", "gateway.server", "-v", "0", "-b", "127.0.0.1"]
        self.gateway_process = self.start(
            [*gateway_server, "-p", str(gateway_port), "gateway.asgi:application"], env, "gateway"
        )
        self.gateway = f"http://127.0.0.1:{gateway_port}"
        bare_env = {
            **env,
            "BENCH_UPSTREAM_URL": self.upstream_run,
            "DJANGO_SETTINGS_MODULE": "bench.bare_settings",
        }
        bare = self.start(
            [*daphne, "-p", str(bare_port), "bench.bare_proxy:application"], bare_env, "bare"
        )
        self.bare = f"http://127.0.0.1:{bare_port}"
        wait_for(self.gateway, self.gateway_process)
        wait_for(self.bare, bare)
        return self

    def __exit__(self, *exc):
        for process in self.processes:
            process.terminate()
        for process in self.processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()


async def load(url, body, headers, concurrency, seconds):
    """Send requests from `concurrency` clients for `seconds`; return (rps, latencies in ms)."""
    latencies = []
    errors = 0
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def client(until, record):
            nonlocal errors
            while time.monotonic() < until:
                started = time.perf_counter()
                async with session.post(url, data=payload, headers=headers) as response:
                    await response.read()
                    if response.status != 200:
                        errors += 1
                if record:
                    latencies.append((time.perf_counter() - started) * 1000)

        warm = time.monotonic() + WARMUP_SECONDS
        await asyncio.gather(*(client(warm, False) for _ in range(concurrency)))
        started = time.monotonic()
        await asyncio.gather(*(client(started + seconds, True) for _ in range(concurrency)))
        elapsed = time.monotonic() - started
    if errors:
        raise RuntimeError(f"{url}: {errors} answers were not 200")
    return len(latencies) / elapsed, latencies


async def streams(url, body, headers, count):
    """Open `count` streams at once; return (ms to first event of each, seconds, completed)."""
    first_event = []
    completed = 0
    payload = json.dumps(body).encode()
    headers = {"Content-Type": "application/json", **headers}
    timeout = aiohttp.ClientTimeout(total=600)
    connector = aiohttp.TCPConnector(limit=count)
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:

        async def one():
            nonlocal completed
            started = time.perf_counter()
            seen_content = False
            async with session.post(url, data=payload, headers=headers) as response:
                async for line in response.content:
                    # The first event that carries text: the gateway's first chunk carries
                    # only the role, and the upstream's first event the first token.
                    if not seen_content and b"tok0" in line:
                        seen_content = True
                        first_event.append((time.perf_counter() - started) * 1000)
                    if line.startswith(b"data: [DONE]"):
                        completed += 1

        started = time.monotonic()
        await asyncio.gather(*(one() for _ in range(count)))
        elapsed = time.monotonic() - started
    return first_event, elapsed, completed


def row(name, concurrency, rps, latencies):
    return (
        f"| {name} | {concurrency} | {rps:,.0f} | {statistics.median(latencies):.2f} "
        f"| {percentile(latencies, 0.99):.2f} |"
    )


async def main(args):
    with Servers(args) as servers:
        auth = {"Authorization": f"Bearer {servers.secret}"}
        gateway_url = f"{servers.gateway}/v1/chat/completions"
        targets = [
            ("upstream (direct)", servers.upstream_run, UPSTREAM_BODY, {}),
            ("bare proxy", f"{servers.bare}/forward", UPSTREAM_BODY, {}),
            ("gateway", gateway_url, CHAT_BODY, auth),
        ]
        results = {}
        lines = ["| target | concurrency | requests/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        for concurrency in (1, 32):
            for name, url, body, headers in targets:
                rps, latencies = await load(url, body, headers, concurrency, args.seconds)
                results[name, concurrency] = (rps, latencies)
                lines.append(row(name, concurrency, rps, latencies))
        print("\n".join(lines))

        added = statistics.median(results["gateway", 1][1]) - statistics.median(
            results["upstream (direct)", 1][1]
        )
        bare_added = statistics.median(results["bare proxy", 1][1]) - statistics.median(
            results["upstream (direct)", 1][1]
        )
        ratio = results["gateway", 32][0] / results["bare proxy", 32][0]
        print()
        print(
            f"added latency p50 at concurrency 1: gateway {added:.2f} ms "
            f"(target <= 2 ms), bare proxy {bare_added:.2f} ms"
        )
        print(f"throughput at concurrency 32: gateway / bare proxy = {ratio:.0%} (target >= 60%)")

        direct = await streams(
            servers.upstream_run, {**UPSTREAM_BODY, "stream": True}, {}, args.streams
        )
        gateway = await streams(gateway_url, {**CHAT_BODY, "stream": True}, auth, args.streams)
        print()
        print(
            f"{args.streams} concurrent streams of {args.events} events, "
            f"{args.interval * 1000:.0f} ms apart:"
        )
        print("| target | completed | seconds | first token p50 ms | first token p99 ms |")
        print("|---|---|---|---|---|")
        for name, (first, elapsed, completed) in (
            ("upstream (direct)", direct),
            ("gateway", gateway),
        ):
            print(
                f"| {name} | {completed}/{args.streams} | {elapsed:.1f} "
                f"| {statistics.median(first):.1f} | {percentile(first, 0.99):.1f} |"
            )
        print(
            f"time to first token added by the gateway, p50: "
            f"{statistics.median(gateway[0]) - statistics.median(direct[0]):.1f} ms"
        )
        print(
            f"gateway peak memory: {peak_rss_mb(servers.gateway_process.pid):.0f} MB "
            f"(target < 250 MB)"
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0, help="measured seconds per target")
    parser.add_argument("--streams", type=int, default=1000)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between events")
    parser.add_argument("--database-url", help="the gateway's database (default: SQLite)")
    asyncio.run(main(parser.parse_args()))
