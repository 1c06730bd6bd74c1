"""The nurture section through the real loader: the JSON Schema names bad keys too, and the
default config ships a track for warm leads and one for stalled MQLs."""

from __future__ import annotations

from typing import Any

import pytest

from services.routing.config import load_routing_config
from shared.config import ConfigError, load_config
from tests.routing.helpers import config

STEP = {"action": "wait", "after": "1h"}


@pytest.mark.parametrize(
    ("nurture", "where"),
    [
        (
            {"tracks": {"t": {"entry": {"stage": "MQL"}, "steps": [STEP], "colour": "red"}}},
            "routing.nurture.tracks.t",
        ),
        ({"tracks": {"t": {"entry": {"stage": "MQL"}}}}, "routing.nurture.tracks.t"),
        (
            {"tracks": {"t": {"entry": {"mood": "x"}, "steps": [STEP]}}},
            "routing.nurture.tracks.t.entry",
        ),
        (
            {"tracks": {"t": {"entry": {"stage": "MQL"}, "steps": [{"action": "fax"}]}}},
            "routing.nurture.tracks.t.steps[0].action",
        ),
        (
            {"tracks": {"t": {"entry": {"stage": "MQL"}, "steps": [{**STEP, "after": -1}]}}},
            "routing.nurture.tracks.t.steps[0].after",
        ),
        (
            {
                "tracks": {
                    "t": {
                        "entry": {"stall": {"stage": "SQL", "no_activity_days": 3}},
                        "steps": [STEP],
                    }
                }
            },
            "routing.nurture.tracks.t.entry.stall.stage",
        ),
        ({"scan_every_seconds": 0}, "routing.nurture.scan_every_seconds"),
        (
            {
                "tracks": {
                    "t": {"entry": {"stage": "MQL"}, "steps": [STEP], "reentry": {"allowed": "yes"}}
                }
            },
            "routing.nurture.tracks.t.reentry.allowed",
        ),
    ],
)
def test_schema_errors_name_the_key(nurture: dict[str, Any], where: str) -> None:
    with pytest.raises(ConfigError) as err:
        load_routing_config(config(nurture=nurture))
    assert f"invalid config at {where}" in str(err.value), str(err.value)


def test_webhooks_may_subscribe_to_nurture_events() -> None:
    hook = {
        "url": "https://mkt.example/hook",
        "secret": "s3cret-s3cret",
        "events": ["io.leadflow.nurture.step_due", "io.leadflow.nurture.exited"],
    }
    cfg = load_routing_config(config(webhooks=[hook]))
    assert cfg.webhooks[0].events == frozenset(hook["events"])


def test_the_default_config_ships_a_warm_and_a_stalled_mql_track() -> None:
    tracks = load_routing_config(load_config()).nurture.tracks
    by_name = {t.name: t for t in tracks}
    assert by_name["warm-leads"].entry.temperatures == {"warm"}
    stall = by_name["stalled-mql"].entry.stall
    assert stall is not None and (stall.stage, stall.days) == ("MQL", 14)
