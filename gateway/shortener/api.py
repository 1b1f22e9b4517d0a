"""The shortener's API: create a link, read its metadata and clicks, delete it.

Who may do what:
- create: anyone, or only API keys when `shortener.require_api_key` is true. It is false by default so
  that the embedded default works without declaring keys; a public deployment should turn it on (or put a
  rate-limit rule on POST /api/v1/urls), since an open shortener attracts abuse. The caller's user id (API
  key or trusted user header) becomes the link's owner; anonymous callers create ownerless links.
- bulk create (`POST /api/v1/urls/bulk`): as create, per item.
- list (`GET /api/v1/urls?owner=me`): a caller's own links, newest first, with cursor paging; an admin may
  name any owner.
- read, statistics (`GET /api/v1/urls/{code}/stats`) and delete: the owner, or an admin API key. An
  ownerless link's metadata and statistics are public, and only an admin may delete it. With
  `require_api_key`, reads and deletes need an API key too.

Endpoints raise the gateway's errors (gateway/exceptions.py); one handler renders them.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections import Counter
from datetime import timedelta
from typing import Any

import segno
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route

from gateway.access import caller, is_admin, user_of
from gateway.cursors import decode_cursor, encode_cursor, page_size
from gateway.exceptions import ApiKeyRequired, Forbidden, GatewayError, InvalidField, NotFound
from gateway.request_body import read_json
from gateway.responses import error_parts
from gateway.shortener.service import ShortenerService
from gateway.shortener.store import FACETS, Link
from gateway.shortener.validation import TAG, parse_create
from gateway.timestamps import format_day, parse_day


def service_of(request: Request) -> ShortenerService:
    """The shortener of the app serving `request`; refuses callers without a key when keys are required."""
    service: ShortenerService = request.app.state.shortener
    identity = caller(request)
    if service.config.require_api_key and (identity is None or identity.kind != "api_key"):
        raise ApiKeyRequired("this shortener needs an API key for that")
    return service


async def create(request: Request) -> Response:
    service = service_of(request)
    wanted = parse_create(await read_json(request), service.rules, time.time())
    link = await service.create(wanted, user_of(caller(request)))
    location = f"/api/v1/urls/{link.short_code}"
    return JSONResponse(service.describe(link), status_code=201, headers={"Location": location})


#: Links one bulk create may carry.
MAX_BULK = 100


async def create_many(request: Request) -> Response:
    """`POST /api/v1/urls/bulk` with `{"links": [...]}`: each item created on its own (concurrently, so their
    inserts share statements), each with its own answer: 201 and the link, or the error a single create gets."""
    service = service_of(request)
    body = await read_json(request)
    items = body.get("links") if isinstance(body, dict) else None
    if not isinstance(items, list) or not 1 <= len(items) <= MAX_BULK or (isinstance(body, dict) and len(body) != 1):
        raise InvalidField("links", f'the body must be {{"links": [...]}} with 1 to {MAX_BULK} links')
    owner = user_of(caller(request))
    now = time.time()

    async def one(item: object) -> dict[str, Any]:
        try:
            link = await service.create(parse_create(item, service.rules, now), owner)
        except GatewayError as exc:
            fields, _headers = error_parts(exc)
            return {"status": exc.status, "error": {"error": exc.error, "detail": str(exc), **fields}}
        return {"status": 201, "link": service.describe(link)}

    results = await asyncio.gather(*(one(item) for item in items))
    return JSONResponse({"results": results})


async def list_links(request: Request) -> Response:
    """`GET /api/v1/urls?owner=me&tag=&cursor=&limit=`: the caller's links, newest first (with `tag`, those tagged
    so; an admin may name any owner)."""
    service = service_of(request)
    identity = caller(request)
    query = request.query_params
    wanted = query.get("owner", "me")
    me = user_of(identity)
    owner = me if wanted == "me" else wanted
    if owner is None:
        raise Forbidden("listing links needs a user identity (an API key or a trusted user header)")
    if owner != me and not is_admin(identity):
        raise Forbidden("only an admin may list another owner's links")
    limit = page_size(query.get("limit"))
    cursor = query.get("cursor")
    after = decode_cursor(cursor) if cursor else None
    tag = query.get("tag")
    if tag is not None and not TAG.fullmatch(tag):
        raise InvalidField("tag", "a tag is 1 to 32 lower-case letters, digits and dashes, starting with one")
    links = await service.store.owned_by(owner, after=after, limit=limit + 1, tag=tag)
    page, more = links[:limit], len(links) > limit
    next_cursor = encode_cursor(page[-1].created_at, page[-1].short_code) if more else None
    return JSONResponse({"links": [service.describe(link) for link in page], "next_cursor": next_cursor})


async def readable_link(request: Request, service: ShortenerService, what: str) -> Link:
    """The path's link, if the caller may read it: its owner, an admin, or anyone for an ownerless link."""
    link = await existing_link(service, request.path_params["code"])
    if not (may_change(request, link) or link.owner is None):
        raise Forbidden(f"only the link's owner or an admin may read {what}")
    return link


