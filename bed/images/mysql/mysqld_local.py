"""The program of the bed's stand-in for the MySQL image of manifests/platform (bed/images/mysql): Debian's
MariaDB server with the environment semantics of the MySQL images (official and Software Collections).

    run-mysqld [--port=3306] [--datadir=PATH] [--bind-address=IP]

- MYSQL_DATADIR (the volume's mountPath) or --datadir: initialised with mariadb-install-db when it holds no
  database yet;
- MYSQL_DATABASE, MYSQL_USER, MYSQL_PASSWORD: the database and a user owning it, reachable over TCP;
  MYSQL_ROOT_PASSWORD (optional) sets root's password. As in the Software Collections image, the
  passwords are (re)applied at every start, so the Secret stays the truth;
- listens on --bind-address (the image's run-mysqld passes 0.0.0.0: the pod's own network), port from --port;
- SIGTERM stops the server cleanly (the kubelet's graceful deletion).
Other mysqld options in the arguments are ignored (the image's CMD word `run-mysqld` included).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

DEFAULT_DATADIR = "/var/lib/mysql/data"


class SetupError(RuntimeError):
    """The environment or the host cannot run the server (one line for the pod log)."""


@dataclass(frozen=True)
class Settings:
    datadir: Path
    port: int
    bind_address: str
    database: str
    user: str
    password: str
    root_password: str | None

    @classmethod
    def parse(cls, argv: Sequence[str], env: Mapping[str, str]) -> Settings:
        parser = argparse.ArgumentParser(prog="mysqld_local")
        parser.add_argument("--port", type=int, default=3306)
        parser.add_argument("--datadir", default=None)
        parser.add_argument("--bind-address", default="127.0.0.1")
        args, _ignored = parser.parse_known_args([a for a in argv if a != "run-mysqld"])
        missing = [k for k in ("MYSQL_DATABASE", "MYSQL_USER", "MYSQL_PASSWORD") if not env.get(k)]
        if missing:
            raise SetupError(f"{', '.join(missing)} must be set (as for the MySQL image)")
        return cls(datadir=Path(args.datadir or env.get("MYSQL_DATADIR") or DEFAULT_DATADIR), port=args.port,
                   bind_address=args.bind_address, database=env["MYSQL_DATABASE"], user=env["MYSQL_USER"],
                   password=env["MYSQL_PASSWORD"], root_password=env.get("MYSQL_ROOT_PASSWORD") or None)


def _quote(value: str) -> str:
    """A SQL string literal (backslash and quote escaped)."""
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def _ident(value: str) -> str:
    return "`" + value.replace("`", "``") + "`"


def init_sql(s: Settings) -> str:
    """Statements run at every start (--init-file): idempotent, like the images' environment handling."""
    user, pw, db = _quote(s.user), _quote(s.password), _ident(s.database)
    lines = [
        "DROP USER IF EXISTS ''@'localhost';",
        f"CREATE DATABASE IF NOT EXISTS {db} CHARACTER SET utf8mb4;",
    ]
    for host in ("%", "localhost"):
        lines += [f"CREATE USER IF NOT EXISTS {user}@'{host}' IDENTIFIED BY {pw};",
                  f"ALTER USER {user}@'{host}' IDENTIFIED BY {pw};",
                  f"GRANT ALL PRIVILEGES ON {db}.* TO {user}@'{host}';"]
    # mariadb-install-db leaves root@127.0.0.1 and root@::1 with an empty password: they get root's
    # password, or go (no TCP root without a password; the socket sits in a private folder).
    loopback = ("127.0.0.1", "::1")
    if s.root_password:
        # As the images do: a root password also opens root to remote logins.
        root_pw = _quote(s.root_password)
        lines += [f"ALTER USER IF EXISTS 'root'@'{h}' IDENTIFIED BY {root_pw};" for h in ("localhost", *loopback)]
        lines += [f"CREATE USER IF NOT EXISTS 'root'@'%' IDENTIFIED BY {root_pw};",
                  f"ALTER USER 'root'@'%' IDENTIFIED BY {root_pw};",
                  "GRANT ALL PRIVILEGES ON *.* TO 'root'@'%' WITH GRANT OPTION;"]
    else:
        lines += [f"DROP USER IF EXISTS 'root'@'{h}';" for h in ("%", *loopback)]
    lines.append("FLUSH PRIVILEGES;")
    return "\n".join(lines) + "\n"


def _binary(*names: str) -> str:
    for name in names:
        found = shutil.which(name) or next((p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}")
                                            if os.access(p, os.X_OK)), None)
        if found:
            return found
    raise SetupError(f"none of {', '.join(names)} found: apt-get install -y mariadb-server")


def _user_args() -> list[str]:
    # mariadbd refuses to run as root unless told to (a pod without runAsUser, the image's USER overridden).
    return ["--user=root"] if os.geteuid() == 0 else []


def initialise(datadir: Path) -> bool:
    """mariadb-install-db into an empty datadir; False when it already holds a database."""
    if (datadir / "mysql").is_dir():
        return False
    datadir.mkdir(parents=True, exist_ok=True)
    cmd = [_binary("mariadb-install-db", "mysql_install_db"), "--no-defaults", f"--datadir={datadir}",
           "--auth-root-authentication-method=normal", "--skip-test-db", *_user_args()]
    done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise SetupError(f"mariadb-install-db failed ({done.returncode}): {done.stderr.strip()[-500:]}")
    return True


def server_argv(s: Settings, run_dir: Path, init_file: Path) -> list[str]:
    return [_binary("mariadbd", "mysqld"), "--no-defaults", f"--datadir={s.datadir}", f"--port={s.port}",
            f"--bind-address={s.bind_address}", f"--socket={run_dir / 'mysqld.sock'}",
            f"--pid-file={run_dir / 'mysqld.pid'}", f"--init-file={init_file}", "--skip-name-resolve",
            "--innodb-buffer-pool-size=32M", "--character-set-server=utf8mb4", *_user_args()]


def main(argv: Sequence[str] | None = None) -> int:
    try:
        settings = Settings.parse(sys.argv[1:] if argv is None else argv, os.environ)
        fresh = initialise(settings.datadir)
    except SetupError as err:
        print(f"mysqld_local: error: {err}", file=sys.stderr, flush=True)
        return 1
    print(f"mysqld_local: datadir {settings.datadir} ({'initialised' if fresh else 'existing'}), "
          f"127.0.0.1:{settings.port}, database {settings.database}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mysqld-") as run:
        run_dir = Path(run)  # 0700: the init file holds the passwords
        init_file = run_dir / "init.sql"
        init_file.write_text(init_sql(settings))
        init_file.chmod(0o600)
        server = subprocess.Popen(server_argv(settings, run_dir, init_file))

        def forward(signum: int, _frame: object) -> None:
            server.send_signal(signum)

        signal.signal(signal.SIGTERM, forward)
        signal.signal(signal.SIGINT, forward)
        # The init file stays (private folder) until the server exits: mariadbd reads it after it has
        # opened its port, and again on its own restarts; the folder goes when the server does.
        return server.wait()


if __name__ == "__main__":
    sys.exit(main())
