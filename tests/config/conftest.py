"""Shared fixtures for the configuration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"

# The ${env:...} references of examples/design.yaml, with values that are
# long enough to be recognised (and redacted) as secrets.
EXAMPLE_ENV = {
    "US_S3_ACCESS_KEY": "us-access-key-from-env-0123",
    "EU_S3_ACCESS_KEY": "eu-access-key-from-env-0123",
    "EU_S3_SECRET_KEY": "eu-secret-key-from-env-0123",
    "AWS_ACCESS_KEY_ID": "aws-access-key-id-from-env",
    "AWS_SECRET_ACCESS_KEY": "aws-secret-access-key-from-env",
    "QUAY_ROBOT_USER": "trafficd+canary-robot-user",
}


@pytest.fixture
def example_env(monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    for name, value in EXAMPLE_ENV.items():
        monkeypatch.setenv(name, value)
    return dict(EXAMPLE_ENV)
