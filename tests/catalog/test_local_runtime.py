"""The local runtime end to end: install (reused), start, Bolt, Browser over HTTP, stop; the
password on no command line, an owner-only folder, and a start after the server was killed."""

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import neo4j
from click.testing import CliRunner
from hand_made_catalog import CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION
from synthetic_artifacts import Checkpoint, write

from circuit_atlas.cli import cli
from circuit_atlas.local_server import Distribution, free_port

SLOW_LOADER = str(Path(__file__).resolve().parents[1] / "slow_loader.py")


def test_install_twice_downloads_nothing_the_second_time():
    dist = Distribution.in_cache()
    runner = CliRunner()
    assert runner.invoke(cli, ["neo4j", "install"]).exit_code == 0
    marker_mtime = dist.marker.stat().st_mtime_ns
    again = runner.invoke(cli, ["neo4j", "install"])
    assert again.exit_code == 0, again.output
    assert "nothing to download" in again.output
    assert dist.marker.stat().st_mtime_ns == marker_mtime


def test_start_query_browse_stop(tmp_path):
    runner = CliRunner()
    folder = tmp_path / "server"
    bolt, http = free_port(), free_port()
    start = runner.invoke(
        cli,
        [
            "neo4j",
            "start",
            "--dir",
            str(folder),
            "--bolt-port",
            str(bolt),
            "--http-port",
            str(http),
            "--heap",
            "512m",
            "--pagecache",
            "128m",
        ],
    )
    try:
        assert start.exit_code == 0, start.output
        assert f"bolt://127.0.0.1:{bolt}" in start.output
        assert f"http://127.0.0.1:{http}/browser/" in start.output
        password_file = folder / "password"
        assert (password_file.stat().st_mode & 0o777) == 0o600
        password = password_file.read_text().strip()
        assert len(password) >= 16

        with neo4j.GraphDatabase.driver(f"bolt://127.0.0.1:{bolt}", auth=("neo4j", password)) as driver:
            records, _, _ = driver.execute_query("RETURN 6 * 7 AS answer")
            assert records[0]["answer"] == 42

        with urllib.request.urlopen(f"http://127.0.0.1:{http}/browser/", timeout=10) as response:
            page = response.read().decode()
        assert "<title>Neo4j Browser</title>" in page

        status = runner.invoke(cli, ["neo4j", "status", "--dir", str(folder)])
        assert status.exit_code == 0 and "is running" in status.output

        # The same ports again: a clear error, not a second server fighting the first.
        clash = runner.invoke(
            cli,
            [
                "neo4j",
                "start",
                "--dir",
                str(tmp_path / "other"),
                "--bolt-port",
                str(bolt),
                "--http-port",
                str(free_port()),
            ],
        )
        assert clash.exit_code == 1 and f"Port {bolt} on 127.0.0.1 is in use" in clash.output

        # The CLI finds the local server's URI and password through --neo4j-dir.
        migrate = runner.invoke(
            cli, ["schema", "migrate", "--neo4j-dir", str(folder)], env={"NEO4J_URI": None, "NEO4J_PASSWORD": None}
        )
        assert migrate.exit_code == 0, migrate.output
    finally:
        stop = runner.invoke(cli, ["neo4j", "stop", "--dir", str(folder)])
    assert stop.exit_code == 0 and "stopped" in stop.output
    after = runner.invoke(cli, ["neo4j", "status", "--dir", str(folder)])
    assert after.exit_code == 3 and "not running" in after.output


def command_lines_while(action) -> tuple[object, set[bytes]]:
    """Run ``action()`` while collecting the command line of every process that runs meanwhile."""
    seen: set[bytes] = set()
    done = threading.Event()

    def watch():
        while not done.is_set():
            for entry in Path("/proc").iterdir():
                if entry.name.isdigit() and int(entry.name) != os.getpid():
                    with contextlib.suppress(OSError):  # the process ended meanwhile
                        seen.add((entry / "cmdline").read_bytes())
            time.sleep(0.01)

    watcher = threading.Thread(target=watch)
    watcher.start()
    try:
        return action(), seen
    finally:
        done.set()
        watcher.join()


def test_the_password_never_shows_in_ps_the_folder_is_owner_only_and_a_killed_server_starts_again(tmp_path):
    """Also: the server killed in the middle of a load is one line from the loader, the catalog shows
    nothing of that load, and after a restart the same load completes and collects what was staged."""
    runner, folder = CliRunner(), tmp_path / "server"
    local = {"NEO4J_URI": None, "NEO4J_PASSWORD": None}  # this test's server, whatever the session uses
    args = ["neo4j", "start", "--dir", str(folder), "--bolt-port", str(free_port()), "--http-port", str(free_port())]
    args += ["--heap", "512m", "--pagecache", "128m"]
    start, command_lines = command_lines_while(lambda: runner.invoke(cli, args))
    try:
        assert start.exit_code == 0, start.output
        password = (folder / "password").read_text().strip()
        assert any(b"set-initial-password" in line or b"@" in line for line in command_lines if b"java" in line)
        assert not [line for line in command_lines if password.encode() in line]
        assert folder.stat().st_mode & 0o777 == 0o700
        assert (folder / "data" / "dbms" / "auth.ini").stat().st_mode & 0o077 == 0
        assert not list((folder / "run").glob("*.args"))

        assert runner.invoke(cli, ["schema", "migrate", "--neo4j-dir", str(folder)], env=local).exit_code == 0
        artifact = write(Checkpoint("m", "1", 1, CHANNELS, EDGES, EFFECTS, SLICE_ATTRIBUTION), tmp_path)
        loading = subprocess.Popen(
            [sys.executable, SLOW_LOADER, "0.5", "load", str(artifact), "--neo4j-dir", str(folder)],
            env={k: v for k, v in os.environ.items() if not k.startswith("NEO4J_")},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        uri = f"bolt://127.0.0.1:{args[5]}"
        with neo4j.GraphDatabase.driver(uri, auth=("neo4j", password), notifications_min_severity="OFF") as driver:
            staged = "MATCH (:Checkpoint {status: 'staging'})-[:HAS_BLOCK]->(b) RETURN count(b) AS n"
            while driver.execute_query(staged).records[0]["n"] == 0 and loading.poll() is None:
                time.sleep(0.05)

        os.kill(int((folder / "run" / "neo4j.pid").read_text()), signal.SIGKILL)
        output, _ = loading.communicate(timeout=180)
        assert loading.returncode == 1 and output.strip().startswith("Error: Lost the connection to Neo4j"), output
        assert len(output.strip().splitlines()) == 1, output
        for _ in range(100):
            status = runner.invoke(cli, ["neo4j", "status", "--dir", str(folder)])
            if status.exit_code == 3:
                break
            time.sleep(0.1)
        assert status.exit_code == 3 and "not running" in status.output
        again = runner.invoke(cli, args)
        assert again.exit_code == 0, again.output
        assert "no longer running" in again.output and "Neo4j is running" in again.output

        with neo4j.GraphDatabase.driver(uri, auth=("neo4j", password), notifications_min_severity="OFF") as driver:
            assert driver.execute_query("MATCH (c:Checkpoint {status: 'complete'}) RETURN c").records == []
            load = runner.invoke(cli, ["load", str(artifact), "--neo4j-dir", str(folder)], env=local)
            assert load.exit_code == 0, load.output
            statuses = driver.execute_query("MATCH (c:Checkpoint) RETURN c.id AS id, c.status AS status").records
            assert [(r["id"], r["status"]) for r in statuses] == [("m@1", "complete")]
    finally:
        runner.invoke(cli, ["neo4j", "stop", "--dir", str(folder)])
