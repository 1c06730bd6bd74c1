"""Nurture's read API (behind the read credential): tracks with their KPIs, enrolments, and a
lead's nurture history step by step."""

from __future__ import annotations

import statistics
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Path, Query
from pydantic import BaseModel, Field

from services.routing import nurture_store as store
from services.routing.api_common import Limit
from services.routing.deps import ContextDep
from services.routing.domain.nurture import EXIT_REASONS, SQL, NurtureConfig, Track
from shared.auth import ReadAuth
from shared.events import rfc3339
from shared.http import RuntimeDep

router = APIRouter(prefix="/v1/nurture", tags=["nurture"])

#: An id or name in a query: bounded, and without NUL (PostgreSQL text cannot hold one).
_TEXT = r"^[^\x00]*$"
Name = Annotated[str | None, Query(max_length=200, pattern=_TEXT)]
LeadId = Annotated[str, Path(max_length=200, pattern=_TEXT)]


class StepOut(BaseModel):
    """A configured step."""

    index: int
    id: str
    action: str
    after_seconds: float = Field(description="business seconds after the previous step")
    contacts: bool = Field(description="reaches the person: needs recorded marketing consent")
    params: dict[str, Any]


class KpisOut(BaseModel):
    """What became of a track's enrolments."""

    enrolled: int
    active: int
    exited: dict[str, int] = Field(description="exited enrolments by reason")
    converted_mql: int = Field(description="entered as IQL, reached MQL (or SQL) since")
    converted_sql: int = Field(description="left because the lead became SQL")
    conversion_rate: float | None = Field(description="converted_sql / exited")
    median_seconds_to_sql: float | None


class TrackOut(BaseModel):
    """A configured track and its KPIs."""

    name: str
    entry: dict[str, Any]
    steps: list[StepOut]
    exit: dict[str, Any]
    reentry: dict[str, Any]
    calendar: str
    kpis: KpisOut


class TracksOut(BaseModel):
    items: list[TrackOut]


class StepHistoryOut(BaseModel):
    """A step timer of an enrolment: pending, fired (with its outcome) or cancelled."""

    index: int
    step_id: str
    due_at: str
    state: str
    outcome: str | None
    fired_at: str | None


class EnrolmentOut(BaseModel):
    """A lead's time in a track."""

    id: str
    lead_id: str
    track: str
    state: Literal["active", "exited"]
    reason: dict[str, Any] = Field(description="the entry conditions the lead met")
    enrolled_at: str
    exited_at: str | None
    exit_reason: str | None
    next_step: int
    steps: list[StepHistoryOut] | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any], steps: Sequence[Mapping[str, Any]] | None = None) -> Any:
        return cls(
            id=row["id"],
            lead_id=row["lead_id"],
            track=row["track"],
            state=row["state"],
            reason=dict(row["reason"] or {}),
            enrolled_at=rfc3339(row["enrolled_at"]),
            exited_at=_t(row["exited_at"]),
            exit_reason=row["exit_reason"],
            next_step=int(row["step_index"]),
            steps=None
            if steps is None
            else [
                StepHistoryOut(
                    index=int(s["step_index"]),
                    step_id=s["step_id"],
                    due_at=rfc3339(s["due_at"]),
                    state=s["state"],
                    outcome=s["outcome"],
                    fired_at=_t(s["fired_at"]),
                )
                for s in steps
                if s["enrolment_id"] == row["id"]
            ],
        )


class EnrolmentsOut(BaseModel):
    items: list[EnrolmentOut]


def _t(value: datetime | None) -> str | None:
    return rfc3339(value) if value is not None else None


def _track_config(t: Track) -> dict[str, Any]:
    e = t.entry
    entry: dict[str, Any] = {
        k: sorted(v)
        for k, v in (
            ("stage", e.stages),
            ("temperature", e.temperatures),
            ("status", e.statuses),
            ("segment", e.segments),
            ("source", e.sources),
        )
        if v
    }
    if e.stall is not None:
        entry["stall"] = {"stage": e.stall.stage, "no_activity_days": e.stall.days}
    out_exit: dict[str, Any] = {"always": ["sql", "disqualified", "consent_withdrawn", "erased"]}
    if t.score_above is not None:
        out_exit["score_above"] = t.score_above
    if t.exit_temperatures:
        out_exit["temperature"] = sorted(t.exit_temperatures)
    return {
        "entry": entry,
        "exit": out_exit,
        "reentry": {"allowed": t.reentry, "cooldown_days": t.reentry_cooldown_days},
        "calendar": t.calendar.name or str(t.calendar.tz.key),
    }


