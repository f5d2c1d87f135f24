"""remedy.toml: every problem is one clear message naming the file and the key."""

from __future__ import annotations

from pathlib import Path

import pytest

from remedy.config import ConfigError, load_config, secret

REPO_ROOT = Path(__file__).resolve().parents[1]


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "remedy.toml"
    path.write_text(text)
    return path


def test_the_committed_config_loads() -> None:
    config = load_config(REPO_ROOT / "remedy.toml")
    assert "demo" in config.services
    assert config.home_dir == REPO_ROOT / ".remedy"
    assert config.repo_location("demo") == str(REPO_ROOT / ".remedy" / "demo" / "shop.git")


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"nope\.toml: no such config file"):
        load_config(tmp_path / "nope.toml")


def test_malformed_toml_names_the_file_and_position(tmp_path: Path) -> None:
    path = write(tmp_path, "[services.shop\nrepo = 1\n")
    with pytest.raises(ConfigError, match=r"remedy\.toml: not valid TOML: .*line 1"):
        load_config(path)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[services.shop]\nbranch = 'main'\n", "services.shop.repo: Field required"),
        ("[services.shop]\nrepo = 'x'\napprovers = 'U1'\n", "services.shop.approvers"),
        ("[services.shop]\nrepo = 'x'\nrepoo = 'y'\n", "services.shop.repoo: unknown key"),
        ("[intake]\nport = 'eighty'\n", "intake.port: Input should be a valid integer"),
        ("[llm]\nmode = 'gpt'\n", "llm.mode: Input should be 'local', 'claude', 'auto' or 'none'"),
        ("[services.'Shop Front']\nrepo = 'x'\n", "service name 'Shop Front'"),
    ],
)
def test_invalid_values_name_the_key(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(path) in str(error.value)
    assert message in str(error.value)


def test_paths_resolve_against_the_file_and_env_overrides_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("REMEDY_INTAKE__PORT", "9191")
    monkeypatch.setenv("SHOP_TOKEN_FOR_TEST", "t0k3n")
    path = write(
        tmp_path,
        "home = 'state'\n[services.shop]\nrepo = 'repos/shop'\n"
        "intake_token_env = 'SHOP_TOKEN_FOR_TEST'\n"
        "[services.remote]\nrepo = 'https://github.com/acme/remote.git'\n",
    )
    config = load_config(path)
    assert config.intake.port == 9191
    assert config.home_dir == tmp_path / "state"
    assert config.repo_location("shop") == str(tmp_path / "repos" / "shop")
    assert config.repo_location("remote") == "https://github.com/acme/remote.git"
    assert secret(config.service("shop").intake_token_env) == "t0k3n"
    # The token is only named in the config, never held by it.
    assert "t0k3n" not in config.model_dump_json()


def test_the_environment_overrides_the_file_key_by_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(
        tmp_path,
        "[intake]\nport = 8080\nhost = '0.0.0.0'\n"
        "[temporal]\naddress = 'temporal.internal:7233'\n"
        "[services.shop]\nrepo = 'x'\nbranch = 'release'\n",
    )
    assert load_config(path).intake.port == 8080
    monkeypatch.setenv("REMEDY_INTAKE__PORT", "8081")
    monkeypatch.setenv("REMEDY_SERVICES__SHOP__BRANCH", "hotfix")
    config = load_config(path)
    assert config.intake.port == 8081
    # Keys the environment does not name keep the file's values.
    assert config.intake.host == "0.0.0.0"
    assert config.temporal.address == "temporal.internal:7233"
    assert config.service("shop").branch == "hotfix"
    assert config.service("shop").repo == "x"


def test_a_bad_environment_value_names_the_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write(tmp_path, "[intake]\nport = 8080\n")
    monkeypatch.setenv("REMEDY_INTAKE__PORT", "eighty")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert "intake.port (from REMEDY_INTAKE__PORT, which overrides the file)" in str(error.value)


def test_values_given_in_code_override_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    from remedy.config import IntakeConfig, RemedyConfig

    monkeypatch.setenv("REMEDY_INTAKE__PORT", "8081")
    assert RemedyConfig().intake.port == 8081
    assert RemedyConfig(intake=IntakeConfig(port=9000)).intake.port == 9000


def test_a_temporal_profile_that_does_not_exist_is_a_config_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TEMPORAL_CONFIG_FILE", str(tmp_path / "temporal.toml"))
    (tmp_path / "temporal.toml").write_text('[profile.prod]\naddress = "temporal:7233"\n')
    path = tmp_path / "remedy.toml"
    path.write_text('[temporal]\nprofile = "staging"\n')
    with pytest.raises(ConfigError, match=r"temporal\.profile: .*'staging' not found"):
        load_config(path)
    path.write_text('[temporal]\nprofile = "prod"\n')
    assert load_config(path).temporal.profile == "prod"
