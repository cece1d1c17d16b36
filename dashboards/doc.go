// Package dashboards holds tenantguard's Grafana dashboards as code and the
// tests that make them real.
//
// It takes in nothing at run time: json/ holds four dashboards (SRE
// overview, tenant drill-down, billing, pipeline health) and provisioning/
// the Grafana file-provisioning YAML for the two datasources they use, by
// fixed uid: tenantguard-prometheus (Prometheus) and tenantguard-clickhouse
// (grafana-clickhouse-datasource). configs/prometheus.yml and configs/rules/
// are checked here too.
//
// The tests load every dashboard, check that each datasource uid, variable
// and panel id resolves, then run the exporter's collector with synthetic
// traffic behind a real Prometheus and execute every Prometheus expression
// (requiring data), and run every ClickHouse query against a real
// ClickHouse 18.16 after expanding Grafana's macros (requiring no error).
package dashboards
