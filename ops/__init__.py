"""keel's shells: config, service, ledger, venues, metrics, MQTT, CLI."""
