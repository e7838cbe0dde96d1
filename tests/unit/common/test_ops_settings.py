"""The settings of operations: ops endpoint, drain, log format, OTLP export."""

import pytest

from services.common.settings import SettingsError, load_settings


def test_ops_defaults() -> None:
    settings = load_settings({}, None)
    assert (settings.ops_host, settings.ops_port) == ("127.0.0.1", 9090)
    assert settings.drain_timeout == 600.0
    assert settings.log_format == "text"
    assert settings.otlp_endpoint == ""


def test_ops_values_are_read() -> None:
    settings = load_settings(
        {
            "OPS_HOST": "0.0.0.0",
            "OPS_PORT": "0",
            "DRAIN_TIMEOUT": "3600.5",
            "LOG_FORMAT": "JSON",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://jaeger:4318",
        },
        None,
    )
    assert (settings.ops_host, settings.ops_port) == ("0.0.0.0", 0)
    assert settings.drain_timeout == 3600.5  # a drain may outlast an hour-long call
    assert settings.log_format == "json"
    assert settings.otlp_endpoint == "http://jaeger:4318"


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"OPS_PORT": "70000"}, "OPS_PORT"),
        ({"OPS_PORT": "metrics"}, "OPS_PORT"),
        ({"OPS_HOST": "http://x"}, "OPS_HOST"),
        ({"DRAIN_TIMEOUT": "0"}, "DRAIN_TIMEOUT"),
        ({"DRAIN_TIMEOUT": "forever"}, "DRAIN_TIMEOUT"),
        ({"DRAIN_TIMEOUT": "100000"}, "DRAIN_TIMEOUT"),
        ({"LOG_FORMAT": "xml"}, "LOG_FORMAT"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "jaeger:4318"}, "OTEL_EXPORTER_OTLP_ENDPOINT"),
    ],
)
def test_bad_ops_settings_name_the_setting(env: dict[str, str], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        load_settings(env, None)
