"""Embedded services shared between processes: a second user must not stop the first's servers."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import psycopg

from infra.embedded import EmbeddedServices, _alive

_MIGRATE_BESIDE = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from infra.embedded import EmbeddedServices, _alive
    e = EmbeddedServices(Path(sys.argv[1]), durable=False, want=("postgres",))
    e.start()
    e.stop()
    """
)


def test_a_second_process_uses_but_does_not_stop_the_owners_servers(tmp_path: Path) -> None:
    owner = EmbeddedServices(tmp_path, durable=False, want=("postgres",))
    pg = owner.start()["postgres"]
    try:
        subprocess.run([sys.executable, "-c", _MIGRATE_BESIDE, str(tmp_path)], check=True, timeout=60)
        with psycopg.connect(pg.url) as conn:  # still up for its owner
            assert conn.execute("SELECT 1").fetchone() == (1,)
    finally:
        owner.stop()
    assert not _alive(pg.pid, "postgres")  # (a zombie awaiting its reaper counts as gone)


def test_servers_of_a_dead_owner_are_adopted_and_stopped(tmp_path: Path) -> None:
    script = _MIGRATE_BESIDE.replace("e.stop()", "import os; os._exit(0)  # dies without stopping")
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=60)
    heir = EmbeddedServices(tmp_path, durable=False, want=("postgres",))
    pg = heir.start()["postgres"]
    assert pg.owned
    heir.stop()
    assert not _alive(pg.pid, "postgres")  # (a zombie awaiting its reaper counts as gone)
