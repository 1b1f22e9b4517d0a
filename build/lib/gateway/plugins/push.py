"""Mobile push in the shape of FCM HTTP v1: POST {base_url}/v1/projects/{project}/messages:send, one per token.

The bearer token comes from `access_token` or is read from `access_token_file` before every send, so an
external refresher (gcloud, a sidecar) can rotate it. The send succeeds when any device token is accepted;
with none accepted it is retried if any failure was transient, else it is permanent (UNREGISTERED...).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx
from pydantic import Field, model_validator

from gateway.notify.channel import (
    Channel,
    Duration,
    HttpSupport,
    Message,
    Options,
    PermanentError,
    RetryableError,
    SendResult,
    parse_options,
)


class PushOptions(Options):
    base_url: str = "https://fcm.googleapis.com"
    project: str = Field(min_length=1)
    access_token: str | None = None
    access_token_file: str | None = None
    timeout: Duration = 10.0

    @model_validator(mode="after")
    def _token(self) -> PushOptions:
        if (self.access_token is None) == (self.access_token_file is None):
            raise ValueError("give exactly one of access_token and access_token_file")
        return self


class PushChannel(HttpSupport, Channel):
    address_field = "device_tokens"

    def __init__(self, name: str, options: Mapping[str, Any], *, public_url: str = "") -> None:
        super().__init__(name, options, public_url=public_url)
        self.options = parse_options(PushOptions, options)

    async def send(self, message: Message) -> SendResult:
        if not message.to:
            raise PermanentError("no device token")
        url = f"{self.options.base_url.rstrip('/')}/v1/projects/{self.options.project}/messages:send"
        headers = {"authorization": f"Bearer {self._token()}"}
        data = {"message_id": message.id, **{key: str(value) for key, value in message.data.items()}}
        accepted: list[str] = []
        transient: list[str] = []
        permanent: list[str] = []
        for token in message.to:
            body = {
                "message": {
                    "token": token,
                    "notification": {"title": message.subject or "", "body": message.body},
                    "data": data,
                }
            }
            try:
                response = await self._http().post(url, json=body, headers=headers)
            except httpx.HTTPError as exc:
                transient.append(f"{type(exc).__name__}: {exc}")
                continue
            if response.status_code == 200:
                accepted.append(str(response.json().get("name", "")))
            elif response.status_code in (401, 403, 429) or response.status_code >= 500:
                transient.append(f"HTTP {response.status_code}: {response.text[:200]}")
            else:
                permanent.append(f"HTTP {response.status_code}: {response.text[:200]}")
        if accepted:
            return SendResult(provider_id=",".join(accepted))
        if transient:
            raise RetryableError("; ".join(transient))
        raise PermanentError("; ".join(permanent))

    def _token(self) -> str:
        if self.options.access_token is not None:
            return self.options.access_token
        assert self.options.access_token_file is not None
        return Path(self.options.access_token_file).read_text().strip()

    def http_timeout(self) -> httpx.Timeout:
        return httpx.Timeout(self.options.timeout)
