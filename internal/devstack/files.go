package devstack

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/tenantguard/tenantguard/exporter/api"
	"github.com/tenantguard/tenantguard/internal/daemon"
)

// What `tenantguard dev` keeps in its data directory besides the servers'
// data: the ports of the last run (reused when free, so addresses stay the
// same from run to run), the dev API token (0600; the config holds only
// its SHA-256), and the config file every other command run from the
// folder reads (ConfigFile).
const (
	portsFile = "ports.json"
	TokenFile = "api-token"
	tokenName = "dev-admin"
)

// ports are the addresses of the last dev run.
type ports struct {
	NATS           int    `json:"nats"`
	ClickHouse     int    `json:"clickhouse"`
	ClickHouseHTTP int    `json:"clickhouse_http"`
	API            string `json:"api"`
	Metrics        string `json:"metrics"`
}

// loadPorts reads the ports of the last run; none on a first run or an
// unreadable file (they are only a preference).
func loadPorts(dir string) ports {
	var p ports
	if b, err := os.ReadFile(filepath.Join(dir, portsFile)); err == nil {
		_ = json.Unmarshal(b, &p)
	}
	return p
}

func savePorts(dir string, p ports) error {
	b, err := json.MarshalIndent(p, "", "  ")
	if err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, portsFile), append(b, '\n'), 0o644)
}

// pickPort returns the first candidate port that is free on loopback (0s
// are skipped), else a free port the system picks.
func pickPort(candidates ...int) int {
	for _, p := range candidates {
		if p > 0 && p < 65536 && portFree("127.0.0.1:"+strconv.Itoa(p)) {
			return p
		}
	}
	return freePort()
}

// pickListen returns the first candidate host:port free on its host
// (an empty host means loopback), else a free loopback port.
func pickListen(candidates ...string) string {
	for _, addr := range candidates {
		host, port, err := net.SplitHostPort(addr)
		if err != nil || port == "" || port == "0" {
			continue
		}
		if host == "" {
			host = "127.0.0.1"
		}
		if a := net.JoinHostPort(host, port); portFree(a) {
			return a
		}
	}
	return "127.0.0.1:" + strconv.Itoa(freePort())
}

func portFree(addr string) bool {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	return true
}

func freePort() int {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

// apiToken returns the data directory's dev API token and its SHA-256 hex,
// making the token (mode 0600) on first use.
func apiToken(dir string) (token, sum string, err error) {
	path := filepath.Join(dir, TokenFile)
	b, err := os.ReadFile(path)
	switch {
	case err == nil:
		token = strings.TrimSpace(string(b))
	case errors.Is(err, fs.ErrNotExist):
		raw := make([]byte, 20)
		if _, err := rand.Read(raw); err != nil {
			return "", "", err
		}
		token = "tgdev_" + hex.EncodeToString(raw)
		if err := writeFileAtomic(path, []byte(token+"\n"), 0o600); err != nil {
			return "", "", fmt.Errorf("dev API token: %w", err)
		}
	default:
		return "", "", fmt.Errorf("dev API token: %w", err)
	}
	if token == "" {
		return "", "", fmt.Errorf("dev API token: %s is empty; delete it and dev makes a new one", path)
	}
	h := sha256.Sum256([]byte(token))
	return token, hex.EncodeToString(h[:]), nil
}

// withToken is tokens plus the dev admin token's hash, unless a token
// of that name is configured already.
func withToken(tokens []api.Token, sum string) []api.Token {
	for _, t := range tokens {
		if t.Name == tokenName {
			return tokens
		}
	}
	return append(append([]api.Token(nil), tokens...), api.Token{Name: tokenName, SHA256: sum, Role: "admin"})
}

// writeConfig writes the config file that points every command run from
// the folder at the dev stack: its addresses, the API tokens (hashes
// only), the decisions key, the price book, and the detector's settings,
// so `replay` judges the stored history as the demo did. It starts with
// ConfigMarker, which the loader checks.
func writeConfig(path, dataDir string, cfg daemon.Config, demo bool) error {
	tokens := make([]map[string]string, 0, len(cfg.API.Tokens))
	for _, t := range cfg.API.Tokens {
		tokens = append(tokens, map[string]string{"name": t.Name, "sha256": t.SHA256, "role": t.Role})
	}
	plans := map[string]any{}
	for name, p := range cfg.Pricing.Plans {
		plans[name] = map[string]any{"prices": p.Prices, "spend_cap": p.SpendCap, "degraded_rate": p.DegradedRate}
	}
	doc := map[string]any{
		"nats": map[string]any{"url": cfg.NATS.URL},
		"clickhouse": map[string]any{
			"addr": cfg.ClickHouse.Addr, "database": cfg.ClickHouse.Database,
		},
		"api":     map[string]any{"listen": cfg.API.Listen, "tokens": tokens},
		"metrics": map[string]any{"listen": cfg.Metrics.Listen},
		"decisions": map[string]any{
			"signing_key_file": cfg.Decisions.SigningKeyFile,
		},
		"pricing": map[string]any{
			"version": cfg.Pricing.Version, "currency": cfg.Pricing.Currency, "default_plan": cfg.Pricing.DefaultPlan,
			"prices": cfg.Pricing.Prices, "plans": plans, "tenants": cfg.Pricing.Tenants,
		},
		"billing": map[string]any{"currency": cfg.Billing.Currency},
	}
	if demo {
		doc["anomaly"] = map[string]any{
			"warmup_windows":     cfg.Anomaly.WarmupWindows,
			"quiet_period":       cfg.Anomaly.QuietPeriod.String(),
			"cooldown":           cfg.Anomaly.Cooldown.String(),
			"baseline_half_life": cfg.Anomaly.BaselineHalfLife.String(),
		}
	}
	body, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	head := fmt.Sprintf("%s at %s (pid %d) for the dev stack in %s.\n"+
		"# Every tenantguard command run from this folder reads it when neither --config,\n"+
		"# $TENANTGUARD_CONFIG nor ./tenantguard.yaml names another file; `tenantguard run` and\n"+
		"# `tenantguard dev` never do. dev rewrites it at each start; `make clean` removes it.\n",
		ConfigMarker, time.Now().UTC().Format(time.RFC3339), os.Getpid(), dataDir)
	return writeFileAtomic(path, append([]byte(head), body...), 0o600)
}

// writeFileAtomic writes b to path through a temporary file and a rename,
// so a reader never sees half a file.
func writeFileAtomic(path string, b []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(b); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
