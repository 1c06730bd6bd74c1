"""Config errors name the bad key; the identifiers of an interaction; identity resolution."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from services.scoring.config import load_rules
from services.scoring.domain.engine import seniority
from services.scoring.domain.identity import MAX_ID_LENGTH, Identifiers, identifiers_of
from services.scoring.domain.model import Lead
from services.scoring.domain.resolution import resolve
from services.scoring.main import build_app
from shared.config import ConfigError, load_config
from shared.contract import Contact
from tests.scoring.helpers import T0, ix
from tests.support import make_settings


def _with(mutate: Any) -> dict[str, Any]:
    config = copy.deepcopy(load_config())
    mutate(config["scoring"])
    return config


BAD = [
    (lambda s: s["fit"][0].update(points="many"), "scoring.fit[0].points"),
    (lambda s: s["fit"][0].update(field="shoe_size"), "scoring.fit[0].field"),
    (lambda s: s["engagement"]["rules"][0].update(event="visited"), "scoring.engagement.rules[0]"),
    (
        lambda s: s["engagement"]["rules"][0]["when"].update(intent={"regex": "("}),
        "scoring.engagement.rules[0].when.intent.regex",
    ),
    (lambda s: s["fit"][1].update(id=s["fit"][0]["id"]), "scoring.fit[1].id"),
    (lambda s: s["fit"][7]["match"].update({"in": "no_such_list"}), "scoring.fit[7].match.in"),
    (lambda s: s.update(surprise=1), "scoring"),
    (lambda s: s["temperature"]["hot"].pop("min_engagement"), "scoring.temperature.hot"),
]


@pytest.mark.parametrize(("mutate", "where"), BAD)
def test_bad_config_names_the_key(mutate: Any, where: str) -> None:
    with pytest.raises(ConfigError) as exc:
        load_rules(_with(mutate))
    assert where in str(exc.value)


def test_build_app_refuses_a_bad_config(sqlite_db_url: str) -> None:
    with pytest.raises(ConfigError, match=r"scoring\.fit"):
        build_app(
            make_settings("127.0.0.1:1", sqlite_db_url), _with(lambda s: s["fit"][0].pop("points"))
        )


@pytest.mark.parametrize(
    ("title", "level"),
    [
        ("CEO", "c_level"),
        ("Chief Revenue Officer", "c_level"),
        ("Co-Founder", "c_level"),
        ("VP of Sales", "vp"),
        ("Vice President Marketing", "vp"),
        ("Director of IT", "director"),
        ("Head of Growth", "director"),
        ("Sales Manager", "manager"),
        ("Engineer", "individual"),
        ("", None),
        (None, None),
    ],
)
def test_seniority(title: str | None, level: str | None) -> None:
    assert seniority(title) == level


def test_identifiers() -> None:
    ids = identifiers_of(
        ix(contact=Contact(email="jane@acme.com", phone="+4915112345678"), anonymous_id="a1")
    )
    assert ids == Identifiers("jane@acme.com", "+4915112345678", "a1")
    assert ids.key == "jane@acme.com"
    # the lead key is the last resort: an email if it is one, else an anonymous id
    assert identifiers_of(ix(lead_key="anon-7")) == Identifiers(None, None, "anon-7")
    assert identifiers_of(ix(lead_key="k@x.io")) == Identifiers("k@x.io", None, None)
    # an id too long for the identity index is no identifier
    assert identifiers_of(ix(anonymous_id="a" * (MAX_ID_LENGTH + 1))).anonymous_id is None
    ad = ix(channel="ad", lead_key="linkedin:7", ad={"platform": "LinkedIn", "lead_id": "7"})
    assert identifiers_of(ad).ad_lead == "linkedin:7"


def test_segment_user_id_is_a_second_visitor_id() -> None:
    # identify/alias name both ids: both must lead to (and join) one lead. Before, the userId
    # was dropped whenever an anonymousId was present, so an alias merged nothing and a later
    # server-side track(userId=...) started a separate lead.
    both = identifiers_of(ix(anonymous_id="anon-1", user_id="user-9"))
    assert both.pairs() == [("anon", "anon-1"), ("anon", "user-9")]
    assert both.without({("anon", "user-9")}).pairs() == [("anon", "anon-1")]
    # a server-side call names the user only: that is its visitor id
    assert identifiers_of(ix(user_id="user-9")).pairs() == [("anon", "user-9")]
    assert identifiers_of(ix(anonymous_id="x", user_id="x")).pairs() == [("anon", "x")]
    leads = {"browser": _lead("browser"), "server": _lead("server")}
    index = {("anon", "anon-1"): "browser", ("anon", "user-9"): "server"}
    res = resolve(both, index, leads)
    assert (res.lead_id, res.merge_ids) == ("browser", ["server"])


def _lead(lead_id: str, *emails: str) -> Lead:
    return Lead(
        id=lead_id,
        key=lead_id,
        created_at=T0,
        emails=list(emails),
        email=emails[0] if emails else None,
    )


LEADS = {
    "known": _lead("known", "a@x.io"),
    "anon": _lead("anon"),
    "other": _lead("other", "b@x.io"),
}
INDEX = {
    ("email", "a@x.io"): "known",
    ("anon", "v1"): "anon",
    ("anon", "v2"): "other",
    ("email", "b@x.io"): "other",
}
RESOLUTIONS = [
    # identifiers, lead, merged, conflicting identifiers
    (Identifiers("a@x.io", None, None), "known", [], []),
    (Identifiers("new@x.io", None, None), None, [], []),
    (Identifiers(None, None, "v1"), "anon", [], []),
    (Identifiers("a@x.io", None, "v1"), "known", ["anon"], []),
    (Identifiers("new@x.io", None, "v1"), "anon", [], []),
    (Identifiers("a@x.io", None, "v2"), "known", [], [("anon", "v2")]),
    (Identifiers("new@x.io", None, "v2"), None, [], [("anon", "v2")]),
]


@pytest.mark.parametrize(("ids", "lead", "merged", "conflicts"), RESOLUTIONS)
def test_resolution(
    ids: Identifiers, lead: str | None, merged: list[str], conflicts: list[tuple[str, str]]
) -> None:
    res = resolve(ids, INDEX, LEADS)
    assert res.lead_id == lead
    assert res.merge_ids == merged
    assert sorted(res.foreign) == conflicts


def test_the_last_touch_is_the_last_campaign_the_first_touch_stays() -> None:
    from services.scoring.domain import profile as prof

    lead = prof.new_lead("l1", Identifiers("k@x.io", None, None), T0)
    first_visit = {"utm_source": "google", "utm_medium": "cpc", "utm_campaign": "spring"}
    prof.update_profile(lead, ix(attribution=first_visit), T0)
    assert (
        lead.first_touch
        == lead.last_touch
        == {
            "source": "google",
            "medium": "cpc",
            "campaign": "spring",
        }
    )
    # capture.js: the visit's first touch as utm_*, the campaign that brought it back as last_*
    both = {**first_visit, "last_utm_source": "newsletter", "last_utm_campaign": "fall"}
    prof.update_profile(lead, ix(attribution=both), T0)
    assert lead.first_touch == {"source": "google", "medium": "cpc", "campaign": "spring"}
    assert lead.last_touch == {"source": "newsletter", "medium": None, "campaign": "fall"}
