"""Configuration files of the local stack, rendered from StackSettings (pure functions)."""

from __future__ import annotations

from pathlib import Path

from migwatch.config import StackSettings

KAFKA_POM = """<project xmlns="http://maven.apache.org/POM/4.0.0">
  <modelVersion>4.0.0</modelVersion>
  <groupId>migwatch.stack</groupId><artifactId>kafka-classpath</artifactId><version>1</version>
  <packaging>pom</packaging>
  <dependencies>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>kafka_2.13</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-runtime</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.apache.kafka</groupId><artifactId>connect-json</artifactId>
      <version>{kafka}</version></dependency>
    <dependency><groupId>org.slf4j</groupId><artifactId>slf4j-api</artifactId>
      <version>2.0.17</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-core</artifactId>
      <version>{log4j}</version></dependency>
    <dependency><groupId>org.apache.logging.log4j</groupId><artifactId>log4j-slf4j2-impl</artifactId>
      <version>{log4j}</version></dependency>
  </dependencies>
</project>
"""

LOG4J2 = """status = warn
appender.console.type = Console
appender.console.name = STDOUT
appender.console.layout.type = PatternLayout
appender.console.layout.pattern = [%d] %p %m (%c)%n
rootLogger.level = INFO
rootLogger.appenderRef.stdout.ref = STDOUT
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.kafkaorg.name = org.apache.kafka
logger.kafkaorg.level = WARN
logger.connect.name = org.apache.kafka.connect
logger.connect.level = INFO
logger.reflections.name = org.reflections
logger.reflections.level = ERROR
logger.debezium.name = io.debezium
logger.debezium.level = INFO
"""


def kafka_server_properties(s: StackSettings, log_dir: Path) -> str:
    h = s.host
    return f"""process.roles=broker,controller
node.id=1
controller.quorum.bootstrap.servers={h}:{s.kafka_controller_port}
listeners=PLAINTEXT://{h}:{s.kafka_port},CONTROLLER://{h}:{s.kafka_controller_port}
advertised.listeners=PLAINTEXT://{h}:{s.kafka_port},CONTROLLER://{h}:{s.kafka_controller_port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={log_dir}
num.partitions=1
offsets.topic.replication.factor=1
offsets.topic.num.partitions=10
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
share.coordinator.state.topic.replication.factor=1
share.coordinator.state.topic.min.isr=1
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=true
log.retention.hours=48
"""


def connect_worker_properties(s: StackSettings, plugin_dir: Path) -> str:
    return f"""bootstrap.servers={s.host}:{s.kafka_port}
group.id=migwatch-connect
listeners=http://{s.host}:{s.connect_port}
rest.advertised.host.name={s.host}
rest.advertised.port={s.connect_port}
key.converter=org.apache.kafka.connect.json.JsonConverter
value.converter=org.apache.kafka.connect.json.JsonConverter
key.converter.schemas.enable=false
value.converter.schemas.enable=false
config.storage.topic=migwatch-connect-configs
offset.storage.topic=migwatch-connect-offsets
status.storage.topic=migwatch-connect-status
config.storage.replication.factor=1
offset.storage.replication.factor=1
status.storage.replication.factor=1
offset.storage.partitions=5
offset.flush.interval.ms=500
plugin.path={plugin_dir}
plugin.discovery=hybrid_warn
scheduled.rebalance.max.delay.ms=0
config.providers=file
config.providers.file.class=org.apache.kafka.common.config.provider.FileConfigProvider
config.providers.file.param.allowed.paths={s.connect_secrets_dir}
"""


def prometheus_config(s: StackSettings) -> str:
    return f"""global:
  scrape_interval: {s.scrape_interval}
  evaluation_interval: {s.scrape_interval}
rule_files:
  - {s.state_dir}/prometheus/rules/*.yml
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['{s.host}:{s.alertmanager_port}']
scrape_configs:
  - job_name: migwatch
    file_sd_configs:
      - files: ['{s.file_sd_dir}/*.json']
        refresh_interval: 2s
  - job_name: pushgateway
    honor_labels: true
    static_configs:
      - targets: ['{s.host}:{s.pushgateway_port}']
"""


def alertmanager_config(webhook_url: str | None) -> str:
    url = webhook_url or "http://127.0.0.1:9/unused"
    return f"""route:
  receiver: migwatch-webhook
  group_by: ['alertname', 'migration_id']
  group_wait: 1s
  group_interval: 5s
  repeat_interval: 4h
receivers:
  - name: migwatch-webhook
    webhook_configs:
      - url: '{url}'
        send_resolved: true
"""
