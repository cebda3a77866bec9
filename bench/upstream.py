"""A fast stand-in for Workers AI, run as its own process by bench/run.py.

POST /client/v4/accounts/{account}/ai/run/{model}
    non-streamed: a short answer with usage
    streamed: --events SSE events, --interval seconds apart, then the usage event
    and [DONE]
"""

import argparse
import asyncio
import json

from aiohttp import web

USAGE = {"prompt_tokens": 5, "completion_tokens": 3, "total_tokens": 8}
ANSWER = json.dumps(
    {"result": {"response": "Hello from bench", "usage": USAGE}, "success": True, "errors": []}
).encode()


async def run(request):
    body = await request.json()
    if not body.get("stream"):
        return web.Response(body=ANSWER, content_type="application/json")
    events = request.app["events"]
    interval = request.app["interval"]
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await response.prepare(request)
    for index in range(events):
        if interval:
            await asyncio.sleep(interval)
        await response.write(b'data: {"response": "tok%d "}\n\n' % index)
    usage = {"prompt_tokens": 5, "completion_tokens": events, "total_tokens": 5 + events}
    await response.write(
        b"data: " + json.dumps({"response": "", "usage": usage}).encode() + b"\n\n"
    )
    await response.write(b"data: [DONE]\n\n")
    return response


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--events", type=int, default=100)
    parser.add_argument("--interval", type=float, default=0.0)
    args = parser.parse_args()
    app = web.Application()
    app["events"] = args.events
    app["interval"] = args.interval
    app.router.add_post("/client/v4/accounts/{account}/ai/run/{model:.+}", run)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
