"""Topic names, all carrying the configured prefix (``leadflow.`` by default)."""

from __future__ import annotations

from dataclasses import dataclass

#: The topic prefix when none is configured (``LEADFLOW_TOPIC_PREFIX``).
DEFAULT_PREFIX = "leadflow."


@dataclass(frozen=True, slots=True)
class Topics:
    """The six Leadflow topics under one prefix, and the consumer groups that read them."""

    prefix: str = DEFAULT_PREFIX

    def group(self, name: str) -> str:
        """The Kafka consumer group of the consumer called ``name`` (``leadflow-scoring``).

        Under another prefix than the default, the group carries the prefix as the topics do:
        deployments that share a Kafka cluster under their own prefixes then never join each
        other's groups (a shared group rebalanced every member at each start, stop or crash of
        any of them, whatever topics it read). Under the default prefix it is ``name`` itself,
        the group the first releases used, so their committed offsets stay theirs.
        """
        return name if self.prefix == DEFAULT_PREFIX else f"{self.prefix}{name}"

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
