"""Every rule of the configuration has an invalid file here and its exact message.

Each `testdata/invalid-*.yaml` says what it breaks on its first line and the
problems it must produce as `# expect: LINE: key.path: message` lines at the end.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from trafficd.cli import main
from trafficd.config import ConfigError, load

TESTDATA = Path(__file__).parent / "testdata"
INVALID = sorted(TESTDATA.glob("invalid-*.yaml"))


def expected(path: Path) -> list[str]:
    lines = path.read_text().splitlines()
    return [
        f"{path}:{line.removeprefix('# expect: ')}"
        for line in lines
        if line.startswith("# expect: ")
    ]


def test_there_is_a_file_for_at_least_25_rules() -> None:
    assert len(INVALID) >= 25
    assert all(expected(p) for p in INVALID)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_invalid_file_gives_its_exact_messages(path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load(path, environ={})
    assert [str(p) for p in info.value.problems] == expected(path)


@pytest.mark.parametrize("path", INVALID, ids=lambda p: p.stem)
def test_check_config_exits_2_with_one_line_per_problem(
    path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TRAFFICD_TEST_UNSET_VARIABLE", raising=False)
    assert main(["check-config", "-c", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines() == expected(path)
