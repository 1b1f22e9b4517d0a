from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def sqlite_yaml(tmp_path: Path) -> str:
    return f"engine:\n  kind: embedded\n  database: {{url: 'sqlite:///{tmp_path}/gateway.db'}}\n"
