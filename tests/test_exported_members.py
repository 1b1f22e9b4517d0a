from __future__ import annotations

import gateway


def test_all_exports_exist_and_nothing_else_is_public() -> None:
    for name in gateway.__all__:
        assert getattr(gateway, name) is not None
    assert gateway.create_app.__module__ == "gateway.app"
    assert gateway.Settings.__module__ == "gateway.config.models"
    assert gateway.RateLimitMiddleware.__module__ == "gateway.ratelimit.middleware"
