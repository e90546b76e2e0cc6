"""Briefings made on demand for the /briefings page: a job per request, run in a thread of the web process
(dashboard.briefing.produce into the archive), and the lookup of the archive's files the download route serves.

A job's state is a Redis hash (an hour long): the page's polls may reach another worker process than the one running it.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

from dashboard import auth, briefing, context

log = logging.getLogger(__name__)

JOB_TTL_S = 3600  # a job's state is kept this long after its last change
JOB_STALE_S = 900  # a job unchanged this long was lost with its process (a restart): it is reported as stopped
FINISHED = ("done", "busy", "failed")


def _key(settings, job: str) -> str:
    return settings.key("briefing", "job", job)


def _write(r, settings, job: str, **fields: Any) -> None:
    """Set fields of the job's state and keep it for JOB_TTL_S from now."""
    key = _key(settings, job)
    pipe = r.pipeline()
    pipe.hset(key, mapping={k: str(v) for k, v in fields.items()} | {"updated": f"{time.time():.3f}"})
    pipe.expire(key, JOB_TTL_S)
    pipe.execute()


def new_job(r, settings, kind: str | None, day: str | None, area: str | None) -> str:
    """Record a queued job for the form's choice; its id."""
    job = uuid.uuid4().hex
    _write(r, settings, job, state="queued", step="queued", share=0, kind=kind or "", day=day or "", area=area or "")
    return job


def run_job(engine, r, settings, city, job: str, kind: str | None, day: str | None, area: str | None, *,
            now: datetime | None = None) -> None:
    """The work of one job (in its own thread): produce the briefing into the archive, telling Redis each step; it
    ends "done" with the file names, "busy" when the same briefing is being written already, or "failed" with the
    reason (input: what to fix; font: the package to install; error: the exception's own words)."""

    def tell(step: str, share: float) -> None:
        _write(r, settings, job, state="running", step=step, share=f"{share:.3f}")

    try:
        first = briefing.parse_day(day)
        briefing.period_of(kind or "", first)  # the period checked before its folder is named
        out = briefing.produce(engine, r, settings, city, kind, first, area or None,
                               briefing.archive_folder(settings, kind), now=now, progress=tell)
    except briefing.BriefingError as exc:
        _write(r, settings, job, state="failed", reason="input", message=str(exc))
    except briefing.Busy as exc:
        log.info("briefing job %s: %s", job, exc)
        _write(r, settings, job, state="busy", message=str(exc))
    except briefing.FontMissing as exc:
        log.error("briefing job %s: %s", job, exc)
        _write(r, settings, job, state="failed", reason="font", message=str(exc))
    except Exception as exc:  # noqa: BLE001 - logged with its reason; the page says it failed and why
        log.exception("briefing job %s (%s %s %s) failed", job, kind, day, area)
        _write(r, settings, job, state="failed", reason="error", message=f"{type(exc).__name__}: {exc}")
    else:
        log.info("briefing job %s: %s", job, ", ".join(str(p) for p in out))
        _write(r, settings, job, state="done", step="done", share=1, files=",".join(p.name for p in out))


def job_state(r, settings, job: str | None) -> dict[str, str] | None:
    """The job's state as written by run_job, or None for an unknown (or expired) job. A job that has not moved in
    JOB_STALE_S died with its process: it is reported failed, reason "stopped"."""
    if not job or len(job) != 32 or not all(c in "0123456789abcdef" for c in job):
        return None
    raw = r.hgetall(_key(settings, job))
    if not raw:
        return None
    state = {(k.decode() if isinstance(k, bytes) else k): (v.decode() if isinstance(v, bytes) else v)
             for k, v in raw.items()}
    if state.get("state") in ("queued", "running") and time.time() - float(state.get("updated") or 0) > JOB_STALE_S:
        state.update(state="failed", reason="stopped")
    return state


# --------------------------------------------------------------------------- what the page calls


def start(kind: str | None, day: str | None, area: str | None) -> str:
    """A new job for the form's choice, run in a thread of this process on the app's own stores; its id. Raises
    what Redis raises when it is away."""
    engine, r, settings, city = context.engine(), context.redis_client(), context.settings(), context.city()
    job = new_job(r, settings, kind, day, area)
    threading.Thread(target=run_job, args=(engine, r, settings, city, job, kind, day, area),
                     name=f"briefing-{job[:8]}", daemon=True).start()
    return job


def state(job: str | None) -> dict[str, str] | None:
    """The job's state (job_state) in the app's Redis."""
    return job_state(context.redis_client(), context.settings(), job)


def download(kind: str, name: str) -> Path | None:
    """The archived file ``name`` of ``kind`` the viewer may download (briefing.archived_file), or None: for any
    other name, and for a briefing outside the viewer's jurisdiction (as if absent)."""
    found = briefing.archived_file(context.settings(), kind, name)
    parsed = briefing.parse_name(name)
    if found is not None and not (parsed and auth.in_scope(parsed.area) and auth.may_see("briefings")):
        return None
    return found
