"""What capture publishes: interaction events (docs/events.md), their source and their ids.

Pure: builds CloudEvents and derives ids, no I/O.
"""

from __future__ import annotations

from typing import Any

from shared.contract import Interaction
from shared.events import InteractionType

#: Channels whose interactions are built from submitted fields (forms, downloads, webinars).
_FIELD_CHANNELS = frozenset({"form", "download", "webinar"})


def interaction_data(type_: str, ix: Interaction) -> dict[str, Any]:
    """The event data of ``ix`` exactly as capture has always published it.

    ``Interaction.to_data()`` plus two details of capture's data before the typed contract,
    kept so that the events on Kafka stay as they were: interactions built from submitted
    fields carry ``"message": null`` when there is no message, and an erasure request's
    ``contact`` holds only the identifiers it names (``email`` and/or ``phone``).
    """
    data = ix.to_data()
    if ix.channel in _FIELD_CHANNELS:
        data.setdefault("message", None)
    if type_ == InteractionType.ERASURE_REQUESTED and data["contact"] is not None:
        data["contact"] = {k: v for k, v in data["contact"].items() if v is not None}
    return data
