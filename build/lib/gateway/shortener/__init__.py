"""Short links: POST /api/v1/urls to create, GET /{code} to follow (see service.py for how the parts connect)."""

from __future__ import annotations
