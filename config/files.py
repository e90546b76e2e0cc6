"""What the configuration files' loaders share: how a file is named in an error, reading its YAML, the error type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from config.settings import ROOT


class ConfigFileError(ValueError):
    """A configuration file is broken. ``problems`` lists every problem, each naming the file, the key and the fix."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))


def shown(path: Path) -> str:
    """The file as an error names it: relative to the project, else its name (never a machine path)."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def read_yaml(path: Path, error: type[ConfigFileError]) -> Any:
    """The file's YAML (None if the file does not exist; {} if it is empty); ``error`` if it is not valid YAML."""
    if not path.is_file():
        return None
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as exc:
        raise error([f"{shown(path)}: not valid YAML ({str(exc).replace(chr(10), ' ')})"]) from None
