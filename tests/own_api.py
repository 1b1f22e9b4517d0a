"""One gateway configuration with every own-API system on (embedded), an admin key and a user's key: what the
own-API tests (conventions, the OpenAPI document) run against."""

from __future__ import annotations

from pathlib import Path

from tests.notify.harness import ADMIN_KEY, TEMPLATES

USER_KEY = "user-key-0001"


def own_api_config(directory: Path) -> str:
    templates = "\n".join("    " + line for line in TEMPLATES.splitlines())
    return f"""
server: {{access_log: false, public_url: "http://gw.test"}}
engine: {{kind: embedded, database: {{url: "sqlite:///{directory}/gateway.db"}}}}
identities:
  api_keys:
    - {{key: {ADMIN_KEY}, user_id: root, tier: premium, admin: true}}
    - {{key: {USER_KEY}, user_id: alice, tier: free}}
ratelimit:
  tiers: [anonymous, free, premium]
  rules:
    - {{name: api, tier: free, match: "/api/v1/**", windows: ["100000/1m"]}}
notifications:
  channels:
    log: {{plugin: log}}
  templates:
{templates}
"""
