"""Secret references: `${env:NAME}` and `${file:PATH}`, resolved at load time.

Runs between parsing (`source`) and validation (`model`): every string in the
parsed data is searched for references, which are replaced by their values.
A missing variable or unreadable file is a problem that names the key and the
reference, never a value. Every resolved value is remembered by a `Redactor`
so that no error message can carry it; fields that hold secrets are
`SecretStr` in the model, so no repr can either.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trafficd.config.source import Path_, Problem, Source

REFERENCE = re.compile(r"\$\{(?P<kind>env|file):(?P<arg>[^}]*)\}")
# A secret file is a key or a token; anything bigger is a mistaken path.
MAX_SECRET_FILE_BYTES = 64 * 1024
# Shorter values would redact ordinary words in messages; such values are not
# credentials anyone should rely on.
MIN_REDACTED_LENGTH = 4
REDACTED = "<redacted>"


@dataclass
class Redactor:
    """Removes every known secret value from text meant for people."""

    values: set[str] = field(default_factory=set)

    def add(self, value: str) -> None:
        if len(value) >= MIN_REDACTED_LENGTH:
            self.values.add(value)

    def __call__(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = text.replace(value, REDACTED)
        return text


def _read_secret_file(arg: str, base: Path) -> tuple[str | None, str | None]:
    path = Path(arg)
    if not path.is_absolute():
        path = base / path
    try:
        size = path.stat().st_size
        if size > MAX_SECRET_FILE_BYTES:
            return None, f"larger than {MAX_SECRET_FILE_BYTES} bytes"
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        return None, exc.strerror or type(exc).__name__
    except UnicodeDecodeError:
        return None, "not UTF-8 text"
    # Editors end files with a newline that is never part of the secret.
    return text.removesuffix("\n").removesuffix("\r"), None


def resolve_string(
    value: str,
    *,
    base: Path,
    environ: Mapping[str, str],
) -> tuple[str, list[str], list[str]]:
    """Replace references in `value`: (new value, resolved values, error messages)."""
    resolved: list[str] = []
    errors: list[str] = []

    def substitute(match: re.Match[str]) -> str:
        kind, arg = match.group("kind"), match.group("arg")
        ref = match.group(0)
        if not arg:
            errors.append(f"{ref}: empty reference")
            return ""
        if kind == "env":
            if arg not in environ:
                errors.append(f"{ref}: environment variable {arg} is not set")
                return ""
            text = environ[arg]
        else:
            got, why = _read_secret_file(arg, base)
            if got is None:
                errors.append(f"{ref}: cannot read secret file: {why}")
                return ""
            text = got
        resolved.append(text)
        return text

    return REFERENCE.sub(substitute, value), resolved, errors


def resolve(
    source: Source,
    redactor: Redactor,
    *,
    base: Path,
    environ: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Resolve every reference in `source.data` in place."""
    env = os.environ if environ is None else environ
    problems: list[Problem] = []

    def visit(node: Any, path: Path_) -> Any:
        if isinstance(node, dict):
            for key in list(node):
                node[key] = visit(node[key], (*path, key))
            return node
        if isinstance(node, list):
            return [visit(item, (*path, i)) for i, item in enumerate(node)]
        if isinstance(node, str) and "${" in node:
            new, values, errors = resolve_string(node, base=base, environ=env)
            for value in values:
                redactor.add(value)
            problems.extend(source.problem(path, message) for message in errors)
            return new
        return node

    source.data = visit(source.data, ())
    return problems
