"""Installing the stack's components on demand: Debian packages, Kafka and Debezium jars from
Maven Central, FerretDB built from the Go module proxy — each cached once (`MIGWATCH_CACHE_DIR`).

Kept apart from starting and checking because it is the slow, network-bound part that runs only
on a fresh machine; bench/ also uses `install_connect_plugin` on its own.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tarfile
from pathlib import Path

from migwatch.errors import StackError
from migwatch.stack import templates
from migwatch.stack.base import PG_BIN, StackBase, _tail

# FerretDB's embeddable server in a thin wrapper module (go.mod pins the FerretDB version)
FERRETDB_WRAPPER = Path(__file__).parent / "ferretdb"
DEBIAN_PACKAGES = {
    "postgres": ("postgresql-15", PG_BIN / "postgres"),
    "prometheus": ("prometheus", Path("/usr/bin/prometheus")),
    "pushgateway": ("prometheus-pushgateway", Path("/usr/bin/prometheus-pushgateway")),
    "alertmanager": ("prometheus-alertmanager", Path("/usr/bin/prometheus-alertmanager")),
}


class Installers(StackBase):
    """What `Stack.up` installs before it starts anything; every step is skipped once done."""

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
