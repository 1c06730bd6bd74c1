"""The leads a scoring consumer wrote last, kept in memory with the row version they were
written as, so the next batch that touches them need not read and decode their states again.

A lead's state is the bulk of what a batch reads (about 5 KB of JSON for a lead with a few
dozen interactions): reading it back costs PostgreSQL the detoasting and the jsonb output, and
this process the JSON decoding and :meth:`Lead.from_state`, all for the state this process
itself wrote moments before (a lead's events come from one partition, which one consumer
reads). :meth:`LeadRepository.load` still locks every row and reads its version; a cached lead
is used only when the row is exactly the version this process wrote, and the row's state is
read otherwise.

The version is PostgreSQL's ``xmin`` (the transaction that wrote the row version) with its
``ctid`` (where that version lies): any write by anyone (another replica, the API, the decay
sweep, an erasure earlier in the same transaction) makes a new version with another pair. A
lead is taken out of the cache when it is loaded and put back only when it is written, with the
version the write returned: a lead changed in memory by a transaction that then rolled back is
never served, since the version it was written as never became the row's.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from prometheus_client import Counter

from services.scoring.domain.model import Lead

#: How the consumer's leads were loaded: ``hit`` from the cache, ``miss`` from the row.
LOADS = Counter(
    "leadflow_scoring_lead_cache_total",
    "Leads a scoring batch loaded, from the consumer's cache (hit) or their row (miss)",
    ["result"],
)

#: Memory the cache may hold by default (``LEADFLOW_SCORING_LEAD_CACHE_MB``).
DEFAULT_MB = 32.0


def footprint(lead: Lead) -> int:
    """About how many bytes a lead holds in memory: its fields, and its hits, which a lead
    keeps up to 50 per repeatable rule (measured: about 7 KB for a lead with 34 hits)."""
    return 2_000 + 200 * len(lead.hits)


class LeadCache:
    """Leads by id with the row version each was written as, within ``megabytes`` of memory
    (by :func:`footprint`), least recently written dropped first."""

    def __init__(self, megabytes: float = DEFAULT_MB) -> None:
        self.budget = int(megabytes * 1024 * 1024)
        self.held = 0
        self._entries: OrderedDict[str, tuple[str, Lead, int]] = OrderedDict()
        #: leads served from the cache and leads whose row had to be read (for tests, metrics)
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._entries)

    def take(self, ids: Iterable[str]) -> dict[str, tuple[str, Lead]]:
        """The cached (version, lead) of these ids, removed from the cache: the caller now
        owns the lead and may change it, and only :meth:`put` makes it servable again."""
        pop = self._entries.pop
        out: dict[str, tuple[str, Lead]] = {}
        for lead_id in ids:
            entry = pop(lead_id, None)
            if entry is not None:
                out[lead_id] = entry[0], entry[1]
                self.held -= entry[2]
        return out

    def count(self, hits: int, misses: int) -> None:
        """Leads one load took from the cache and read from their rows."""
        self.hits += hits
        self.misses += misses
        if hits:
            LOADS.labels("hit").inc(hits)
        if misses:
            LOADS.labels("miss").inc(misses)

    def put(self, version: str, lead: Lead) -> None:
        """A lead just written as row version ``version``."""
        size = footprint(lead)
        if size > self.budget:
            return
        old = self._entries.pop(lead.id, None)
        if old is not None:
            self.held -= old[2]
        self._entries[lead.id] = (version, lead, size)
        self.held += size
        while self.held > self.budget:
            _, (_, _, dropped) = self._entries.popitem(last=False)
            self.held -= dropped
