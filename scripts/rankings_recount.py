"""An independent recount of the department rankings from the published events, with pandas.

It follows the definitions in core/rankings.py without using its code or the stored assignment rows: the rankings
tests and scripts/ranking_check.py compare what the product reports with it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from sqlalchemy import text


def expected_figures(records, cases: pd.DataFrame, since, until, as_of, whistle_limit, area=None) -> pd.DataFrame:
    """Each department's figures from the published events, by the definitions (an independent computation)."""
    ev = pd.DataFrame(records)
    for c in ("rating", "departments"):
        if c not in ev:
            ev[c] = None
    ev["t"] = pd.to_datetime(ev["occurred_at"], utc=True, format="ISO8601")
    ev["seq"] = range(len(ev))
    ev = ev.drop(columns=["grid_code"], errors="ignore").merge(cases, left_on=["source", "external_id"], right_on=["source", "external_id"])
    if area:
        ev = ev[ev["grid_code"].fillna("").str.startswith(area)]
    ev = ev.sort_values(["case_id", "seq"])
    # a lead episode runs from its dispatch to the case's next dispatch, return or reopen
    bounds = ev[ev["event"].isin(["dispatch", "return", "reopen"])][["case_id", "seq", "event", "t"]]
    disp = ev[ev["event"] == "dispatch"].explode("departments").rename(columns={"departments": "department"})
    nxt = bounds.rename(columns={"seq": "bseq", "event": "bevent", "t": "bt"})
    disp = disp.sort_values("seq")
    nxt = nxt.sort_values("bseq")
    disp["seq1"] = disp["seq"] + 1
    ep = pd.merge_asof(disp, nxt, left_on="seq1", right_on="bseq", by="case_id", direction="forward")

    def first_after(actions, col):
        acts = ev[ev["event"].isin(actions)][["case_id", "seq", "t"] + (["rating"] if col == "evaluated" else [])]
        acts = acts.sort_values("seq").rename(columns={"seq": f"{col}_seq", "t": f"{col}_at"})
        return acts

    def attach(frame, actions, col):
        acts = first_after(actions, col)
        frame = frame.drop(columns=[c for c in ("rating",) if c in acts], errors="ignore").sort_values("seq1")
        out = pd.merge_asof(frame, acts, left_on="seq1", right_on=f"{col}_seq", by="case_id", direction="forward")
        inside = out[f"{col}_seq"].notna() & (out["bseq"].isna() | (out[f"{col}_seq"] < out["bseq"]))
        out.loc[~inside, [f"{col}_at"]] = pd.NaT
        if col == "evaluated":
            out.loc[~inside, "rating"] = np.nan
        return out

    ep = attach(ep, ["accept"], "accepted")
    ep = attach(ep, ["resolve", "onsite"], "resolved")
    ep = attach(ep, ["evaluate"], "evaluated")
    ep["returned"] = ep["bevent"] == "return"
    ep["reopened_at"] = ep["bt"].where(ep["bevent"] == "reopen")
    ep["end_at"] = ep["bt"]
    ep["assigned_at"] = ep["t"]
    s, u, a = pd.Timestamp(since), pd.Timestamp(until), pd.Timestamp(as_of)
    end = min(u, a)

    rows = {}
    for d, g in ep.groupby("department"):
        rec = g[(g["assigned_at"] >= s) & (g["assigned_at"] < u)]
        acc = rec["accepted_at"].notna() & (rec["accepted_at"] < a)
        past = (rec["accept_due_at"] < a) & ~acc & (rec["end_at"].isna() | (rec["end_at"] > rec["accept_due_at"]))
        res = g[(g["resolved_at"] >= s) & (g["resolved_at"] < end)]
        evald = g[(g["evaluated_at"] >= s) & (g["evaluated_at"] < end) & g["rating"].notna()]
        still = g[(g["assigned_at"] < a) & (g["resolved_at"].isna() | (g["resolved_at"] >= a))
                  & (g["end_at"].isna() | (g["end_at"] >= a))]
        handling = (res["resolved_at"] - res["assigned_at"]).dt.total_seconds()
        rows[d] = {
            "received": len(rec),
            "accept_decided": int((acc | past).sum()),
            "accepted_on_time": int((acc & (rec["accepted_at"] <= rec["accept_due_at"])).sum()),
            "returned": int((rec["returned"] & (rec["end_at"] < a)).sum()),
            "resolved": len(res), "resolved_on_time": int((res["resolved_at"] <= res["due_at"]).sum()),
            "reopened": int((res["reopened_at"] < a).sum()),
            "evaluations": len(evald), "satisfied": int((evald["rating"] >= 4).sum()),
            "open_at_end": len(still), "overdue_open": int((still["due_at"] < a).sum()),
            "handling_median_s": handling.median() if len(handling) else None,
            "handling_p90_s": handling.quantile(0.9) if len(handling) else None,
        }
    wh = ev[ev["event"] == "whistle"].explode("departments").rename(columns={"departments": "department"})
    ci = ev[ev["event"] == "checkin"].explode("departments").rename(columns={"departments": "department"})
    for d, g in wh.groupby("department"):
        g = g[(g["t"] >= s) & (g["t"] < u)]
        firsts = []
        for _, w in g.iterrows():
            c = ci[(ci["case_id"] == w["case_id"]) & (ci["department"] == d) & (ci["t"] >= w["t"])]["t"]
            firsts.append(c.min() if len(c) else pd.NaT)
        first = pd.Series(firsts, index=g.index, dtype="datetime64[ns, UTC]")
        due = g["t"] + whistle_limit
        checked = first.notna() & (first < a)
        row = rows.setdefault(d, {})
        row["whistles"] = len(g)
        row["whistle_decided"] = int((checked | (due < a)).sum())
        row["whistle_on_time"] = int((checked & (first <= due)).sum())
    return pd.DataFrame.from_dict(rows, orient="index")


def stored_cases(engine) -> pd.DataFrame:
    with engine.connect() as conn:
        df = pd.read_sql(text("SELECT id AS case_id, source, external_id, grid_code, accept_due_at, due_at FROM cases"),
                         conn)
    for c in ("accept_due_at", "due_at"):
        df[c] = pd.to_datetime(df[c], utc=True, format="ISO8601")
    return df
