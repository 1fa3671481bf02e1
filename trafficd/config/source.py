"""YAML with line numbers: the first step of loading a configuration.

Sits under `trafficd.config.loader`: it turns a file's text into plain Python
data plus a map from each key path to the line it was written on, so that every
later problem can be reported as `FILE:LINE: key.path: message`. PyYAML's
composer keeps the marks; its constructor throws them away and silently keeps
the last of two equal keys, so the node tree is walked here instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration, located in its file."""

    file: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.file}:{self.line}: {where}{self.message}"


class ConfigError(Exception):
    """Every problem found in a configuration, reported together."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = sorted(problems, key=lambda p: (p.file, p.line, p.path, p.message))
        super().__init__("\n".join(str(p) for p in self.problems))


_PLAIN_KEY = re.compile(r"[A-Za-z0-9_.${}:/-]+")


def format_path(path: Path_) -> str:
    """`("actuators", 0, "zone")` -> `actuators[0].zone`."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            name = part if _PLAIN_KEY.fullmatch(part) else f'"{part}"'
            out += f".{name}" if out else name
    return out


@dataclass
class Source:
    """A parsed YAML document and where each of its keys was written."""

    file: str
    data: Any
    lines: dict[Path_, int] = field(default_factory=dict)

    def line_of(self, path: Path_) -> int:
        """The line of `path`, or of its nearest written ancestor (a missing key)."""
        for n in range(len(path), -1, -1):
            line = self.lines.get(path[:n])
            if line is not None:
                return line
        return 1

    def problem(self, path: Path_, message: str) -> Problem:
        return Problem(self.file, self.line_of(path), format_path(path), message)


# A `${env:X}` or `${file:P}` written as a whole plain scalar. In a flow mapping
# (`{token: ${file:/x}}`) YAML would read its braces as structure, so such a
# reference is quoted before parsing; line numbers do not move.
_BARE_REF = re.compile(
    r"(?P<pre>(?:^[ \t]*|[:\-][ \t]+|[\[{,][ \t]*))"
    r"(?P<ref>\$\{(?:env|file):[^}\s'\"]*\})"
    r"(?=[ \t]*(?:$|[,}\]#]))",
    re.MULTILINE,
)


def quote_bare_references(text: str) -> str:
    return _BARE_REF.sub(lambda m: f"{m.group('pre')}'{m.group('ref')}'", text)


_SCALAR_TAGS = {
    "tag:yaml.org,2002:str",
    "tag:yaml.org,2002:int",
    "tag:yaml.org,2002:float",
    "tag:yaml.org,2002:bool",
    "tag:yaml.org,2002:null",
}


class _Walker:
    def __init__(self, file: str) -> None:
        self.file = file
        self.lines: dict[Path_, int] = {}
        self.problems: list[Problem] = []
        self._constructor = yaml.SafeLoader("")

    def walk(self, node: yaml.Node, path: Path_) -> Any:
        if path not in self.lines:
            self.lines[path] = node.start_mark.line + 1
        if isinstance(node, yaml.MappingNode):
            out: dict[Any, Any] = {}
            self._constructor.flatten_mapping(node)
            for key_node, value_node in node.value:
                key = self.walk_scalar_key(key_node, path)
                if key is None:
                    continue
                child = (*path, key)
                if key in out:
                    self.problems.append(
                        Problem(
                            self.file,
                            key_node.start_mark.line + 1,
                            format_path(child),
                            f"duplicate key (first written on line {self.lines[child]})",
                        )
                    )
                    continue
                self.lines[child] = key_node.start_mark.line + 1
                out[key] = self.walk(value_node, child)
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.walk(item, (*path, i)) for i, item in enumerate(node.value)]
        if isinstance(node, yaml.ScalarNode):
            if node.tag not in _SCALAR_TAGS:
                self.problems.append(
                    Problem(
                        self.file,
                        node.start_mark.line + 1,
                        format_path(path),
                        f"unsupported YAML tag {node.tag}",
                    )
                )
                return None
            return self._constructor.construct_object(node, deep=True)
        return None  # pragma: no cover - PyYAML has no other node kinds

    def walk_scalar_key(self, node: yaml.Node, path: Path_) -> str | None:
        if not isinstance(node, yaml.ScalarNode):
            self.problems.append(
                Problem(
                    self.file,
                    node.start_mark.line + 1,
                    format_path(path),
                    "mapping keys must be plain strings",
                )
            )
            return None
        value = self._constructor.construct_object(node)
        # YAML 1.1 reads `on`, `no`, `1` as bools and ints; keys are names here.
        return str(node.value) if not isinstance(value, str) else value


def parse(text: str, file: str) -> tuple[Source, list[Problem]]:
    """Parse one YAML document. Syntax errors and duplicate keys are problems."""
    try:
        node = yaml.compose(quote_bare_references(text), Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark is not None else 1
        what = exc.problem or exc.context or "invalid YAML"
        return Source(file, None), [Problem(file, line, "", f"YAML syntax error: {what}")]
    except yaml.YAMLError as exc:
        return Source(file, None), [Problem(file, 1, "", f"YAML error: {exc}")]
    if node is None:
        return Source(file, {}, {(): 1}), []
    walker = _Walker(file)
    data = walker.walk(node, ())
    return Source(file, data, walker.lines), walker.problems


def read(path: Path, display: str | None = None) -> tuple[Source, list[Problem]]:
    """Read and parse a file; an unreadable file is one problem at line 1."""
    name = display or str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        return Source(name, None), [Problem(name, 1, "", f"cannot read file: {reason}")]
    return parse(text, name)
