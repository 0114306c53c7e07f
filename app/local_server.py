"""A real Neo4j Community server on a machine without Docker, assembled from Maven Central.

Two pieces:

- :class:`Distribution`: the server's jars, resolved once by ``mvn`` from the project's pom
  (``neo4j-runtime-pom.xml``) into a cache folder shared by every server on the machine. A
  second install finds the marker file (which records the pom's digest) and downloads nothing.
- :class:`LocalServer`: one server home (``conf/ data/ logs/ plugins/ import/ run/``) in a
  folder of the user's choosing, started in the background with Neo4j's own launcher
  (``org.neo4j.server.startup.Neo4jCommand start``, what ``bin/neo4j start`` runs), listening on
  127.0.0.1 only, with auth on and a generated password kept in ``DIR/password`` (mode 0600).
  The folder is owner-only (mode 0700) and Neo4j runs with umask 077, so no other local user can
  read the store or ``data/dbms/auth.ini``. The initial password reaches ``neo4j-admin`` through
  an argument file (``@FILE``, owner-only, deleted right after), never on a command line, so it
  never shows in ``ps``. Every start brings ``plugins/`` in line with the distribution's plugin
  jars, and a pid file left by a server that was killed is noticed and removed.

Everything after the connection goes through the same driver code whatever runs the server.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from . import cache
from .errors import UserError
from .processes import process_is_gone

POM_RESOURCE = "neo4j-runtime-pom.xml"
LAUNCHER = "org.neo4j.server.startup.Neo4jCommand"
ADMIN = "org.neo4j.server.startup.Neo4jAdminCommand"
USER = "neo4j"
HOME_FOLDERS = ("conf", "data", "logs", "plugins", "import", "run")


def default_server_dir() -> Path:
    """Where a server keeps its data by default: ``$CIRCUIT_ATLAS_HOME/neo4j`` (``~/.circuit-atlas``)."""
    return Path(os.environ.get("CIRCUIT_ATLAS_HOME", Path.home() / ".circuit-atlas")) / "neo4j"


def pom_text() -> str:
    return resources.files("circuit_atlas").joinpath(POM_RESOURCE).read_text()


def pom_digest() -> str:
    return hashlib.sha256(pom_text().encode()).hexdigest()


def pinned_neo4j_version() -> str:
    """The Neo4j version the pom pins (the one source of truth for it)."""
    match = re.search(r"<neo4j\.version>([^<]+)</neo4j\.version>", pom_text())
    assert match, "neo4j-runtime-pom.xml lost its <neo4j.version> property"
    return match.group(1)


def _require_tool(name: str, why: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise UserError(
            f"`{name}` is not on PATH; it is needed {why}. Install it (Debian: "
            f"{'maven' if name == 'mvn' else 'openjdk-17-jre-headless'}) and retry."
        )
    return path


@dataclass(frozen=True)
class Distribution:
    """The jars of one Neo4j version: ``root/lib`` (server classpath) and ``root/plugins``."""

    root: Path

    @classmethod
    def in_cache(cls, cache_dir: Path | None = None) -> Distribution:
        return cls(Path(cache_dir or cache.cache_dir()) / f"neo4j-{pinned_neo4j_version()}")

    @property
    def lib(self) -> Path:
        return self.root / "lib"

    @property
    def plugins(self) -> Path:
        return self.root / "plugins"

    @property
    def marker(self) -> Path:
        return self.root / "installed.json"

    @property
    def version(self) -> str:
        return self.root.name.removeprefix("neo4j-")

    def is_installed(self) -> bool:
        """True when the jars were resolved from this very pom (an edited pom reinstalls)."""
        if not self.marker.is_file() or not any(self.lib.glob("neo4j-kernel-*.jar")):
            return False
        return json.loads(self.marker.read_text()).get("pom_sha256") == pom_digest()

    def classpath(self) -> str:
        return str(self.lib / "*")

    def install(self, echo: Callable[[str], None] = print) -> bool:
        """Resolve the jars with Maven unless already there. Returns True when it downloaded.

        Maven writes into ``*.partial`` folders that are renamed only when it succeeded, so an
        interrupted install is redone, never half-used.
        """
        if self.is_installed():
            echo(f"Neo4j {self.version} jars already in {self.root}; nothing to download.")
            return False
        mvn = _require_tool("mvn", "to download the Neo4j jars from Maven Central")
        self.root.mkdir(parents=True, exist_ok=True)
        build = self.root / "build"
        build.mkdir(exist_ok=True)
        (build / "pom.xml").write_text(pom_text())
        lib_partial, plugins_partial = self.root / "lib.partial", self.root / "plugins.partial"
        for folder in (lib_partial, plugins_partial):
            shutil.rmtree(folder, ignore_errors=True)
        echo(f"Resolving Neo4j {self.version} from Maven Central into {self.root} ...")
        result = subprocess.run(
            [
                mvn,
                "-B",
                "-q",
                "-f",
                str(build / "pom.xml"),
                "package",
                f"-Dlib.dir={lib_partial}",
                f"-Dplugins.dir={plugins_partial}",
            ],
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
            raise UserError(f"Maven could not resolve the Neo4j jars (is Maven Central reachable?):\n{tail}")
        for partial, final in ((lib_partial, self.lib), (plugins_partial, self.plugins)):
            shutil.rmtree(final, ignore_errors=True)
            partial.rename(final)
        jars = sorted(p.name for p in self.lib.glob("*.jar"))
        self.marker.write_text(
            json.dumps(
                {
                    "neo4j_version": self.version,
                    "pom_sha256": pom_digest(),
                    "jars": len(jars),
                    "plugins": sorted(p.name for p in self.plugins.glob("*.jar")),
                },
                indent=2,
            )
        )
        echo(f"Installed {len(jars)} jars.")
        return True


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


MEMORY_SIZE = re.compile(r"^[1-9]\d*[kmg]?$", re.IGNORECASE)


@dataclass(frozen=True)
class ServerSettings:
    """What a server home was started with; kept in ``DIR/server.json``."""

    bolt_port: int = 7687
    http_port: int = 7474
    heap: str = "1g"
    pagecache: str = "512m"

    def __post_init__(self) -> None:
        for name in ("bolt_port", "http_port"):
            port = getattr(self, name)
            if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
                raise UserError(f"--{name.replace('_', '-')} must be a port number from 1 to 65535; got {port!r}.")
        if self.bolt_port == self.http_port:
            raise UserError(f"--bolt-port and --http-port are both {self.bolt_port}; give two different ports.")
        for name in ("heap", "pagecache"):
            size = getattr(self, name)
            if not isinstance(size, str) or not MEMORY_SIZE.match(size):
                raise UserError(f"--{name} must be a memory size such as 512m or 2g; got {size!r}.")

    @property
    def bolt_uri(self) -> str:
        return f"bolt://127.0.0.1:{self.bolt_port}"

    @property
    def browser_url(self) -> str:
        return f"http://127.0.0.1:{self.http_port}/browser/"

    def neo4j_conf(self) -> str:
        """``neo4j.conf`` (Neo4j validates it strictly: only real setting names here)."""
        return "\n".join(
            [
                "# Written by circuit-atlas neo4j start; edits are overwritten on the next start.",
                "server.default_listen_address=127.0.0.1",
                "server.default_advertised_address=127.0.0.1",
                f"server.bolt.listen_address=:{self.bolt_port}",
                f"server.bolt.advertised_address=:{self.bolt_port}",
                f"server.http.listen_address=:{self.http_port}",
                f"server.http.advertised_address=:{self.http_port}",
                "server.https.enabled=false",
                "dbms.security.auth_enabled=true",
                f"server.memory.heap.initial_size={self.heap}",
                f"server.memory.heap.max_size={self.heap}",
                f"server.memory.pagecache.size={self.pagecache}",
                "dbms.security.procedures.unrestricted=apoc.*,gds.*",
                "",
            ]
        )


class LocalServer:
    """A Neo4j server home in ``directory``, run in the background by Neo4j's own launcher."""

    def __init__(self, directory: Path, distribution: Distribution):
        self.directory = Path(directory).expanduser().resolve()
        self.distribution = distribution

    @property
    def password_file(self) -> Path:
        return self.directory / "password"

    @property
    def settings_file(self) -> Path:
        return self.directory / "server.json"

    @property
    def pid_file(self) -> Path:
        return self.directory / "run" / "neo4j.pid"

    @property
    def log_file(self) -> Path:
        return self.directory / "logs" / "neo4j.log"

    def settings(self) -> ServerSettings | None:
        """The settings of the last start, or None for a folder that never held a server."""
        if not self.settings_file.is_file():
            return None
        return ServerSettings(**json.loads(self.settings_file.read_text()))

    def password(self) -> str | None:
        return self.password_file.read_text().strip() if self.password_file.is_file() else None

    def pid(self) -> int | None:
        """The server's process id if it is running, else None.

        The pid file alone is not proof: after a kill it names a dead process, a zombie, or by
        now another program. On Linux the process must be a live Neo4j of this very folder.
        """
        if not self.pid_file.is_file():
            return None
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (ValueError, ProcessLookupError, PermissionError, OverflowError):
            return None
        if process_is_gone(pid):
            return None
        cmdline = Path(f"/proc/{pid}/cmdline")
        if cmdline.parent.is_dir():
            try:
                arguments = cmdline.read_bytes().split(b"\0")
            except OSError:
                return None
            if f"--home-dir={self.directory}".encode() not in arguments:
                return None
        return pid

    def _remove_stale_pid_file(self, echo: Callable[[str], None]) -> None:
        if self.pid_file.is_file() and self.pid() is None:
            echo(f"Removing {self.pid_file}: the server it names is no longer running (killed?).")
            self.pid_file.unlink()

    def _env(self) -> dict[str, str]:
        env = dict(os.environ)
        env["NEO4J_HOME"] = str(self.directory)
        env["NEO4J_CONF"] = str(self.directory / "conf")
        return env

    def _java(self, main_class: str, *args: str, timeout: float = 300) -> subprocess.CompletedProcess:
        java = _require_tool("java", "to run the local Neo4j server (Java 17 or newer)")
        return subprocess.run(
            [java, "-cp", self.distribution.classpath(), main_class, *args],
            env=self._env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            umask=0o077,  # the store, logs and auth.ini it creates are owner-only
        )

    def _prepare_home(self, settings: ServerSettings) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        self.directory.chmod(0o700)
        for folder in HOME_FOLDERS:
            (self.directory / folder).mkdir(parents=True, exist_ok=True)
        (self.directory / "conf" / "neo4j.conf").write_text(settings.neo4j_conf())
        self._sync_plugins()
        self.settings_file.write_text(json.dumps(settings.__dict__, indent=2))

    def _sync_plugins(self) -> None:
        """Make ``plugins/`` hold the distribution's plugin jars, removing those an earlier
        distribution put there (two versions of one plugin stop Neo4j from starting); jars
        the user added are left alone."""
        plugins = self.directory / "plugins"
        record = plugins / "circuit-atlas-plugins.json"
        ours = set(json.loads(record.read_text())) if record.is_file() else set()
        wanted = {jar.name: jar for jar in self.distribution.plugins.glob("*.jar")}
        for name in ours - set(wanted):
            (plugins / name).unlink(missing_ok=True)
        for name, jar in wanted.items():
            if not (plugins / name).exists():
                shutil.copy2(jar, plugins / name)
        record.write_text(json.dumps(sorted(wanted), indent=2))

    def _owner_only_file(self, path: Path, text: str) -> None:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(text)

    def admin(self, *args: str, timeout: float = 3600) -> str:
        """Run ``neo4j-admin ARGS`` on this home; its output, or :class:`UserError` with its last lines.

        The arguments go in an owner-only argument file (picocli's ``@FILE``, which ``neo4j-admin``
        passes on unexpanded to the JVM it starts), so none of them is on a command line that ``ps``
        shows: the initial password is one of them.
        """
        arguments = self.directory / "run" / "neo4j-admin.args"
        self._owner_only_file(arguments, "".join(arg + "\n" for arg in args))
        try:
            result = self._java(ADMIN, f"@{arguments}", timeout=timeout)
        finally:
            arguments.unlink(missing_ok=True)
        output = (result.stdout + result.stderr).strip()
        if result.returncode != 0:
            tail = " ".join(output.splitlines()[-3:])
            raise UserError(f"neo4j-admin {' '.join(args[:2])} failed: {tail}")  # never the password
        return output

    def _set_initial_password(self) -> None:
        """Generate a password and set it before the very first start (Neo4j allows it only then)."""
        password = "-"
        while not password[0].isalnum():  # neo4j-admin would read a leading "-" as an option
            password = secrets.token_urlsafe(18)
        self.admin("dbms", "set-initial-password", password)
        self._owner_only_file(self.password_file, password + "\n")

    def prepare_for_admin(self) -> None:
        """Make the home ready for an offline ``neo4j-admin`` command, as a start would: its folders and
        configuration. A home that never ran gets its password at its first start."""
        self._prepare_home(self.settings() or ServerSettings())
        self._require_password_file()

    def _require_password_file(self) -> None:
        """:class:`UserError` if the home has run (it holds the system database) but lost its password file."""
        if self.password() is None and (self.directory / "data" / "databases" / "system").exists():
            raise UserError(
                f"{self.directory} holds a database but no password file; "
                f"restore {self.password_file} or use an empty folder."
            )

    def _ensure_password(self) -> None:
        self._require_password_file()
        if self.password() is None:
            self._set_initial_password()

    def start(
        self, settings: ServerSettings, timeout: float = 180, echo: Callable[[str], None] = print
    ) -> ServerSettings:
        """Start the server (or find it running) and wait until Bolt accepts the password."""
        if not self.distribution.is_installed():
            self.distribution.install(echo)
        self._remove_stale_pid_file(echo)
        running = self.pid()
        if running is not None:
            current = self.settings() or settings
            echo(f"Neo4j is already running in {self.directory} (pid {running}).")
            self.wait_for_bolt(current, timeout)
            return current
        for port in (settings.bolt_port, settings.http_port):
            if not _port_is_free(port):
                raise UserError(
                    f"Port {port} on 127.0.0.1 is in use (another Neo4j?). Stop that "
                    f"server or pick other ports with --bolt-port / --http-port."
                )
        self._prepare_home(settings)
        self._ensure_password()
        result = self._java(LAUNCHER, "start")
        if result.returncode != 0:
            raise UserError(f"Neo4j did not start: {result.stdout.strip()} {result.stderr.strip()}\n{self._log_tail()}")
        self.wait_for_bolt(settings, timeout)
        return settings

    def wait_for_bolt(self, settings: ServerSettings, timeout: float) -> None:
        """Block until a Bolt session with the stored password runs ``RETURN 1``."""
        import neo4j  # the driver is only needed once a server runs

        password = self.password()
        if password is None:
            raise UserError(f"{self.directory} holds no password file; restore {self.password_file}.")
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            if self.pid() is None and self.pid_file.exists():
                raise UserError(f"Neo4j stopped while starting.\n{self._log_tail()}")
            try:
                with neo4j.GraphDatabase.driver(settings.bolt_uri, auth=(USER, password)) as driver:
                    driver.verify_connectivity()
                return
            except (neo4j.exceptions.ServiceUnavailable, neo4j.exceptions.SessionExpired, OSError) as error:
                last_error = error
                time.sleep(0.5)
        raise UserError(
            f"Neo4j did not answer on {settings.bolt_uri} within {timeout:.0f} s ({last_error}).\n{self._log_tail()}"
        )

    def stop(self, timeout: float = 120) -> bool:
        """Shut the server down cleanly. Returns False when it was not running."""
        if self.pid() is None:
            return False
        result = self._java(LAUNCHER, "stop", timeout=timeout)
        if result.returncode != 0:
            raise UserError(f"Neo4j did not stop cleanly: {result.stdout.strip()} {result.stderr.strip()}")
        return True

    def _log_tail(self, lines: int = 20) -> str:
        if not self.log_file.is_file():
            return f"(no log at {self.log_file})"
        tail = self.log_file.read_text(errors="replace").splitlines()[-lines:]
        return f"Last lines of {self.log_file}:\n" + "\n".join(tail)
