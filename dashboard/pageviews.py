"""View models that open their own connections (through dashboard.context), so a page hands none over."""

from __future__ import annotations

from typing import Any

from config.risk import get_risk_model
from dashboard import context
from dashboard import screen as wall


def screen_parts(settings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The wall's fast part (the live state) and its slow part (SQL figures, cached; None until the first is
    worked out). Raises whatever Redis or SQL raise when they are away."""
    city = context.city()
    engine = context.engine()
    fast = wall.fast(context.redis_client(), settings, engine, city, get_risk_model(settings.risk_file))
    slow = wall.SLOW.get(engine, city, settings)
    return fast, slow
