"""The ranking rules from config/rankings.yaml, validated at start (errors name the file, the key and the fix)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from config.files import ConfigFileError, read_yaml, shown
from config.settings import get_settings
from core.rankings import RankingRules


class RankingsConfigError(ConfigFileError):
    pass


def load_rules(path: Path | str | None = None) -> RankingRules:
    path = Path(path or get_settings().rankings_file)
    where = shown(path)
    data = read_yaml(path, RankingsConfigError)
    if data is None:
        return RankingRules()
    if not isinstance(data, dict):
        raise RankingsConfigError([f"{where}: expected a mapping with weights, min_volume and list_size"])
    unknown = sorted(set(data) - {"weights", "min_volume", "list_size"})
    if unknown:
        raise RankingsConfigError([f"{where}: unknown key(s) {', '.join(unknown)}; use weights, min_volume, list_size"])
    kwargs = {k: data[k] for k in ("weights", "min_volume", "list_size") if k in data}
    if "weights" in kwargs and not isinstance(kwargs["weights"], dict):
        raise RankingsConfigError([f"{where}: weights: expected a mapping of metric → weight"])
    try:
        return RankingRules(**kwargs)
    except ValueError as exc:
        raise RankingsConfigError([f"{where}: {exc}"]) from None


@lru_cache(maxsize=8)
def get_rules(path: Path | str | None = None) -> RankingRules:
    return load_rules(path)
