"""Pure capture logic: normalisation, event data, Segment payloads, ad-platform mapping.

Nothing here does I/O; an import-linter contract keeps database, Kafka and HTTP libraries out.
"""
