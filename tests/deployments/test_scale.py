"""The scale stack's pieces that need no stack: its databases, its settings in this process.

The stack itself runs in tests/scale (`make test-scale`)."""

from __future__ import annotations

import sqlalchemy as sa

from deployments.scale import ensure_database, settings_from_environment


def exists(server_url: str, name: str) -> bool:
    engine = sa.create_engine(sa.make_url(server_url).set(database="postgres"))
    try:
        with engine.connect() as conn:
            query = sa.text("SELECT 1 FROM pg_database WHERE datname = :n")
            return conn.scalar(query, {"n": name}) == 1
    finally:
        engine.dispose()


def test_ensure_database_creates_keeps_and_freshens(postgres_url: str) -> None:
    name = f"{sa.make_url(postgres_url).database}_scale"
    url = sa.make_url(postgres_url).set(drivername="postgresql+asyncpg", database=name)
    ensure_database(url.render_as_string(hide_password=False))  # any driver: asyncpg too
    assert exists(postgres_url, name)
    table = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    with table.begin() as conn:
        conn.execute(sa.text("CREATE TABLE kept (id int)"))
    table.dispose()

    ensure_database(url.render_as_string(hide_password=False))  # there: left as it is
    with sa.create_engine(url.set(drivername="postgresql+psycopg")).connect() as conn:
        assert conn.scalar(sa.text("SELECT to_regclass('kept') IS NOT NULL"))

    ensure_database(url.render_as_string(hide_password=False), fresh=True)  # dropped, created
    engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
    with engine.connect() as conn:
        assert not conn.scalar(sa.text("SELECT to_regclass('kept') IS NOT NULL"))
    engine.dispose()
    ensure_database(url.render_as_string(hide_password=False), fresh=True)
    admin = sa.create_engine(
        sa.make_url(postgres_url).set(database="postgres"), isolation_level="AUTOCOMMIT"
    )
    with admin.connect() as conn:
        conn.execute(sa.text(f'DROP DATABASE "{name}" WITH (FORCE)'))
    admin.dispose()


def test_settings_from_environment_gives_this_process_the_new_settings(monkeypatch) -> None:
    from prefect.settings import get_current_settings

    before = get_current_settings().results.default_storage_block
    monkeypatch.setenv("PREFECT_RESULTS_DEFAULT_STORAGE_BLOCK", "s3-bucket/elsewhere")
    assert get_current_settings().results.default_storage_block == before  # read at import
    with settings_from_environment():
        assert get_current_settings().results.default_storage_block == "s3-bucket/elsewhere"
    assert get_current_settings().results.default_storage_block == before
