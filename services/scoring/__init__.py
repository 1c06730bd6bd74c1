"""Scoring: keeps each lead's state (score, temperature, stage, status) from interaction events."""
