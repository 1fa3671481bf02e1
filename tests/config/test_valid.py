"""Valid configurations: the examples, every storage driver, every actuator type, Quay import."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr

from tests.config.conftest import EXAMPLES
from trafficd.cli import main
from trafficd.config import ACTUATOR_TYPES, ConfigError, load
from trafficd.config.storage import DRIVERS

TESTDATA = Path(__file__).parent / "testdata"


@pytest.mark.usefixtures("example_env")
@pytest.mark.parametrize("path", sorted(EXAMPLES.glob("*.yaml")), ids=lambda p: p.stem)
def test_every_example_passes_check_config(path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check-config", "-c", str(path)]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.startswith(f"{path}: ok: ")
    assert len(out.splitlines()) == 1


@pytest.mark.usefixtures("example_env")
def test_design_example_reads_as_written() -> None:
    config = load(EXAMPLES / "design.yaml")
    assert config.vantage == "us-east"
    assert config.all_vantages == ["us-east"]
    assert config.quorum_size == 1
    assert config.probes.interval == 2.0
    assert config.probes.timeout == 1.5
    assert config.policy.drain_window == 600.0
    assert config.sites["us"].kubernetes is not None
    assert config.sites["us"].kubernetes.quayregistry == "example-registry"
    assert config.sites["eu"].command is not None
    assert config.sites["eu"].command.stop == ["ssh", "quay-eu-1", "systemctl", "stop", "quay"]
    assert config.sites["eu"].command.timeout == 60.0
    assert [a.ident for a in config.actuators] == [
        "dns-primary",
        "haproxy",
        "kubernetes",
        "command",
        "powerdns",
        "route53",
        "webhook",
    ]
    assert {a.type for a in config.actuators} == set(ACTUATOR_TYPES)
    # Inline storage overrides the location of the same name imported from Quay.
    us = config.storage["usstorage"]
    assert us.driver == "S3Storage"
    assert us.source.endswith("design.yaml")
    eu = config.storage["eustorage"]
    assert eu.driver == "RadosGWStorage"
    assert eu.params.hostname == "127.0.0.1"  # type: ignore[attr-defined]
    secret = us.params.s3_secret_key  # type: ignore[attr-defined]
    assert isinstance(secret, SecretStr)
    assert secret.get_secret_value() == "example-us-s3-secret-key-0123"
    token = config.api_tokens[0].token
    assert token is not None and token.get_secret_value() == "example-grafana-read-token-0123"
    assert config.registry_probe is not None
    assert config.registry_probe.username is not None
    assert config.registry_probe.username.get_secret_value() == "trafficd+canary-robot-user"


def test_quay_import_fills_storage_hostname_and_default_locations() -> None:
    config = load(EXAMPLES / "quay-import.yaml")
    assert set(config.storage) == {"usstorage", "eustorage"}
    assert all(loc.source.endswith("quay/config.yaml") for loc in config.storage.values())
    assert config.sites["us"].url == "https://quay.example.com"
    assert config.replication is not None
    assert config.replication.default_locations == ["usstorage", "eustorage"]


def test_quay_preference_is_the_default_site_storage(tmp_path: Path) -> None:
    quay = tmp_path / "quay.yaml"
    quay.write_text(
        "SERVER_HOSTNAME: registry.example.net\nPREFERRED_URL_SCHEME: http\n"
        "DISTRIBUTED_STORAGE_PREFERENCE: [b, a]\n"
        "DISTRIBUTED_STORAGE_CONFIG:\n"
        "  a: [LocalStorage, {storage_path: /a}]\n"
        "  b: [LocalStorage, {storage_path: /b}]\n"
    )
    conf = tmp_path / "trafficd.yaml"
    conf.write_text(
        f"vantage: v\nquay_config: {quay}\n"
        "storage:\n  b: [LocalStorage, {storage_path: /inline-b}]\n"
        "sites:\n  one: {connect: 127.0.0.1:1}\n"
    )
    config = load(conf)
    assert config.sites["one"].storage == ["b", "a"]
    assert config.sites["one"].url == "http://registry.example.net"
    assert config.storage["b"].params.storage_path == "/inline-b"  # type: ignore[attr-defined]
    assert config.storage["a"].params.storage_path == "/a"  # type: ignore[attr-defined]


def test_errors_in_quay_config_name_quay_config_file_and_line(tmp_path: Path) -> None:
    quay = tmp_path / "quay.yaml"
    quay.write_text(
        "DISTRIBUTED_STORAGE_CONFIG:\n"
        "  a:\n"
        "    - S3Storage\n"
        "    - storage_path: /a\n"
        "      s3_bucket: b\n"
        "      s3_buckett: typo\n"
    )
    conf = tmp_path / "trafficd.yaml"
    conf.write_text(
        f"vantage: v\nquay_config: {quay}\nsites:\n  one:\n    connect: h:1\n"
        "    url: https://q.example.com\n    storage: [a]\n"
    )
    with pytest.raises(ConfigError) as info:
        load(conf)
    assert [str(p) for p in info.value.problems] == [
        f"{quay}:6: DISTRIBUTED_STORAGE_CONFIG.a[1].s3_buckett: unknown key"
    ]


@pytest.mark.parametrize("driver", sorted(DRIVERS))
def test_every_storage_driver_has_a_valid_real_world_file(driver: str) -> None:
    config = load(TESTDATA / f"valid-storage-{driver}.yaml")
    (location,) = config.storage.values()
    assert location.driver == driver
    assert isinstance(location.params, DRIVERS[driver])
    assert location.family in {"s3", "gcs", "azure", "swift", "local", "multicdn"}


@pytest.mark.parametrize("kind", sorted(ACTUATOR_TYPES))
def test_every_actuator_type_has_a_valid_file(kind: str) -> None:
    config = load(TESTDATA / f"valid-actuator-{kind}.yaml")
    (actuator,) = config.actuators
    assert actuator.type == kind
    assert isinstance(actuator, ACTUATOR_TYPES[kind])


def test_the_union_lists_exactly_the_registry() -> None:
    from typing import get_args

    from trafficd.config.model import Actuator

    union, _field = get_args(Actuator)
    assert set(get_args(union)) == set(ACTUATOR_TYPES.values())
    for name, cls in ACTUATOR_TYPES.items():
        assert get_args(cls.model_fields["type"].annotation) == (name,)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), ("1.5s", 1.5)],
)
def test_durations(text: str, seconds: float) -> None:
    from trafficd.config.types import parse_duration

    assert parse_duration(text) == seconds


def test_flow_mapping_references_are_read_as_references(tmp_path: Path) -> None:
    (tmp_path / "tok").write_text("read-token-from-file\n")
    conf = tmp_path / "c.yaml"
    conf.write_text(
        "vantage: v\n"
        "api_tokens:\n  - {name: grafana, role: read, token: ${file:tok}}\n"
        "storage: {a: [LocalStorage, {storage_path: /a}]}\n"
        "sites: {one: {connect: 'h:1', url: 'https://q.example.com', storage: [a]}}\n"
    )
    config = load(conf)
    token = config.api_tokens[0].token
    assert token is not None and token.get_secret_value() == "read-token-from-file"
