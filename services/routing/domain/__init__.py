"""Pure routing logic: business time, routing rules, round-robin and SLA arithmetic (no I/O)."""
