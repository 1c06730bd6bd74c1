"""The producers' partitioner: aiokafka's choice of partition, with recent keys' hashes kept."""

from __future__ import annotations

from aiokafka.partitioner import DefaultPartitioner

from shared.bus import RememberingPartitioner


def test_keys_land_where_aiokafka_and_java_clients_put_them() -> None:
    remembering, default = RememberingPartitioner(size=50), DefaultPartitioner()
    partitions = list(range(12))
    keys = [f"lead-{i}@example.com".encode() for i in range(200)] + [b"", "zoë".encode()]
    for _ in range(2):  # computed, then remembered (and forgotten past the size)
        for key in keys:
            assert remembering(key, partitions, partitions) == default(key, partitions, partitions)
    # fewer partitions (a topic described differently): the hash is kept, not the partition
    assert remembering(keys[0], [0, 1, 2], [0, 1, 2]) == default(keys[0], [0, 1, 2], [0, 1, 2])
    # partitions Java's client chooses out of 1,000 (kafka-python's compatibility vectors)
    java = {b"": 681, b"a": 524, b"ab": 434, b"abc": 107, b"123456789": 566, b"\x00 ": 742}
    thousand = list(range(1000))
    assert {k: remembering(k, thousand, thousand) for k in java} == java


def test_a_record_without_key_goes_to_an_available_partition() -> None:
    assert RememberingPartitioner()(None, [0, 1, 2], [2]) == 2
