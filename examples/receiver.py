"""A webhook receiver for trying the notifications out: it verifies each Standard Webhooks signature, applies each
webhook-id once, and shows what it received.

    python -m examples.receiver --port 9100 --secret whsec_...

POST /hook takes deliveries (401 when the signature does not verify); GET / lists the last ones received.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import hmac
import json
import os
from collections import OrderedDict
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

SECRET_ENV = "WEBHOOK_SECRET"
KEEP = 100


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
    except (KeyError, ValueError):
        return False
    expected = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
    offered = [part.removeprefix("v1,") for part in headers.get("webhook-signature", "").split()]
    return any(hmac.compare_digest(expected, signature) for signature in offered)


def create_app(secret: str | None) -> Starlette:
    received: OrderedDict[str, Any] = OrderedDict()
    counts = {"deliveries": 0, "duplicates": 0, "refused": 0}

    async def hook(request: Request) -> Response:
        body = await request.body()
        headers = {key.lower(): value for key, value in request.headers.items()}
        if secret and not verify(secret, headers, body):
            counts["refused"] += 1
            return JSONResponse({"error": "bad signature"}, status_code=401)
        counts["deliveries"] += 1
        webhook_id = headers.get("webhook-id", "")
        if webhook_id in received:
            counts["duplicates"] += 1  # a redelivery: acknowledged, not applied again
        else:
            received[webhook_id] = json.loads(body or b"null")
            while len(received) > KEEP:
                received.popitem(last=False)
            print(f"received {webhook_id}: {received[webhook_id]}", flush=True)
        return Response(status_code=204)

    async def index(request: Request) -> Response:
        return JSONResponse({**counts, "last": list(received.items())[-10:]})

    return Starlette(routes=[Route("/hook", hook, methods=["POST"]), Route("/", index)])


def main() -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9100)
    parser.add_argument("--secret", default=os.environ.get(SECRET_ENV), help=f"whsec_... (default: ${SECRET_ENV})")
    args = parser.parse_args()
    uvicorn.run(create_app(args.secret), host=args.host, port=args.port, access_log=False, log_level="warning")


if __name__ == "__main__":
    main()