def kpis(rows: Sequence[Mapping[str, Any]], track: str) -> KpisOut:
    """A track's KPIs from its enrolments' (state, exit_reason, enrolled_at, exited_at)."""
    mine = [r for r in rows if r["track"] == track]
    exited: dict[str, int] = {}
    for r in mine:
        if r["state"] == "exited":
            reason = str(r["exit_reason"])
            exited[reason] = exited.get(reason, 0) + 1
    to_sql = [
        (r["exited_at"] - r["enrolled_at"]).total_seconds()
        for r in mine
        if r["exit_reason"] == SQL and r["exited_at"] is not None
    ]
    done = sum(exited.values())
    return KpisOut(
        enrolled=len(mine),
        active=sum(1 for r in mine if r["state"] == "active"),
        exited={k: exited[k] for k in sorted(exited, key=_reason_order)},
        converted_mql=sum(
            1 for r in mine if r["entry_stage"] == "IQL" and r["last_stage"] in ("MQL", "SQL")
        ),
        converted_sql=len(to_sql),
        conversion_rate=len(to_sql) / done if done else None,
        median_seconds_to_sql=statistics.median(to_sql) if to_sql else None,
    )


def _reason_order(reason: str) -> tuple[int, str]:
    return (EXIT_REASONS.index(reason) if reason in EXIT_REASONS else len(EXIT_REASONS), reason)


def tracks_out(config: NurtureConfig, rows: Sequence[Mapping[str, Any]]) -> TracksOut:
    """Every configured track with its KPIs."""
    return TracksOut(
        items=[
            TrackOut(
                name=t.name,
                steps=[
                    StepOut(
                        index=i,
                        id=s.id,
                        action=s.action,
                        after_seconds=s.after_seconds,
                        contacts=s.contacts,
                        params=dict(s.params),
                    )
                    for i, s in enumerate(t.steps)
                ],
                kpis=kpis(rows, t.name),
                **_track_config(t),
            )
            for t in config.tracks
        ]
    )


@router.get("/tracks", dependencies=[ReadAuth])
async def get_tracks(ctx: ContextDep, runtime: RuntimeDep) -> TracksOut:
    """The configured nurture tracks (entry, steps, exits, re-entry) and, per track, how many
    leads entered, are in it, left by reason, converted to SQL and how fast."""
    async with runtime.engine.connect() as conn:
        rows = await store.track_figures(conn)
    return tracks_out(ctx.config.nurture, rows)


@router.get("/enrolments", dependencies=[ReadAuth])
async def list_enrolments(
    runtime: RuntimeDep,
    track: Name = None,
    state: Literal["active", "exited"] | None = None,
    lead_id: Name = None,
    limit: Limit = 50,
) -> EnrolmentsOut:
    """Enrolments, newest first (of a track, a state, a lead)."""
    async with runtime.engine.connect() as conn:
        rows = await store.list_enrolments(
            conn, track=track, state=state, lead_id=lead_id, limit=limit
        )
    return EnrolmentsOut(items=[EnrolmentOut.of(r) for r in rows])


@router.get("/leads/{lead_id}", dependencies=[ReadAuth])
async def lead_history(lead_id: LeadId, runtime: RuntimeDep) -> EnrolmentsOut:
    """A lead's nurture history: every enrolment, oldest first, with its steps (due, fired
    with their outcome, or cancelled). An unknown lead has an empty history."""
    async with runtime.engine.connect() as conn:
        rows = await store.enrolments_of(conn, lead_id)
        steps = await store.steps_of(conn, [str(r["id"]) for r in rows])
    return EnrolmentsOut(items=[EnrolmentOut.of(r, steps) for r in rows])
