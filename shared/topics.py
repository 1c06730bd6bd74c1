"""Topic names, all carrying the configured prefix (``leadflow.`` by default)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Topics:
    """The six Leadflow topics under one prefix."""

    prefix: str = "leadflow."

    @property
    def interactions(self) -> str:
        return f"{self.prefix}interactions"

    @property
    def leads(self) -> str:
        return f"{self.prefix}leads"

    @property
    def routing(self) -> str:
        return f"{self.prefix}routing"

    @property
    def nurture(self) -> str:
        return f"{self.prefix}nurture"

    @property
    def sales(self) -> str:
        return f"{self.prefix}sales"

    @property
    def deadletter(self) -> str:
        return f"{self.prefix}deadletter"

    def all(self) -> list[str]:
        """Every topic, for creating them at start-up."""
        return [
            self.interactions,
            self.leads,
            self.routing,
            self.nurture,
            self.sales,
            self.deadletter,
        ]
