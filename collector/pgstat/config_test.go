package pgstat

import (
	"strings"
	"testing"
	"time"
)

func TestConfigValidate(t *testing.T) {
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("default config: %v", err)
	}
	d := DefaultConfig()
	if len(d.DSNs) != 0 || d.Interval != 60*time.Second || d.TenantColumn != "tenant_id" ||
		d.TenantGUC != "app.current_tenant" || d.MinCalls != 1 {
		t.Fatalf("defaults: got %+v", d)
	}
	bad := Config{Interval: 0, TenantColumn: "tenant id", TenantGUC: "x'; drop",
		IncludeTables: []string{"a.b:c", "1bad"}, ExcludeTables: []string{"t:col"}, MinCalls: 0}
	err := bad.Validate()
	if err == nil {
		t.Fatal("bad config accepted")
	}
	for _, want := range []string{"pgstat.interval:", "pgstat.tenant_column:", "pgstat.tenant_guc:",
		"pgstat.include_tables:", "pgstat.exclude_tables:", "pgstat.min_calls:"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error lacks %q:\n%v", want, err)
		}
	}
	if strings.Contains(err.Error(), `"a.b:c"`) {
		t.Errorf("valid include entry reported: %v", err)
	}
}

func TestIncludeExcludeTables(t *testing.T) {
	cfg := DefaultConfig()
	cfg.IncludeTables = []string{"public.tenants:id", "accounts"}
	cfg.ExcludeTables = []string{"public.items"}
	tables := []*Table{
		{Schema: "public", Name: "tenants", Kind: "table", Columns: []string{"id", "name"}},
		{Schema: "public", Name: "accounts", Kind: "table", Columns: []string{"id", "tenant_id"}},
		{Schema: "public", Name: "items", Kind: "table", Columns: []string{"id", "tenant_id"}},
	}
	markTenantTables(tables, cfg, nil)
	if !tables[0].Tenant || tables[0].TenantColumn != "id" {
		t.Errorf("tenants: got tenant=%v column=%q, want true id", tables[0].Tenant, tables[0].TenantColumn)
	}
	if !tables[1].Tenant || tables[1].TenantColumn != "tenant_id" {
		t.Errorf("accounts: got tenant=%v column=%q", tables[1].Tenant, tables[1].TenantColumn)
	}
	if tables[2].Tenant {
		t.Errorf("items: excluded table is a tenant table")
	}
	cat := NewCatalog("db", cfg.TenantColumn, cfg.TenantGUC, tables, nil)
	an := NewAnalyzer(cat)
	for sql, want := range map[string]Class{
		"SELECT name FROM tenants WHERE id = $1": ClassClean,
		"SELECT name FROM tenants":               ClassUnscoped,
		"SELECT * FROM items":                    ClassClean,
	} {
		if got := an.Analyze(0, sql, nil).Class(); got != want {
			t.Errorf("%s: got %s, want %s", sql, got, want)
		}
	}
}
