"""Secret values never reach check-config's output, a repr, or an exception message."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.config.conftest import EXAMPLES
from trafficd.cli import main
from trafficd.config import ConfigError, load

SECRET = "s3cr3t-value-that-must-never-show-0123"


def _write(tmp_path: Path, body: str) -> Path:
    (tmp_path / "secret").write_text(SECRET + "\n")
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "vantage: v\n"
        "storage:\n"
        "  a:\n"
        "    - S3Storage\n"
        "    - {s3_bucket: b, storage_path: /p, s3_access_key: ${env:TEST_KEY},"
        " s3_secret_key: ${file:secret}}\n"
        "sites: {one: {connect: 'h:1', url: 'https://q.example.com', storage: [a]}}\n" + body
    )
    return conf


def test_secret_not_in_repr_or_dump(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_KEY", SECRET + "-env")
    config = load(_write(tmp_path, ""))
    params = config.storage["a"].params
    assert params.s3_secret_key.get_secret_value() == SECRET  # type: ignore[attr-defined]
    for text in (repr(config), str(config), repr(params), config.model_dump_json()):
        assert SECRET not in text


def test_secret_not_in_check_config_output(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("TEST_KEY", SECRET + "-env")
    assert main(["check-config", "-c", str(_write(tmp_path, ""))]) == 0
    out, err = capsys.readouterr()
    assert SECRET not in out + err


def test_secret_not_in_errors_even_when_the_secret_is_the_bad_value(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The secret is resolved into keys whose validation fails: a port and a URL.
    monkeypatch.setenv("TEST_KEY", SECRET)
    conf = _write(
        tmp_path,
        "listen: ${file:secret}\n"
        "actuators:\n  - {type: webhook, url: '${file:secret}', token: '${env:TEST_KEY}'}\n",
    )
    with pytest.raises(ConfigError) as info:
        load(conf)
    message = str(info.value)
    assert "listen: invalid address '<redacted>'" in message
    assert "url: invalid URL '<redacted>'" in message
    assert SECRET not in message
    assert main(["check-config", "-c", str(conf)]) == 2
    out, err = capsys.readouterr()
    assert SECRET not in out + err
    assert err.count("\n") == 2


def test_missing_references_name_the_key_and_the_reference_only(tmp_path: Path) -> None:
    conf = _write(tmp_path, "")
    with pytest.raises(ConfigError) as info:
        load(conf, environ={})
    assert [str(p) for p in info.value.problems] == [
        f"{conf}:5: storage.a[1].s3_access_key: ${{env:TEST_KEY}}: "
        "environment variable TEST_KEY is not set"
    ]


def test_secrets_inline_in_quay_config_are_redacted_too(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    quay = tmp_path / "quay.yaml"
    quay.write_text(
        (EXAMPLES / "quay" / "config.yaml").read_text().replace("port: 443", "port: [443]", 1)
    )
    conf = tmp_path / "c.yaml"
    conf.write_text(
        f"vantage: v\nquay_config: {quay}\n"
        "sites: {one: {connect: 'h:1', storage: [eustorage]}}\n"
    )
    assert main(["check-config", "-c", str(conf)]) == 2
    _out, err = capsys.readouterr()
    assert "usstorage[1].port: input should be a valid integer" in err
    assert "example-eu-secret-key-0123" not in err
