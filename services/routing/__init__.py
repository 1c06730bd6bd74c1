"""Routing: assigns sales-qualified leads to reps and runs their response-time SLA clocks."""
