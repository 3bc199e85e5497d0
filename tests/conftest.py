"""Fixtures shared across the test tree.

``tiny_engine``: an :class:`~generation.engine.Engine` on the built-in tiny model (random
weights, built in code, no download), on the CPU, built once per session.  Tests that
change an engine's state (LoRAs, tiling) must leave it as they found it, which the engine
itself guarantees and the engine tests check.

``database_server`` (autouse): with ``BRUSHWORK_TEST_POSTGRES_URL`` set to a PostgreSQL server
URL (a role that may create databases, e.g. ``postgresql+psycopg://postgres@127.0.0.1:5432/postgres``),
every test gets a fresh database there, exported as ``BRUSHWORK_DATABASE_URL`` (so containers,
the command line and its subprocesses use it) and dropped afterwards.  Without it — the
default — each test has its own SQLite file.  ``.ci/run`` runs the database tests both ways
when a PostgreSQL server can be started.
"""

from __future__ import annotations

import os
import uuid

import pytest

POSTGRES_ENV = "BRUSHWORK_TEST_POSTGRES_URL"


@pytest.fixture(autouse=True)
def database_server(monkeypatch):
    server = os.environ.get(POSTGRES_ENV)
    if not server:
        yield None
        return
    import sqlalchemy

    admin = sqlalchemy.create_engine(server, isolation_level="AUTOCOMMIT", poolclass=sqlalchemy.pool.NullPool)
    name = f"bw_test_{uuid.uuid4().hex[:16]}"
    with admin.connect() as connection:
        connection.exec_driver_sql(f'CREATE DATABASE "{name}" ENCODING \'UTF8\' TEMPLATE template0')
    url = sqlalchemy.make_url(server).set(database=name).render_as_string(hide_password=False)
    monkeypatch.setenv("BRUSHWORK_DATABASE_URL", url)
    try:
        yield url
    finally:
        with admin.connect() as connection:
            connection.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        admin.dispose()


@pytest.fixture(scope="session")
def tiny_engine():
    from generation.engine import Engine
    from generation.models import ModelRegistry

    return Engine(ModelRegistry(), device="cpu")


@pytest.fixture(scope="session")
def make_lora(tmp_path_factory):
    """A factory for random LoRA files on the tiny model's UNet: ``make_lora(folder, "ink") -> path``."""

    def make(folder, name: str, *, seed: int = 5, rank: int = 4, scale: float = 0.5):
        import torch
        from diffusers import StableDiffusionPipeline
        from diffusers.utils import convert_state_dict_to_diffusers
        from peft import LoraConfig
        from peft.utils import get_peft_model_state_dict

        from generation.models.tiny import tiny_pipeline

        unet = tiny_pipeline().unet  # a private copy: the shared tiny model is not touched
        unet.add_adapter(LoraConfig(r=rank, lora_alpha=rank, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
        state = convert_state_dict_to_diffusers(get_peft_model_state_dict(unet))
        noise = torch.Generator().manual_seed(seed)
        state = {k: torch.randn(v.shape, generator=noise) * scale for k, v in state.items()}  # B starts at 0
        StableDiffusionPipeline.save_lora_weights(folder, unet_lora_layers=state, safe_serialization=True,
                                                  weight_name=f"{name}.safetensors")
        return folder / f"{name}.safetensors"

    return make
