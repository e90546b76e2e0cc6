"""Access benchmark: what the login and the gate cost.

    python -m bench.access [--requests 2000] [--quick]

- a login: the argon2id check of a password (by design tens of milliseconds: what makes guessing slow), against a
  wrong password the same;
- the gate, per request: reading the session from Redis and extending its life (``auth.load_session``); baseline from
  the same run: a Redis PING, one round trip;
- a whole API request through the Flask test client, logged in: ``GET /api/v1/definitions`` (no SQL), to see the
  gate's share. Not a test.
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import time

from bench.common import bench_env, line, pct


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m bench.access", description=__doc__.split("\n\n")[0])
    ap.add_argument("--requests", type=int, default=2000, help="timed gate reads and API requests (default 2000)")
    ap.add_argument("--quick", action="store_true", help="small sizes: a check that the benchmark runs")
    args = ap.parse_args(argv)
    if args.quick:
        args.requests = min(args.requests, 100)
    print(f"Gridwatch access benchmark — {os.cpu_count()} cores", flush=True)
    from app import create_app
    from dashboard import auth

    env = bench_env("access")
    try:
        settings, r, engine = env.settings, env.r, env.engine
        name, password = "bench-leader", "a bench password 1"
        auth.create_user(engine, env.city, name, password, "leader", env.city.geography.district.code)
        good, bad = [], []
        for _ in range(15):
            t = time.perf_counter()
            assert auth.authenticate(engine, r, settings, name, password)[1] == "ok"
            good.append(time.perf_counter() - t)
        for _ in range(3):  # fewer than the lock's count
            t = time.perf_counter()
            assert auth.authenticate(engine, r, settings, name, "not the password")[1] == "wrong"
            bad.append(time.perf_counter() - t)
        auth.authenticate(engine, r, settings, name, password)  # resets the failure count
        line("login, right password (median)", f"{statistics.median(good) * 1000:8.1f} ms")
        line("login, wrong password (median)", f"{statistics.median(bad) * 1000:8.1f} ms")
        token, _ = auth.new_session(r, settings, auth.Viewer(name, "leader", "440311"))

        def timed(fn) -> list[float]:
            out = []
            for _ in range(args.requests):
                t = time.perf_counter()
                fn()
                out.append(time.perf_counter() - t)
            return out

        ping = timed(r.ping)
        gate = timed(lambda: auth.load_session(r, settings, token))
        line("baseline: Redis PING (median / p95)", f"{statistics.median(ping) * 1e3:8.3f} / {pct(ping, .95) * 1e3:.3f} ms")
        line("gate: the session read (median / p95)", f"{statistics.median(gate) * 1e3:8.3f} / {pct(gate, .95) * 1e3:.3f} ms")
        client = create_app(settings).server.test_client()
        form = client.get("/login").get_data(as_text=True)
        csrf = re.search(r'name="csrf" value="([^"]+)"', form).group(1)
        assert client.post("/login", data={"username": name, "password": password, "csrf": csrf}).status_code == 303
        api = timed(lambda: client.get("/api/v1/definitions"))
        line("GET /api/v1/definitions, logged in (median / p95)",
             f"{statistics.median(api) * 1e3:8.3f} / {pct(api, .95) * 1e3:.3f} ms")
    finally:
        env.close()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
