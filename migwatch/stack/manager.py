"""Install, start, check and stop the local stack.

Every component is installed on demand from a package registry (Debian packages, Maven Central,
the Go module proxy), started on 127.0.0.1 with its data, log and pid file under the state folder,
and declared up only after a real round trip. Downloads are cached outside any checkout
(`MIGWATCH_CACHE_DIR`), so a fresh clone on the same machine starts fast. `down` stops only what
`up` started, by pid file.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import requests

from migwatch.config import StackSettings
from migwatch.errors import StackError
from migwatch.stack import templates

COMPONENTS = (
    "postgres-source",
    "postgres-target",
    "kafka",
    "kafka-connect",
    "ferretdb",
    "prometheus",
    "pushgateway",
    "alertmanager",
    "prefect-server",
)

PG_BIN = Path("/usr/lib/postgresql/15/bin")
# FerretDB's embeddable server in a thin wrapper module (go.mod pins the FerretDB version)
FERRETDB_WRAPPER = Path(__file__).parent / "ferretdb"
DEBIAN_PACKAGES = {
    "postgres": ("postgresql-15", PG_BIN / "postgres"),
    "prometheus": ("prometheus", Path("/usr/bin/prometheus")),
    "pushgateway": ("prometheus-pushgateway", Path("/usr/bin/prometheus-pushgateway")),
    "alertmanager": ("prometheus-alertmanager", Path("/usr/bin/prometheus-alertmanager")),
}


@dataclass(frozen=True)
class ComponentStatus:
    name: str
    address: str
    healthy: bool
    pid: int | None
    detail: str = ""


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
        return state != "Z"
    except OSError:
        return False



def new_kafka_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as Kafka writes them (it may begin
    with `-`, so it is only ever passed as `--cluster-id=<id>`)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")

class Stack:
    """The local stack described by `settings`; every method is safe to call twice."""

    def __init__(self, settings: StackSettings | None = None, echo: Callable[[str], None] = print):
        self.s = settings or StackSettings()
        self.echo = echo
        self.state = self.s.state_dir
        self.cache = self.s.cache_dir
        self.logs = self.state / "logs"
        self.pids = self.state / "pids"

    # ------------------------------------------------------------------ addresses
    def address(self, name: str) -> str:
        s = self.s
        return {
            "postgres-source": f"postgresql://{s.host}:{s.pg_source_port}",
            "postgres-target": f"postgresql://{s.host}:{s.pg_target_port}",
            "kafka": f"{s.host}:{s.kafka_port}",
            "kafka-connect": s.url(s.connect_port),
            "ferretdb": f"mongodb://{s.host}:{s.ferretdb_port}",
            "prometheus": s.url(s.prometheus_port),
            "pushgateway": s.url(s.pushgateway_port),
            "alertmanager": s.url(s.alertmanager_port),
            "prefect-server": s.url(s.prefect_port) + "/api",
        }[name]

    def pg_dsn(self, which: str, database: str = "migwatch") -> str:
        """DSN of the stack's source or target cluster — holds the password: never log it."""
        port = self.s.pg_source_port if which == "source" else self.s.pg_target_port
        pw = self.s.pg_password.get_secret_value()
        return (
            f"host={self.s.host} port={port} user={self.s.pg_user} password={pw} "
            f"dbname={database} connect_timeout=5"
        )

    # ------------------------------------------------------------------ public API
    def up(self, components: tuple[str, ...] = COMPONENTS) -> list[ComponentStatus]:
        """Install and start what is not running, then prove each with a round trip."""
        for d in (self.state, self.logs, self.pids, self.s.file_sd_dir, self.cache):
            d.mkdir(parents=True, exist_ok=True)
        os.chmod(self.state, 0o755)
        self._install(components)
        order = [c for c in COMPONENTS if c in components]
        for name in order:
            if self._healthy(name, deep=False):
                self.echo(f"{name}: already running")
                continue
            self.echo(f"{name}: starting")
            getattr(self, "_start_" + name.replace("-", "_"))()
            if name == "kafka":  # Connect needs the broker before it starts
                self._wait(name)
        for name in order:
            self._wait(name)
            self.echo(f"{name}: round trip ok ({self.address(name)})")
        return self.status(components)

    def status(self, components: tuple[str, ...] = COMPONENTS) -> list[ComponentStatus]:
        out = []
        for name in components:
            pid = self._pid(name)
            try:
                healthy = self._healthy(name, deep=False)
                detail = ""
            except Exception as exc:  # status must never crash on a half-started stack
                healthy, detail = False, str(exc)[:200]
            out.append(ComponentStatus(name, self.address(name), healthy, pid, detail))
        return out

    def down(self, components: tuple[str, ...] = COMPONENTS) -> list[str]:
        """Stop the processes `up` started (by pid file), in reverse order; return their names."""
        stopped = []
        for name in reversed([c for c in COMPONENTS if c in components]):
            if name.startswith("postgres-"):
                data = self._pg_data(name)
                if (data / "postmaster.pid").exists():
                    self._run_as_pg([str(PG_BIN / "pg_ctl"), "-D", str(data), "-m", "fast",
                                     "-w", "-t", "60", "stop"], check=False)
                    stopped.append(name)
                continue
            pid = self._pid(name)
            if pid is None:
                continue
            self._terminate(pid)
            (self.pids / f"{name}.pid").unlink(missing_ok=True)
            stopped.append(name)
        return stopped

    # ------------------------------------------------------------------ install
    def _install(self, components: tuple[str, ...]) -> None:
        need = set()
        if any(c.startswith("postgres-") for c in components):
            need.add("postgres")
        need |= {c for c in ("prometheus", "pushgateway", "alertmanager") if c in components}
        missing = [DEBIAN_PACKAGES[k][0] for k in sorted(need)
                   if not DEBIAN_PACKAGES[k][1].exists()]
        if missing:
            self._apt_install(missing)
        if "kafka" in components or "kafka-connect" in components:
            self._install_kafka()
        if "kafka-connect" in components:
            self._install_debezium()
        if "ferretdb" in components:
            self._install_ferretdb()

    def ensure_debian_packages(self, wanted: dict[str, Path]) -> None:
        """apt-get install each package whose marker file is missing (e.g. chromium for tests)."""
        missing = [pkg for pkg, marker in wanted.items() if not marker.exists()]
        if missing:
            self.logs.mkdir(parents=True, exist_ok=True)
            self._apt_install(missing)

    def _apt_install(self, packages: list[str]) -> None:
        if os.geteuid() != 0:
            raise StackError("debian-packages", f"missing {packages}; install them with apt-get "
                             "(needs root), then run `migwatch stack up` again")
        self.echo(f"installing Debian packages {packages}")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        log = self.logs / "apt.log"
        with log.open("ab") as fh:
            subprocess.run(["apt-get", "update", "-qq"], stdout=fh, stderr=fh, env=env, check=False)
            cmd = ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *packages]
            if subprocess.run(cmd, stdout=fh, stderr=fh, env=env).returncode != 0:
                raise StackError("debian-packages", "apt-get install failed", " ".join(cmd),
                                 _tail(log))
        # Debian may start its own services on the default ports: stop them, we run our own.
        for svc in ("prometheus", "prometheus-pushgateway", "prometheus-alertmanager",
                    "prometheus-node-exporter"):
            subprocess.run(["service", svc, "stop"], capture_output=True, check=False)

    @property
    def kafka_lib(self) -> Path:
        return self.cache / f"kafka-{self.s.kafka_version}" / "lib"

    @property
    def plugin_dir(self) -> Path:
        return self.cache / f"debezium-{self.s.debezium_version}" / "plugins"

    @property
    def ferretdb_bin(self) -> Path:
        return self.cache / f"ferretdb-{self.s.ferretdb_version}" / "ferretdb-local"

    def _install_kafka(self) -> None:
        lib = self.kafka_lib
        if (lib / ".complete").exists():
            return
        self.echo(f"downloading Kafka {self.s.kafka_version} jars from Maven Central")
        work = lib.parent / "pom"
        work.mkdir(parents=True, exist_ok=True)
        (work / "pom.xml").write_text(templates.KAFKA_POM.format(
            kafka=self.s.kafka_version, log4j=self.s.log4j_version))
        cmd = ["mvn", "-q", "-B", "-f", str(work / "pom.xml"), "dependency:copy-dependencies",
               "-DincludeScope=runtime", f"-DoutputDirectory={lib}"]
        self._run_logged("kafka", cmd, "install-kafka.log")
        # slf4j 1.x next to 2.x would hide the log4j binding: keep only 2.x
        for jar in lib.glob("slf4j-api-1.*.jar"):
            jar.unlink()
        (lib / ".complete").touch()

    def _install_debezium(self) -> None:
        v = self.s.debezium_version
        self.install_connect_plugin(f"io.debezium:debezium-connector-postgres:{v}",
                                    self.plugin_dir, "install-debezium.log")

    def install_connect_plugin(self, coordinates: str, plugins: Path,
                               log_name: str = "install-plugin.log") -> Path:
        """Unpack the `tar.gz:plugin` archive of Maven `group:artifact:version` into `plugins`
        (a Kafka Connect `plugin.path`), once: a finished install leaves a `.complete` marker."""
        if (plugins / ".complete").exists():
            return plugins
        self.echo(f"downloading the Kafka Connect plugin {coordinates} from Maven Central")
        dl = plugins.parent / "download"
        dl.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        cmd = ["mvn", "-q", "-B", "dependency:copy", f"-Dartifact={coordinates}:tar.gz:plugin",
               f"-DoutputDirectory={dl}"]
        self._run_logged("kafka-connect", cmd, log_name, cwd=dl)
        artifact = coordinates.split(":")[1]
        archive = next(dl.glob(f"{artifact}-*.tar.gz"))
        plugins.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive) as tar:
            tar.extractall(plugins, filter="data")
        (plugins / ".complete").touch()
        return plugins

    def _install_ferretdb(self) -> None:
        binary = self.ferretdb_bin
        if binary.exists():
            return
        go = shutil.which("go") or "/usr/local/go/bin/go"
        self.echo(f"building FerretDB {self.s.ferretdb_version} from the Go module proxy")
        binary.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "CGO_ENABLED": "0"}
        cmd = [go, "build", "-o", str(binary), "."]
        self._run_logged("ferretdb", cmd, "install-ferretdb.log", cwd=FERRETDB_WRAPPER, env=env)

    def _run_logged(self, component: str, cmd: list[str], log_name: str,
                    cwd: Path | None = None, env: dict[str, str] | None = None) -> None:
        log = self.logs / log_name
        with log.open("wb") as fh:
            try:
                rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, cwd=cwd,
                                    env=env).returncode
            except FileNotFoundError as exc:
                raise StackError(component, f"{cmd[0]} is not installed", " ".join(cmd)) from exc
        if rc != 0:
            raise StackError(component, f"install step exited {rc}", " ".join(cmd), _tail(log))

    # ------------------------------------------------------------------ processes
    def _pid(self, name: str) -> int | None:
        if name.startswith("postgres-"):
            f = self._pg_data(name) / "postmaster.pid"
        else:
            f = self.pids / f"{name}.pid"
        try:
            pid = int(f.read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None
        return pid if _pid_alive(pid) else None

    def _spawn(self, name: str, cmd: list[str], env: dict[str, str] | None = None,
               cwd: Path | None = None) -> None:
        log = self.logs / f"{name}.log"
        fh = log.open("ab")
        try:
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL,
                                    env={**os.environ, **(env or {})}, cwd=cwd,
                                    start_new_session=True)
        except FileNotFoundError as exc:
            raise StackError(name, f"{cmd[0]} not found", " ".join(cmd)) from exc
        finally:
            fh.close()
        (self.pids / f"{name}.pid").write_text(str(proc.pid))
        self._cmds = getattr(self, "_cmds", {})
        self._cmds[name] = " ".join(cmd)

    def _terminate(self, pid: int, timeout: float = 30) -> None:
        try:
            os.killpg(pid, signal.SIGTERM)
        except (ProcessLookupError, PermissionError):
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and _pid_alive(pid):
            time.sleep(0.2)
        if _pid_alive(pid):
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)

    def _wait(self, name: str, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if not name.startswith("postgres-") and self._pid(name) is None:
                break  # died: no point waiting
            try:
                if self._healthy(name, deep=True):
                    return
            except Exception as exc:
                last = exc
            time.sleep(1)
        cmd = getattr(self, "_cmds", {}).get(name, "")
        why = "process exited" if self._pid(name) is None else f"not healthy after {timeout:.0f}s"
        if last is not None:
            why += f" (last check: {str(last)[:300]})"
        raise StackError(name, why, cmd, _tail(self.logs / f"{name}.log"))

    # ------------------------------------------------------------------ PostgreSQL
    def _pg_data(self, name: str) -> Path:
        return self.state / "pg" / name.removeprefix("postgres-")

    def _run_as_pg(self, cmd: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
        if os.geteuid() == 0:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        res = subprocess.run(cmd, capture_output=True, text=True)
        if check and res.returncode != 0:
            raise StackError("postgres", f"exited {res.returncode}", " ".join(cmd),
                             (res.stdout + res.stderr)[-3000:])
        return res

    def _start_postgres_source(self) -> None:
        self._start_pg("postgres-source", self.s.pg_source_port, logical=True)

    def _start_postgres_target(self) -> None:
        self._start_pg("postgres-target", self.s.pg_target_port, logical=False)

    def _start_pg(self, name: str, port: int, logical: bool) -> None:
        data = self._pg_data(name)
        sock = self.state / "pg" / "sockets"
        sock.mkdir(parents=True, exist_ok=True)
        log = self.logs / f"{name}.log"
        log.touch()
        if os.geteuid() == 0:
            shutil.chown(sock, "postgres")
            shutil.chown(log, "postgres")
            (self.state / "pg").chmod(0o755)
        fresh = not (data / "PG_VERSION").exists()
        if fresh:
            data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres")
            data.chmod(0o700)
            self._run_as_pg([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                             "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8",
                             "--locale=C.UTF-8"])
            conf = [
                f"listen_addresses = '{self.s.host}'",
                f"port = {port}",
                f"unix_socket_directories = '{sock}'",
                "max_connections = 300",
                "shared_buffers = 128MB",
                f"max_replication_slots = {self.s.pg_max_slots}",
                f"max_wal_senders = {self.s.pg_max_slots}",
                f"wal_level = {'logical' if logical else 'replica'}",
                "max_slot_wal_keep_size = 4GB",
                "timezone = 'UTC'",
            ]
            with (data / "postgresql.conf").open("a") as fh:
                fh.write("\n# migwatch local stack\n" + "\n".join(conf) + "\n")
            (data / "pg_hba.conf").write_text(
                "local all all trust\n"
                "host all all 127.0.0.1/32 scram-sha-256\n"
                "host replication all 127.0.0.1/32 scram-sha-256\n"
            )
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]
        res = self._run_as_pg(cmd, check=False)
        if res.returncode != 0:
            raise StackError(name, "pg_ctl start failed", " ".join(cmd), _tail(log))
        self._pg_bootstrap(name, port, sock)

    def _pg_bootstrap(self, name: str, port: int, sock: Path) -> None:
        import psycopg
        from psycopg import sql

        user, pw = self.s.pg_user, self.s.pg_password.get_secret_value()
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres",
                             autocommit=True) as conn:
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN SUPERUSER REPLICATION PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(user), sql.Literal(pw)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'migwatch'").fetchone():
                conn.execute(sql.SQL("CREATE DATABASE migwatch OWNER {}").format(
                    sql.Identifier(user)))

    def _pg_check(self, which: str) -> bool:
        import psycopg

        with psycopg.connect(self.pg_dsn(which)) as conn:
            row = conn.execute("SELECT current_setting('wal_level'), 1 + 1").fetchone()
        if row is None:
            return False
        if which == "source" and row[0] != "logical":
            raise StackError("postgres-source", f"wal_level is {row[0]}, expected logical")
        return row[1] == 2

    # ------------------------------------------------------------------ Kafka and Connect
    def _java(self, heap: str, log4j: Path) -> list[str]:
        java = shutil.which("java") or "java"
        return [java, f"-Xms{heap}", f"-Xmx{heap}", "-XX:+UseSerialGC",
                "-XX:TieredStopAtLevel=1", "-Djava.awt.headless=true",
                f"-Dlog4j2.configurationFile={log4j}", "-cp", f"{self.kafka_lib}/*"]

    def _start_kafka(self) -> None:
        home = self.state / "kafka"
        data = home / "data"
        home.mkdir(parents=True, exist_ok=True)
        log4j = home / "log4j2.properties"
        log4j.write_text(templates.LOG4J2)
        props = home / "server.properties"
        props.write_text(templates.kafka_server_properties(self.s, data))
        if not (data / "meta.properties").exists():
            self.format_kafka_storage(props, log4j, new_kafka_cluster_id())
        self._spawn("kafka", [*self._java(self.s.kafka_heap, log4j), "kafka.Kafka", str(props)])

    def format_kafka_storage(self, props: Path, log4j: Path, cluster_id: str) -> None:
        """Format the KRaft log directories of `props` for a new single-node cluster.

        Every value goes in `--name=value` form: a generated id may begin with `-` (URL-safe
        base64), and a separate argument starting with `-` is read as an option."""
        cmd = [*self._java("256m", log4j), "kafka.tools.StorageTool", "format",
               "--standalone", f"--cluster-id={cluster_id}", f"--config={props}"]
        self._run_logged("kafka", cmd, "kafka-format.log")

    def _start_kafka_connect(self) -> None:
        home = self.state / "connect"
        home.mkdir(parents=True, exist_ok=True)
        log4j = home / "log4j2.properties"
        log4j.write_text(templates.LOG4J2)
        props = home / "worker.properties"
        props.write_text(templates.connect_worker_properties(self.s, self.plugin_dir))
        self._spawn("kafka-connect", [*self._java(self.s.connect_heap, log4j),
                                      "org.apache.kafka.connect.cli.ConnectDistributed",
                                      str(props)])

    def _kafka_check(self, deep: bool) -> bool:
        from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

        boot = self.address("kafka")
        if not deep:
            admin = KafkaAdminClient(bootstrap_servers=boot, request_timeout_ms=3000)
            admin.close()
            return True
        topic = "migwatch-stack-check"
        token = uuid.uuid4().hex.encode()
        producer = KafkaProducer(bootstrap_servers=boot)
        try:
            producer.send(topic, token).get(timeout=20)
        finally:
            producer.close()
        consumer = KafkaConsumer(topic, bootstrap_servers=boot, auto_offset_reset="earliest",
                                 enable_auto_commit=False, consumer_timeout_ms=15000,
                                 group_id=None)
        try:
            return any(msg.value == token for msg in consumer)
        finally:
            consumer.close()

    def _connect_check(self) -> bool:
        r = requests.get(self.address("kafka-connect") + "/connector-plugins", timeout=5)
        r.raise_for_status()
        classes = {p.get("class") for p in r.json()}
        if "io.debezium.connector.postgresql.PostgresConnector" not in classes:
            raise StackError("kafka-connect", "Debezium PostgreSQL plugin not loaded",
                             log_tail=_tail(self.logs / "kafka-connect.log"))
        return True

    # ------------------------------------------------------------------ FerretDB
    def _start_ferretdb(self) -> None:
        data = self.state / "ferretdb" / "data"
        data.mkdir(parents=True, exist_ok=True)
        s = self.s
        self._spawn("ferretdb", [
            str(self.ferretdb_bin), f"--listen-addr={s.host}:{s.ferretdb_port}",
            f"--sqlite-url=file:{data}/",
        ])

    def _ferretdb_check(self, deep: bool) -> bool:
        from pymongo import MongoClient

        client: MongoClient = MongoClient(self.address("ferretdb"), serverSelectionTimeoutMS=3000)
        try:
            client.admin.command("ping")
            if deep:
                coll = client["migwatch"]["stack_check"]
                token = uuid.uuid4().hex
                coll.insert_one({"_id": token})
                ok = coll.find_one({"_id": token}) is not None
                coll.delete_one({"_id": token})
                return ok
            return True
        finally:
            client.close()

    # ------------------------------------------------------------------ Prometheus family
    def _start_prometheus(self) -> None:
        home = self.state / "prometheus"
        (home / "rules").mkdir(parents=True, exist_ok=True)
        self.s.file_sd_dir.mkdir(parents=True, exist_ok=True)
        cfg = home / "prometheus.yml"
        cfg.write_text(templates.prometheus_config(self.s))
        self._spawn("prometheus", [
            "/usr/bin/prometheus", f"--config.file={cfg}", f"--storage.tsdb.path={home / 'data'}",
            f"--web.listen-address={self.s.host}:{self.s.prometheus_port}",
            "--web.enable-lifecycle", "--storage.tsdb.retention.time=7d",
            # an alert whose send was lost (see reload) goes out again within seconds, not 1m
            "--rules.alert.resend-delay=10s",
        ])

    def _start_pushgateway(self) -> None:
        self._spawn("pushgateway", [
            "/usr/bin/prometheus-pushgateway",
            f"--web.listen-address={self.s.host}:{self.s.pushgateway_port}",
        ])

    def _start_alertmanager(self) -> None:
        home = self.state / "alertmanager"
        home.mkdir(parents=True, exist_ok=True)
        cfg = home / "alertmanager.yml"
        if not cfg.exists():
            cfg.write_text(templates.alertmanager_config(None))
        self._spawn("alertmanager", [
            "/usr/bin/prometheus-alertmanager", f"--config.file={cfg}",
            f"--storage.path={home / 'data'}",
            f"--web.listen-address={self.s.host}:{self.s.alertmanager_port}",
            "--cluster.listen-address=",
        ])

    def reload(self, name: str, settle_seconds: float = 20) -> None:
        """Ask Prometheus or Alertmanager to re-read its configuration (rules, receivers).

        A reloaded Prometheus forgets its Alertmanager until service discovery hands it back
        (about 5 s) and silently drops alerts that fire meanwhile; so a Prometheus reload returns
        only once its Alertmanager is listed again — rules just installed can then alert at once.
        """
        port = self.s.prometheus_port if name == "prometheus" else self.s.alertmanager_port
        base = self.s.url(port)
        requests.post(base + "/-/reload", timeout=10).raise_for_status()
        if name != "prometheus":
            return
        deadline = time.monotonic() + settle_seconds
        while time.monotonic() < deadline:
            listed = requests.get(base + "/api/v1/alertmanagers", timeout=10)
            listed.raise_for_status()
            if listed.json()["data"]["activeAlertmanagers"]:
                return
            time.sleep(0.25)
        raise StackError(
            "prometheus", f"no Alertmanager listed {settle_seconds:.0f}s after reloading",
            "POST /-/reload", _tail(self.logs / "prometheus.log"),
        )  # fmt: skip

    # ------------------------------------------------------------------ Prefect
    def prefect_env(self) -> dict[str, str]:
        return {
            "PREFECT_HOME": str(self.state / "prefect"),
            "PREFECT_API_URL": self.address("prefect-server"),
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "PREFECT_SERVER_API_HOST": self.s.host,
            "PREFECT_SERVER_API_PORT": str(self.s.prefect_port),
            "PREFECT_UI_API_URL": self.address("prefect-server"),
        }

    def _start_prefect_server(self) -> None:
        prefect = Path(sys.executable).parent / "prefect"
        env = self.prefect_env()
        env.pop("PREFECT_API_URL")
        self._spawn("prefect-server", [str(prefect), "server", "start", "--host", self.s.host,
                                       "--port", str(self.s.prefect_port)], env=env)

    # ------------------------------------------------------------------ health
    def _healthy(self, name: str, deep: bool) -> bool:
        if self._pid(name) is None:
            return False
        s = self.s
        if name == "postgres-source":
            return self._pg_check("source")
        if name == "postgres-target":
            return self._pg_check("target")
        if name == "kafka":
            return self._kafka_check(deep)
        if name == "kafka-connect":
            return self._connect_check()
        if name == "ferretdb":
            return self._ferretdb_check(deep)
        port = {"prometheus": s.prometheus_port, "pushgateway": s.pushgateway_port,
                "alertmanager": s.alertmanager_port, "prefect-server": s.prefect_port}[name]
        path = "/api/health" if name == "prefect-server" else "/-/ready"
        r = requests.get(s.url(port) + path, timeout=3)
        return r.status_code == 200
