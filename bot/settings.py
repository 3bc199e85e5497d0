"""Configuration: ``BRUSHWORK_*`` environment variables and an optional TOML file.

Precedence, strongest first: values passed in code, environment variables, the TOML file
(``BRUSHWORK_CONFIG``, else ``$BRUSHWORK_HOME/brushwork.toml`` when it exists), defaults.
Nested values use ``__`` in variables, e.g. ``BRUSHWORK_MODELS__MYMODEL__SOURCE=/models/my``.

Nothing here runs at import time: :func:`load_settings` builds the object.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

import platformdirs
from pydantic import BaseModel, Field, SecretStr, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from generation.errors import echo

ENV_PREFIX = "BRUSHWORK_"


def default_home() -> Path:
    return platformdirs.user_data_path("brushwork", appauthor=False)


def _home_from_env() -> Path:
    value = os.environ.get(f"{ENV_PREFIX}HOME")
    return Path(value).expanduser() if value else default_home()


def config_file_path() -> Path | None:
    """The TOML file in use, if any."""
    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    candidate = _home_from_env() / "brushwork.toml"
    return candidate if candidate.is_file() else None


class ModelEntry(BaseModel):
    """One model in the registry: where its weights are and how to load them."""

    source: str = Field(description="hub id (org/name), modelscope:org/name, a diffusers folder, "
                                    "or a single-file .safetensors checkpoint")
    family: Literal["sd1", "sd2", "sdxl", "tiny"] | None = Field(
        default=None, description="model family; detected when left out")
    vae: str | None = None
    variant: str | None = None
    revision: str | None = None
    dtype: Literal["float16", "bfloat16", "float32"] | None = None
    config: str | None = Field(default=None, description="for a single-file checkpoint offline: a diffusers "
                                                          "folder or hub id holding the model's configs")
    description: str = ""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        extra="ignore",
        validate_default=True,
    )

    home: Path = Field(default_factory=default_home,
                       description="data folder: database, images, LoRAs, model and hash caches")
    database_url: str | None = Field(default=None, description="any SQLAlchemy URL; default SQLite in home")
    default_model: str = Field(default="tiny", description="model used when a request names none")
    models: dict[str, ModelEntry] = Field(default_factory=dict,
                                          description="extra models, by name (adds to the built-in ones)")
    device: str | None = Field(default=None, description="cuda, cuda:1, mps or cpu; chosen automatically")
    dtype: Literal["float16", "bfloat16", "float32"] | None = Field(
        default=None, description="weights precision; fp16 on CUDA, fp32 on CPU by default")
    max_loaded_models: int = Field(default=1, ge=1, le=16)
    max_model_memory_gb: float | None = Field(
        default=None, gt=0, description="also bound the loaded models by their weights' size (GiB)")
    # -- the job queue --
    queue_max_per_user: int | None = Field(default=5, ge=1, description="jobs one user may have waiting")
    queue_max_per_guild: int | None = Field(default=50, ge=1, description="jobs one server may have waiting")
    queue_max_total: int | None = Field(default=1000, ge=1, description="jobs that may wait in all")
    queue_daily_images: int | None = Field(default=None, ge=1, description="images per server per UTC day")
    queue_daily_gpu_seconds: float | None = Field(default=None, gt=0,
                                                  description="GPU-seconds per server per UTC day")
    queue_max_batch_images: int = Field(default=8, ge=1, le=64, description="images in one pipeline call")
    queue_batch_megapixels: float | None = Field(
        default=None, gt=0, description="output megapixels in one pipeline call; automatic from GPU memory")
    queue_hang_timeout_s: float = Field(default=600.0, gt=0,
                                        description="a worker silent this long is reported as hung")
    queue_devices: list[str] = Field(default_factory=list,
                                     description="one worker per device, e.g. [\"cuda:0\", \"cuda:1\"]; "
                                                 "default: one on `device`")
    # -- server LoRAs: datasets, training, import --
    dataset_max_per_guild: int = Field(default=20, ge=1, description="datasets one server may keep")
    dataset_max_images: int = Field(default=200, ge=1, le=10_000, description="images in one dataset")
    dataset_max_mb_per_guild: float = Field(default=1024.0, gt=0,
                                            description="disk space for one server's dataset images (MB)")
    dataset_max_image_mb: float = Field(default=20.0, gt=0, description="largest uploaded image (MB)")
    dataset_max_zip_mb: float = Field(default=200.0, gt=0, description="largest uploaded dataset zip (MB)")
    dataset_max_upload_mb: float = Field(default=100.0, gt=0,
                                         description="the loose images of one upload together (MB)")
    upload_max_mb: float = Field(default=20.0, gt=0, description="largest picture to start an image from (MB)")
    lora_max_per_guild: int = Field(default=50, ge=1, description="LoRAs (ready or training) one server may keep")
    lora_max_import_mb: float = Field(default=256.0, gt=0, description="largest imported LoRA file (MB)")
    training_chunk_seconds: float = Field(
        default=20.0, gt=0, description="training runs in chunks this long between generation jobs")
    training_chunk_steps: int | None = Field(default=None, ge=1,
                                             description="also end a chunk after this many steps")
    training_max_steps: int = Field(default=5000, ge=1, description="most steps one training may ask for")
    training_sample_every: int | None = Field(
        default=None, ge=0, description="a sample image every N steps (default: 100 on a GPU, 25 on a CPU)")
    discord_token: SecretStr | None = Field(default=None, description="the bot's token (brushwork run)")
    classifier_model: str | None = Field(
        default=None, description="Hugging Face image-classification model (folder or cached hub id) that "
                                  "screens results for servers whose safety policy asks; none by default")
    log_level: str = Field(default="INFO")

    @field_validator("home", mode="after")
    @classmethod
    def _expand_home(cls, value: Path) -> Path:
        return value.expanduser()

    @field_validator("database_url", mode="after")
    @classmethod
    def _openable_url(cls, value: str | None) -> str | None:
        """A URL SQLAlchemy can open here (its dialect and driver installed), found at start-up
        rather than as an internal error at the first query.  The value is never repeated: it
        may hold a password."""
        if not value:
            return value
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError, NoSuchModuleError

        example = "e.g. sqlite:////srv/brushwork/brushwork.db or postgresql+psycopg://user@host/brushwork"
        try:
            url = make_url(value)
        except ArgumentError:
            raise ValueError(f"not a database URL: use {example}") from None
        try:
            url.get_dialect()
        except NoSuchModuleError:
            raise ValueError(f"no database driver `{url.drivername}` is installed here: use {example}") from None
        return value

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        toml = config_file_path()
        if toml is not None:
            sources.append(TomlConfigSettingsSource(settings_cls, toml_file=toml))
        return tuple(sources)

    # ------------------------------------------------------------------ derived paths
    @property
    def effective_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.home / 'brushwork.db').as_posix()}"

    @property
    def images_dir(self) -> Path:
        return self.home / "images"

    @property
    def loras_dir(self) -> Path:
        return self.home / "loras"

    @property
    def cache_dir(self) -> Path:
        return self.home / "cache"

    @property
    def datasets_dir(self) -> Path:
        """Training images of every server (``<dataset id>/<image id>.png``)."""
        return self.home / "datasets"

    @property
    def server_loras_dir(self) -> Path:
        """LoRAs trained or imported by servers; kept apart from ``loras/`` (the operator's, shared)."""
        return self.home / "server_loras"

    @property
    def uploads_dir(self) -> Path:
        """Pictures people sent to start an image from (``/imagine picture:``), as re-encoded PNGs."""
        return self.home / "uploads"

    @property
    def training_dir(self) -> Path:
        """Training runs in progress: checkpoint, samples and the dataset snapshot, per LoRA."""
        return self.home / "training"


def load_settings(**overrides: object) -> Settings:
    """Read the environment and the TOML file now (never at import).  Mistakes are one
    :class:`SettingsError` each, before any work: a ``BRUSHWORK_CONFIG`` that is not there or
    not TOML, a value out of range, a database URL that cannot be opened, a home that is a
    file or cannot be written."""
    import tomllib

    from pydantic import ValidationError

    explicit = os.environ.get(f"{ENV_PREFIX}CONFIG")
    config = config_file_path()
    if explicit and config is not None and not config.is_file():
        raise SettingsError(f"{ENV_PREFIX}CONFIG names {echo(explicit, 80)}, which is not a file: point it at your "
                            f"settings file, or unset it to use brushwork.toml in the data folder")
    try:
        settings = Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(_describe(exc)) from None
    except tomllib.TOMLDecodeError as exc:
        raise SettingsError(f"the settings file {echo(config, 80)} is not valid TOML: {exc}. Each line is "
                            'key = value, e.g. default_model = "sd15"') from None
    except (OSError, UnicodeDecodeError) as exc:
        raise SettingsError(f"the settings file {echo(config, 80)} cannot be read: "
                            f"{getattr(exc, 'strerror', None) or exc}") from None
    problem = folder_problem(settings.home)
    if problem is not None:
        raise SettingsError(f"the data folder {echo(settings.home, 80)} (--home or {ENV_PREFIX}HOME): {problem}")
    return settings


def folder_problem(path: Path) -> str | None:
    """What keeps ``path`` from being a folder this process writes into (it is made when
    missing), in words for an error message; None when nothing does."""
    try:
        if path.exists():
            if not path.is_dir():
                return "that is a file, not a folder: name a folder (it is made if missing)"
            if not os.access(path, os.W_OK | os.X_OK):
                return "this user may not write into that folder: name one you may write to"
            return None
        parent = path.parent
        while not parent.exists() and parent != parent.parent:
            parent = parent.parent
        if not parent.is_dir():
            return f"{echo(parent, 80)} is a file, so no folder can be made under it: name a folder"
        if not os.access(parent, os.W_OK | os.X_OK):
            return f"this user may not make a folder in {echo(parent, 80)}: name a folder you may write to"
    except OSError as exc:  # a name too long for the file system, a loop of links…
        return f"not a usable folder name ({exc.strerror or exc})"
    return None


class SettingsError(Exception):
    """Invalid configuration, with a message naming the variable and what is allowed."""


def _describe(exc) -> str:
    lines = []
    for err in exc.errors():
        where = ".".join(str(p) for p in err["loc"])
        env = ENV_PREFIX + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"{where} ({env}): {err['msg'].removeprefix('Value error, ')}")
    return "invalid configuration: " + "; ".join(lines)
