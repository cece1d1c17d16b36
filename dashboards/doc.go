// Package dashboards holds tenantguard's Grafana dashboards as code and the
// tests that make them real.
//
// It takes in nothing at run time: json/ holds four dashboards (SRE
// overview, tenant drill-down, billing, pipeline health) and provisioning/
// the Grafana file-provisioning YAML for the two datasources they use:
// tenantguard-prometheus (Prometheus) and tenantguard-clickhouse
// (grafana-clickhouse-datasource). The dashboards reach them through
// datasource variables (ds_prometheus, ds_clickhouse) that select those
// uids by default, so the same files provision and import (Grafana's Import
// JSON). configs/prometheus.yml and configs/rules/ are checked here too.
//
// The tests load every dashboard, check that each datasource reference,
// variable and panel id resolves, that the import form holds (no uid
// hard-coded, __requires complete), then run the exporter's collector with synthetic
// traffic behind a real Prometheus and execute every Prometheus expression
// (requiring data), and run every ClickHouse query against a real
// ClickHouse 18.16 after expanding Grafana's macros (requiring no error).
package dashboards
