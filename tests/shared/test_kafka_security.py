"""Managed Kafka: the TLS and SASL settings reach every client a service makes."""

from __future__ import annotations

import ssl
from pathlib import Path
from typing import Any

import certifi
import pytest
from pydantic import ValidationError

from shared.bus import kafka_client_options, make_producer
from shared.settings import Settings


def _settings(**kafka: Any) -> Settings:
    return Settings(leadflow_dev=True, kafka_bootstrap_servers="broker:9093", **kafka)


def test_a_plain_local_broker_needs_nothing_more() -> None:
    assert kafka_client_options(_settings()) == {
        "bootstrap_servers": "broker:9093",
        "security_protocol": "PLAINTEXT",
    }


def test_sasl_over_tls_as_confluent_cloud_and_msk_use_it() -> None:
    options = kafka_client_options(
        _settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="svc-leadflow",
            kafka_sasl_password="s3cret",
            kafka_ssl_cafile=Path(certifi.where()),
        )
    )
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "svc-leadflow"
    assert options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert options["ssl_context"].verify_mode == ssl.CERT_REQUIRED


async def test_the_producer_is_built_with_them() -> None:
    producer = make_producer(
        _settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="PLAIN",
            kafka_sasl_username="u",
            kafka_sasl_password="p",
        )
    )
    client = producer.client
    assert client._security_protocol == "SASL_PLAINTEXT"
    assert client._sasl_mechanism == "PLAIN" and client._sasl_plain_username == "u"


@pytest.mark.parametrize(
    ("kafka", "named"),
    [
        ({"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "PLAIN"}, "USERNAME"),
        ({"kafka_security_protocol": "SASL_PLAINTEXT"}, "KAFKA_SASL_MECHANISM"),
        ({"kafka_ssl_certfile": Path("/tmp/c.pem")}, "KAFKA_SSL_KEYFILE"),
    ],
)
def test_incomplete_credentials_stop_start_up_naming_the_variable(
    kafka: dict[str, Any], named: str
) -> None:
    with pytest.raises(ValidationError, match=named):
        _settings(**kafka)
