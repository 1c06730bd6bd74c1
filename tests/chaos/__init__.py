"""Resilience drills in the production shape.

``cluster`` starts Leadflow as Compose runs it (separate processes, PostgreSQL, a broker, two
replicas of scoring and routing); ``traffic`` sends people at capture and keeps the ledger of
what was accepted; ``reconcile`` checks that ledger against leads, assignments, SLA events and
topics; ``drills`` injects the faults. The short drills run in ``make test``
(``test_drills.py``); ``make chaos`` (``python -m tests.chaos``) runs them full size and writes
``results.md``.

``CHAOS_WORKDIR=dir`` keeps every process's log; ``CHAOS_CODE=dir`` drills another copy of
``shared``/``services`` (e.g. ``git archive HEAD shared services | tar -x -C dir``) to see which
drills an older commit fails.
"""
