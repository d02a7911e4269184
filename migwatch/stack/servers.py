"""Starting each server of the stack on 127.0.0.1: its configuration, data folder and command
line (PostgreSQL ×2, Kafka, Connect, FerretDB, Prometheus, Pushgateway, Alertmanager, Prefect).

One place per server's start-up details, apart from installing and health checks, so changing a
server's flags or configuration touches this module only.
"""

from __future__ import annotations

import base64
import os
import shutil
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import requests

from migwatch.errors import StackError
from migwatch.stack import templates
from migwatch.stack.base import PG_BIN, _tail
from migwatch.stack.install import Installers


def new_kafka_cluster_id() -> str:
    """A random KRaft cluster id: a UUID in URL-safe base64, as Kafka writes them (it may begin
    with `-`, so it is only ever passed as `--cluster-id=<id>`)."""
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")


#: who may connect how: a scram password on every connection type — the socket too (whose
#: folder only the clusters' owner may enter), TCP on the loopback only
PG_HBA = ("local all all scram-sha-256\n"
          "host all all 127.0.0.1/32 scram-sha-256\n"
          "host replication all 127.0.0.1/32 scram-sha-256\n")


class Servers(Installers):
    """`_start_<component>` for every component `Stack.up` starts, and what configures them."""

    # ------------------------------------------------------------------ PostgreSQL
    def _start_postgres_source(self) -> None:
        self._start_pg("postgres-source", self.s.pg_source_port, logical=True)

    def _start_postgres_target(self) -> None:
        self._start_pg("postgres-target", self.s.pg_target_port, logical=False)

    def _start_pg(self, name: str, port: int, logical: bool) -> None:
        data = self._pg_data(name)
        sock = self.state / "pg" / "sockets"
        sock.mkdir(parents=True, exist_ok=True)
        sock.chmod(0o700)  # the clusters' owner only: other local users connect over TCP
        log = self.logs / f"{name}.log"
        log.touch()
        if os.geteuid() == 0:
            shutil.chown(sock, "postgres")
            shutil.chown(log, "postgres")
            (self.state / "pg").chmod(0o755)
            self._check_reachable_by_pg(self.state / "pg")
        fresh = not (data / "PG_VERSION").exists()
        if fresh:
            data.mkdir(parents=True, exist_ok=True)
            if os.geteuid() == 0:
                shutil.chown(data, "postgres")
            data.chmod(0o700)
            self._initdb(data)
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
            (data / "pg_hba.conf").write_text(PG_HBA)
        cmd = [str(PG_BIN / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"]
        res = self._run_as_pg(cmd, check=False)
        if res.returncode != 0:
            raise StackError(name, "pg_ctl start failed", " ".join(cmd), _tail(log))
        self._pg_bootstrap(name, port, sock)

    def _initdb(self, data: Path) -> None:
        """A new cluster whose superuser has the stack's password from the start (given in a
        file only the cluster's owner reads, never on a command line)."""
        pwfile = data.parent / f".{data.name}.pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            out.write(self.s.pg_password.get_secret_value() + "\n")
        try:
            if os.geteuid() == 0:
                shutil.chown(pwfile, "postgres")
            self._run_as_pg([str(PG_BIN / "initdb"), "-D", str(data), "-U", "postgres",
                             f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                             "--locale=C.UTF-8"])
        finally:
            pwfile.unlink(missing_ok=True)

    def _require_passwords(self, conn: Any, name: str, pw: str) -> None:
        """Every connection type asks for a password (scram): a cluster made by an older stack
        that trusted its socket gets a superuser password and the current pg_hba.conf."""
        from psycopg import sql

        hba = self._pg_data(name) / "pg_hba.conf"
        if hba.read_text() != PG_HBA:
            conn.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(pw)))
            hba.write_text(PG_HBA)
            conn.execute("SELECT pg_reload_conf()")

    def _pg_bootstrap(self, name: str, port: int, sock: Path) -> None:
        import psycopg
        from psycopg import sql

        user, pw = self.s.pg_user, self.s.pg_password.get_secret_value()
        with psycopg.connect(host=str(sock), port=port, user="postgres", dbname="postgres",
                             password=pw, autocommit=True) as conn:
            self._require_passwords(conn, name, pw)
            exists = conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [user]).fetchone()
            verb = "ALTER" if exists else "CREATE"
            conn.execute(sql.SQL("{} ROLE {} LOGIN SUPERUSER REPLICATION PASSWORD {}").format(
                sql.SQL(verb), sql.Identifier(user), sql.Literal(pw)))
            if not conn.execute("SELECT 1 FROM pg_database WHERE datname = 'migwatch'").fetchone():
                conn.execute(sql.SQL("CREATE DATABASE migwatch OWNER {}").format(
                    sql.Identifier(user)))

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
        self.s.connect_secrets_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(self.s.connect_secrets_dir, 0o700)  # connector passwords: the owner only
        props = home / "worker.properties"
        props.write_text(templates.connect_worker_properties(self.s, self.plugin_dir))
        self._spawn("kafka-connect", [*self._java(self.s.connect_heap, log4j),
                                      "org.apache.kafka.connect.cli.ConnectDistributed",
                                      str(props)])

    # ------------------------------------------------------------------ FerretDB
    def _start_ferretdb(self) -> None:
        data = self.state / "ferretdb" / "data"
        data.mkdir(parents=True, exist_ok=True)
        s = self.s
        self._spawn("ferretdb", [
            str(self.ferretdb_bin), f"--listen-addr={s.host}:{s.ferretdb_port}",
            f"--sqlite-url=file:{data}/",
        ])

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
