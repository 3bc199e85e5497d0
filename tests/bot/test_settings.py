"""Settings: environment variables, the TOML file, precedence, and clear errors."""

from __future__ import annotations

import pytest

from bot.settings import SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    import os

    for key in list(os.environ):
        if key.startswith("BRUSHWORK_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("BRUSHWORK_HOME", str(tmp_path / "home"))


def test_defaults_live_in_home(tmp_path):
    settings = load_settings()
    assert settings.home == tmp_path / "home"
    assert settings.effective_database_url == f"sqlite:///{tmp_path / 'home' / 'brushwork.db'}"
    assert settings.default_model == "tiny"
    assert settings.images_dir == tmp_path / "home" / "images"


def test_toml_file_in_home_and_env_wins(tmp_path, monkeypatch):
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "brushwork.toml").write_text(
        'default_model = "dream"\nmax_loaded_models = 2\n'
        '[models.dream]\nsource = "/models/dream.safetensors"\nconfig = "/models/sd15"\n',
        encoding="utf-8",
    )
    settings = load_settings()
    assert settings.default_model == "dream" and settings.max_loaded_models == 2
    assert settings.models["dream"].source == "/models/dream.safetensors"
    monkeypatch.setenv("BRUSHWORK_DEFAULT_MODEL", "tiny")
    monkeypatch.setenv("BRUSHWORK_MODELS__MINE__SOURCE", "org/mine")
    settings = load_settings()
    assert settings.default_model == "tiny"
    assert settings.models["mine"].source == "org/mine"


def test_explicit_config_file_and_database_url(tmp_path, monkeypatch):
    config = tmp_path / "elsewhere.toml"
    config.write_text('database_url = "sqlite:////srv/bw.db"\n', encoding="utf-8")
    monkeypatch.setenv("BRUSHWORK_CONFIG", str(config))
    assert load_settings().effective_database_url == "sqlite:////srv/bw.db"


def test_bad_values_name_the_variable(monkeypatch):
    monkeypatch.setenv("BRUSHWORK_MAX_LOADED_MODELS", "lots")
    with pytest.raises(SettingsError) as exc:
        load_settings()
    assert "BRUSHWORK_MAX_LOADED_MODELS" in str(exc.value)


def test_token_never_shows_in_repr(monkeypatch):
    monkeypatch.setenv("BRUSHWORK_DISCORD_TOKEN", "secret-token-value")
    settings = load_settings()
    assert settings.discord_token.get_secret_value() == "secret-token-value"
    assert "secret-token-value" not in repr(settings) and "secret-token-value" not in str(settings.model_dump())
