"""Random mutations of a valid configuration never crash the loader.

Each mutation gives either a valid configuration or exit 2 with at least one
`FILE:LINE:` line; any other exception is a bug.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trafficd.config import ConfigError, Problem, load

BASE = (Path(__file__).parent / "testdata" / "valid-actuator-haproxy.yaml").read_text()
BASE_DATA: Any = yaml.safe_load(BASE)

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=True),
    st.text(max_size=20),
    st.sampled_from(["2s", "0ms", "${env:NOPE}", "${file:/nonexistent}", "::1", "us", "[", "{"]),
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=6,
)


def _paths(node: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    out = [prefix]
    if isinstance(node, dict):
        for k, v in node.items():
            out += _paths(v, (*prefix, k))
    elif isinstance(node, list):
        for i, v in enumerate(node):
            out += _paths(v, (*prefix, i))
    return out


PATHS = _paths(BASE_DATA)[1:]


@st.composite
def mutated(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["replace", "delete", "add", "text"]))
    if kind == "text":
        lines = BASE.splitlines()
        i = draw(st.integers(0, len(lines) - 1))
        lines[i] = draw(st.text(max_size=30))
        return "\n".join(lines)
    data = yaml.safe_load(BASE)
    path = draw(st.sampled_from(PATHS))
    parent = data
    for part in path[:-1]:
        parent = parent[part]
    if kind == "replace":
        parent[path[-1]] = draw(values)
    elif kind == "delete":
        del parent[path[-1]]
    elif isinstance(parent, dict):
        parent[draw(st.text(min_size=1, max_size=8))] = draw(values)
    else:
        parent.append(draw(values))
    return yaml.safe_dump(data)


LINE = re.compile(r"^.+:\d+: ")


@settings(
    max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=mutated())
def test_mutations_give_a_config_or_located_problems(tmp_path: Path, text: str) -> None:
    path = tmp_path / "mutated.yaml"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    problems: list[Problem] = []
    try:
        load(path, environ={})
    except ConfigError as exc:
        problems = exc.problems
        if not problems:
            raise AssertionError("a ConfigError without problems") from exc
    for problem in problems:
        assert LINE.match(str(problem)), str(problem)
        assert problem.line >= 1
