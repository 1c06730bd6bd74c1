"""The pure scoring domain: identity, rules, scores and lifecycle. No I/O lives here."""
