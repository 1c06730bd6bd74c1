"""The fallback load generator when wrk is not installed: asyncio + httpx in its own process.

    python -m bench.loadgen '{"url": ..., "seconds": 5, "kind": "form", "connections": 32}'

Prints one JSON line: requests, errors (non-2xx/3xx or transport), seconds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import time
from typing import Any

import httpx
import orjson


def body(kind: str, size: int, who: str) -> bytes:
    """The same unique bodies as the wrk script of bench.common."""
    if kind == "batch":
        calls = [
            {
                "type": "track",
                "userId": f"u{who}-{i}",
                "event": "Viewed",
                "messageId": f"m{who}-{i}",
                "properties": {"plan": "pro", "n": i},
            }
            for i in range(1, size + 1)
        ]
        return orjson.dumps({"batch": calls})
    return orjson.dumps(
        {
            "email": f"u{who}@bench.example",
            "first_name": "Bench",
            "last_name": "User",
            "company": "Bench Corp",
            "consent_marketing": True,
        }
    )


async def paced(spec: dict[str, Any]) -> dict[str, Any]:
    """A steady background: ``rate`` events a second as batches of ``size``, ``seconds`` long."""
    size = int(spec["size"])
    interval = size / float(spec["rate"])
    requests = errors = 0
    start = time.monotonic()
    deadline = start + float(spec["seconds"])
    tick = start
    async with httpx.AsyncClient(headers=spec["headers"], timeout=10) as client:
        while tick < deadline:
            try:
                resp = await client.post(
                    spec["url"], content=body("batch", size, f"{spec['run']}-{requests}")
                )
                errors += resp.status_code >= 400
            except httpx.HTTPError:
                errors += 1
            requests += 1
            tick += interval
            await asyncio.sleep(max(0.0, tick - time.monotonic()))
    return {"requests": requests, "errors": errors, "seconds": time.monotonic() - start}


async def main(spec: dict[str, Any]) -> dict[str, Any]:
    if spec.get("rate"):
        return await paced(spec)
    counter = itertools.count(1)
    requests = errors = 0
    deadline = time.monotonic() + float(spec["seconds"])
    limits = httpx.Limits(max_connections=int(spec["connections"]))

    async def worker(client: httpx.AsyncClient, n: int) -> None:
        nonlocal requests, errors
        while time.monotonic() < deadline:
            who = f"{spec['run']}-{n}-{next(counter)}"
            try:
                resp = await client.post(
                    spec["url"], content=body(spec["kind"], int(spec["size"]), who)
                )
                if resp.status_code >= 400:
                    errors += 1
            except httpx.HTTPError:
                errors += 1
            requests += 1

    start = time.monotonic()
    async with httpx.AsyncClient(limits=limits, headers=spec["headers"], timeout=10) as client:
        await asyncio.gather(*(worker(client, n) for n in range(int(spec["connections"]))))
    return {"requests": requests, "errors": errors, "seconds": time.monotonic() - start}


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(json.loads(sys.argv[1])))))
