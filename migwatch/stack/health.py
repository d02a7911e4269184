"""Health checks: a component counts as up only after a real round trip (a query, a produced and
consumed message, a loaded Debezium plugin, a document written and read back, a ready endpoint).

Kept apart from starting: `up`, `status` and `_wait` all ask the same question, and its answer
must not depend on how a server was started.
"""

from __future__ import annotations

import time
import uuid

import requests

from migwatch.errors import StackError
from migwatch.stack.base import StackBase, _tail


class HealthChecks(StackBase):
    """Whether each component answers, shallow (`status`) or with a round trip (`up`)."""

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

    def _pg_check(self, which: str) -> bool:
        import psycopg

        with psycopg.connect(self.pg_dsn(which)) as conn:
            row = conn.execute("SELECT current_setting('wal_level'), 1 + 1").fetchone()
        if row is None:
            return False
        if which == "source" and row[0] != "logical":
            raise StackError("postgres-source", f"wal_level is {row[0]}, expected logical")
        return row[1] == 2

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