async def read(request: Request) -> Response:
    service = service_of(request)
    link = await readable_link(request, service, "it")
    daily = await service.store.clicks_by_day(link.short_code)
    return JSONResponse(service.describe(link, daily=daily))


#: Days one statistics answer may span, and the span when `from` is not given.
STATS_MAX_DAYS, STATS_DEFAULT_DAYS = 366, 30
#: Referrer hosts and browsers listed per answer, most clicks first.
STATS_TOP = 50


async def stats(request: Request) -> Response:
    """`GET /api/v1/urls/{code}/stats?from=&to=`: clicks in a range of UTC days (inclusive; `to` defaults to
    today, `from` to 29 days before `to`), by day, device class, referrer host and browser family."""
    service = service_of(request)
    link = await readable_link(request, service, "its statistics")
    query = request.query_params
    last = parse_day("to", query["to"]) if "to" in query else parse_day("to", format_day(time.time()))
    first = parse_day("from", query["from"]) if "from" in query else last - timedelta(days=STATS_DEFAULT_DAYS - 1)
    if first > last:
        raise InvalidField("from", "from must not be after to")
    if (last - first).days >= STATS_MAX_DAYS:
        raise InvalidField("from", f"a statistics answer spans at most {STATS_MAX_DAYS} days")
    daily, facets = await service.store.click_stats(link.short_code, first.isoformat(), last.isoformat())
    by_day: Counter[str] = Counter()
    by_device: Counter[str] = Counter()
    for row in daily:
        by_day[row["day"]] += int(row["clicks"])
        by_device[row["agent"]] += int(row["clicks"])
    by_facet: dict[str, Counter[str]] = {facet: Counter() for facet in FACETS}
    for row in facets:
        by_facet[row["facet"]][row["value"]] += int(row["clicks"])
    return JSONResponse(
        {
            "short_code": link.short_code,
            "from": first.isoformat(),
            "to": last.isoformat(),
            "clicks": sum(by_day.values()),
            "by_day": [{"day": day, "clicks": by_day[day]} for day in sorted(by_day)],
            "by_device": _ranked("device", by_device),
            "by_referrer": _ranked("referrer", by_facet["referrer"])[:STATS_TOP],
            "by_browser": _ranked("browser", by_facet["browser"])[:STATS_TOP],
        }
    )


def _ranked(name: str, counts: Counter[str]) -> list[dict[str, Any]]:
    """Most clicks first; equal counts by name, so that answers are stable."""
    return [{name: key, "clicks": n} for key, n in sorted(counts.items(), key=lambda item: (-item[1], item[0]))]


#: QR module sizes in pixels a caller may ask for (`size`), and the default.
QR_SIZES, QR_DEFAULT_SIZE = range(1, 41), 4
QR_MEDIA = {"svg": "image/svg+xml", "png": "image/png"}


async def qr_code(request: Request) -> Response:
    """`GET /api/v1/urls/{code}/qr?format=svg|png&size=`: the short URL as a QR code, for whoever may read the
    link. Error correction M (15% of the symbol may be damaged), a quiet zone of 4 modules as ISO 18004 asks."""
    service = service_of(request)
    link = await readable_link(request, service, "it")
    kind = request.query_params.get("format", "svg")
    if kind not in QR_MEDIA:
        raise InvalidField("format", "format must be svg or png")
    try:
        scale = int(request.query_params.get("size", QR_DEFAULT_SIZE))
    except ValueError:
        scale = 0
    if scale not in QR_SIZES:
        raise InvalidField("size", f"size must be an integer from {QR_SIZES[0]} to {QR_SIZES[-1]} (pixels a module)")
    out = io.BytesIO()
    segno.make(service.short_url(link.short_code), error="m", boost_error=False).save(out, kind=kind, scale=scale)
    return Response(out.getvalue(), media_type=QR_MEDIA[kind], headers={"Cache-Control": "private, max-age=3600"})


async def delete(request: Request) -> Response:
    service = service_of(request)
    link = await existing_link(service, request.path_params["code"])
    if not may_change(request, link):
        raise Forbidden("only the link's owner or an admin may delete it")
    await service.delete(link)
    return Response(status_code=204)


async def existing_link(service: ShortenerService, code: str) -> Link:
    link = await service.store.get(code)
    if link is None or link.deleted_at is not None:
        raise NotFound(f"no short link '{code}'")
    return link


def may_change(request: Request, link: Link) -> bool:
    identity = caller(request)
    return is_admin(identity) or (link.owner is not None and link.owner == user_of(identity))


ROUTES: list[BaseRoute] = [
    Route("/api/v1/urls", create, methods=["POST"]),
    Route("/api/v1/urls", list_links, methods=["GET"]),
    Route("/api/v1/urls/bulk", create_many, methods=["POST"]),
    Route("/api/v1/urls/{code}", read, methods=["GET"]),
    Route("/api/v1/urls/{code}/qr", qr_code, methods=["GET"]),
    Route("/api/v1/urls/{code}/stats", stats, methods=["GET"]),
    Route("/api/v1/urls/{code}", delete, methods=["DELETE"]),
]
