"""Temporal Cloud through temporalio.envconfig: the sample profiles of
deploy/temporal-cloud.toml, as docs/temporal-cloud.md tells to use them, give
`Client.connect` (remedy.temporal.connect_options) the Cloud endpoint, the namespace, the
API key or the client certificate; and the page registers every search attribute."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from temporalio.service import TLSConfig

from remedy.config import RemedyConfig
from remedy.temporal import connect_options
from tests.test_deploy_manifests import expected_search_attributes

ROOT = Path(__file__).resolve().parents[1]
PROFILES = ROOT / "deploy" / "temporal-cloud.toml"
DOC = ROOT / "docs" / "temporal-cloud.md"
API_KEY = "cloud-api-key-for-tests"


@pytest.fixture
def profiles(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The sample file with its certificate paths pointing at files made here."""
    for variable in ("TEMPORAL_ADDRESS", "TEMPORAL_NAMESPACE", "TEMPORAL_API_KEY"):
        monkeypatch.delenv(variable, raising=False)
    (tmp_path / "client.pem").write_bytes(b"-----BEGIN CERTIFICATE-----\ncert\n")
    (tmp_path / "client.key").write_bytes(b"-----BEGIN PRIVATE KEY-----\nkey\n")
    text = PROFILES.read_text().replace("/etc/temporal/tls", str(tmp_path))
    path = tmp_path / "temporal.toml"
    path.write_text(text)
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(path))
    return path


def _config(profile: str | None = None) -> RemedyConfig:
    config = RemedyConfig()
    config.temporal.profile = profile
    return config


def test_the_api_key_profile_reaches_the_regional_endpoint_over_tls(
    profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_API_KEY", API_KEY)
    options = connect_options(_config("cloud"))
    assert options["target_host"] == "us-east-1.aws.api.temporal.io:7233"
    assert options["namespace"] == "remedy-prod.a1b2c"
    assert options["api_key"] == API_KEY
    assert options["tls"] is True


def test_api_key_env_reads_the_key_from_the_variable_remedy_toml_names(
    profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDY_CLOUD_KEY", API_KEY)
    config = _config("cloud")
    config.temporal.api_key_env = "REMEDY_CLOUD_KEY"
    options = connect_options(config)
    assert options["api_key"] == API_KEY and options["tls"] is True


def test_the_mtls_profile_presents_the_client_certificate(profiles: Path) -> None:
    options = connect_options(_config("cloud-mtls"))
    assert options["target_host"] == "remedy-prod.a1b2c.tmprl.cloud:7233"
    tls = options["tls"]
    assert isinstance(tls, TLSConfig)
    assert tls.client_cert == (profiles.parent / "client.pem").read_bytes()
    assert tls.client_private_key == (profiles.parent / "client.key").read_bytes()
    assert "api_key" not in options


def test_temporal_profile_selects_a_profile_as_temporal_profile_does(
    profiles: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_PROFILE", "cloud-mtls")
    assert connect_options(_config())["target_host"] == "remedy-prod.a1b2c.tmprl.cloud:7233"


def test_the_page_registers_every_search_attribute_with_its_type() -> None:
    registered = dict(re.findall(r"(Remedy\w+)=(Keyword|Int|Datetime)", DOC.read_text()))
    assert registered == expected_search_attributes()
