"""The notification rules and channels from config/notify.yaml, validated at start: every error names the file, the
rule or channel and the fix, and never a channel's URL (it holds tokens and passwords).

A channel's ``url`` is an Apprise URL; ``${VAR}`` in it reads the environment, so secrets stay out of the file. A
channel whose URL is empty once read (the variable is unset) is left out, and said so in ``disabled``.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import apprise

from config import settings as config_settings
from config.city import City
from config.files import ConfigFileError, read_yaml, shown
from core.access import ROLES
from core.geography import LEVELS
from core.notify import Channel, Reason, Retry, Rule, template_problem

TOP_KEYS = ("base_url", "rate_per_minute", "lookback_minutes", "retry", "channels", "rules")
CHANNEL_KEYS = ("name", "url", "area", "role", "department", "rate_per_minute")
RULE_KEYS = ("name", "trigger", "when", "to", "subject", "body")
WHEN_KEYS = ("area", "department", "level")
RETRY_KEYS = ("attempts", "first_s", "max_s")
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")


class NotifyConfigError(ConfigFileError):
    pass


@dataclass(frozen=True)
class NotifyConfig:
    channels: tuple[Channel, ...] = ()
    rules: tuple[Rule, ...] = ()
    base_url: str = "http://127.0.0.1:8050"
    retry: Retry = field(default_factory=Retry)
    lookback_minutes: int = 60  # a first run (no cursor yet) looks this far back
    disabled: tuple[str, ...] = ()  # channels left out: their URL is empty (an unset variable)


def _list(value: Any) -> list:
    return [] if value is None else list(value) if isinstance(value, list | tuple) else [value]


def _count(value: Any, at: str, key: str, problems: list[str], least: int = 1) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        problems.append(f"{at}: {key}: expected a whole number of at least {least}")
        return None
    return value


def _unknown(at: str, data: dict, known: tuple[str, ...], problems: list[str]) -> None:
    problems.extend(f"{at}: unknown key {k!r}; use {', '.join(known)}" for k in sorted(set(data) - set(known), key=str))


def _url(raw: Any, at: str, env: Mapping[str, str], problems: list[str]) -> str:
    if not isinstance(raw, str) or not raw.strip():
        problems.append(f"{at}: url: give an Apprise URL (e.g. dingtalk://${{TOKEN_VAR}}, mailtos://…, json://…), "
                        "with secrets as ${VAR} read from the environment")
        return ""
    url = _VAR.sub(lambda m: env.get(m.group(1), ""), raw.strip())
    if not url or url.endswith("://"):
        return ""
    if apprise.Apprise.instantiate(url) is None:  # the URL itself is never shown: it may hold a token
        problems.append(f"{at}: url: Apprise cannot use this URL (scheme {url.split('://')[0][:20]!r}); see "
                        "https://github.com/caronc/apprise/wiki for the URL of each service")
        return ""
    return url


def _channel(i: int, entry: Any, where: str, city: City, rate: int, env, problems: list[str]) -> Channel | None:
    if not isinstance(entry, dict) or not entry.get("name"):
        problems.append(f"{where}: channels[{i}]: expected a mapping with a name and a url ({', '.join(CHANNEL_KEYS)})")
        return None
    name = str(entry["name"])
    at = f"{where}: channel {name!r}"
    _unknown(at, entry, CHANNEL_KEYS, problems)
    area = str(entry["area"]) if entry.get("area") is not None else None
    if area is not None and city.geography.get(area) is None:
        problems.append(f"{at}: area: {area!r} is not an area code of the city (district, street, community or grid)")
    role = entry.get("role")
    if role is not None and role not in ROLES:
        problems.append(f"{at}: role: {role!r} is not a role; use one of {', '.join(ROLES)}")
    department = entry.get("department")
    if department is not None and department not in city.departments:
        problems.append(f"{at}: department: {department!r} is not a code of config/city/departments.yaml")
    own_rate = _count(entry.get("rate_per_minute"), at, "rate_per_minute", problems)
    url = _url(entry.get("url"), at, env, problems)
    return Channel(name, url, area, role, department, own_rate or rate)


def _when(when: Any, at: str, city: City, problems: list[str]) -> tuple[tuple[str, ...], frozenset, frozenset]:
    if when is None:
        return (), frozenset(), frozenset()
    if not isinstance(when, dict):
        problems.append(f"{at}: when: expected a mapping of {', '.join(WHEN_KEYS)}")
        return (), frozenset(), frozenset()
    _unknown(f"{at}: when", when, WHEN_KEYS, problems)
    areas = tuple(str(a) for a in _list(when.get("area")))
    problems += [f"{at}: when: area {a!r} is not an area code of the city" for a in areas
                 if city.geography.get(a) is None]
    deps = frozenset(str(d) for d in _list(when.get("department")))
    problems += [f"{at}: when: department {d!r} is not a code of config/city/departments.yaml" for d in sorted(deps)
                 if d not in city.departments]
    levels = frozenset(str(lv) for lv in _list(when.get("level")))
    problems += [f"{at}: when: level {lv!r} is not an area level; use {', '.join(LEVELS)}" for lv in sorted(levels)
                 if lv not in LEVELS]
    return areas, deps, levels


def _targets(value: Any, at: str, names: set[str], problems: list[str]) -> tuple[str, ...]:
    to = tuple(str(t) for t in _list(value))
    if not to:
        problems.append(f"{at}: to: name at least one channel, role:ROLE, @area or @departments")
    for t in to:
        if t in ("@area", "@departments") or t in names:
            continue
        if t.startswith("role:"):
            if t[5:] not in ROLES:
                problems.append(f"{at}: to: {t!r}: unknown role; use role: and one of {', '.join(ROLES)}")
        else:
            problems.append(f"{at}: to: {t!r} is no channel of this file; use a channel's name, role:ROLE, @area "
                            "(the channels of the trigger's area) or @departments (the channels of its departments)")
    return to


def _rule(i: int, entry: Any, where: str, city: City, names: set[str], problems: list[str]) -> Rule | None:
    if not isinstance(entry, dict):
        problems.append(f"{where}: rules[{i}]: expected a mapping with {', '.join(RULE_KEYS)}")
        return None
    name = str(entry.get("name") or f"rule {i + 1}")
    at = f"{where}: rule {name!r}"
    _unknown(at, entry, RULE_KEYS, problems)
    try:
        reason = Reason(entry.get("trigger"))
    except ValueError:
        problems.append(f"{at}: trigger: {entry.get('trigger')!r} is not a trigger; use one of {', '.join(r.value for r in Reason)}")
        return None
    areas, deps, levels = _when(entry.get("when"), at, city, problems)
    to = _targets(entry.get("to"), at, names, problems)
    for key in ("subject", "body"):
        problem = template_problem(str(entry[key])) if entry.get(key) is not None else None
        if problem:
            problems.append(f"{at}: {key}: {problem}")
    return Rule(name, reason, to, areas, deps, levels, entry.get("subject"), entry.get("body"))


def _retry(data: Any, where: str, problems: list[str]) -> Retry:
    if data is None:
        return Retry()
    if not isinstance(data, dict):
        problems.append(f"{where}: retry: expected a mapping of {', '.join(RETRY_KEYS)}")
        return Retry()
    _unknown(f"{where}: retry", data, RETRY_KEYS, problems)
    attempts = _count(data.get("attempts"), f"{where}: retry", "attempts", problems)
    first, most = data.get("first_s", Retry.first_s), data.get("max_s", Retry.max_s)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) and v > 0 for v in (first, most)):
        problems.append(f"{where}: retry: first_s and max_s are seconds above 0")
        return Retry()
    return Retry(attempts or Retry.attempts, float(first), float(most))


def _twice(where: str, kind: str, names: list[str], why: str) -> list[str]:
    return [f"{where}: {kind} name {n!r} is used twice; {why}" for n in sorted({n for n in names if names.count(n) > 1})]


def _parse(data: dict, where: str, city: City, env: Mapping[str, str], problems: list[str]) -> dict[str, Any]:
    _unknown(where, data, TOP_KEYS, problems)
    rate = _count(data.get("rate_per_minute"), where, "rate_per_minute", problems) or 20
    lookback = _count(data.get("lookback_minutes"), where, "lookback_minutes", problems, least=0)
    found = [_channel(i, e, where, city, rate, env, problems) for i, e in enumerate(_list(data.get("channels")))]
    channels = [c for c in found if c is not None]
    names = [c.name for c in channels]
    problems += _twice(where, "channel", names, "names say where a message went")
    rules = [r for i, e in enumerate(_list(data.get("rules"))) if (r := _rule(i, e, where, city, set(names), problems))]
    problems += _twice(where, "rule", [r.name for r in rules], "names say which rule sent a message")
    return {"channels": tuple(c for c in channels if c.url), "rules": tuple(rules),
            "retry": _retry(data.get("retry"), where, problems), "lookback_minutes": 60 if lookback is None else lookback,
            "disabled": tuple(c.name for c in channels if not c.url)}


def load_notify(city: City, settings: config_settings.Settings | None = None, path: Path | str | None = None,
                env: Mapping[str, str] | None = None) -> NotifyConfig:
    """The channels and rules of ``path`` (default NOTIFY_FILE); an absent or empty file means none. NOTIFY_BASE_URL
    wins over the file's ``base_url``. ``env``: where ``${VAR}`` is read (default: the environment)."""
    settings = settings or config_settings.get_settings()
    path = Path(path or settings.notify_file)
    where = shown(path)
    data = read_yaml(path, NotifyConfigError)
    base = settings.notify_base_url or (data.get("base_url") if isinstance(data, dict) else None)
    base = str(base or _default_base(settings))
    if data is None or data == {}:
        return NotifyConfig(base_url=base)
    if not isinstance(data, dict):
        raise NotifyConfigError([f"{where}: expected a mapping with channels and rules"])
    problems: list[str] = []
    parsed = _parse(data, where, city, os.environ if env is None else env, problems)
    if problems:
        raise NotifyConfigError(problems)
    return NotifyConfig(base_url=base, **parsed)


def _default_base(settings) -> str:
    return f"http://{settings.host}:{settings.port}"
