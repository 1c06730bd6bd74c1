"""Leadflow's common package: settings, events, the Kafka bus, the database and the outbox.

Services depend on this package and on the public contract only; they never import each other.
"""
