package limiter

import (
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"
	"time"

	"github.com/tenantguard/tenantguard/internal/testenv"
)

func TestGroupOf(t *testing.T) {
	cases := []struct{ in, want string }{
		{"/usr/bin/invoices-api", "invoices-api"},
		{"invoices_api", "invoices_api"},
		{"limiter.test", "limiter"},
		{`C:\svc\billing.exe`, "C--svc-billing"},
		{"/opt/my service", "my-service"},
		{"/opt/_hidden", "hidden"},
		{"/", ""},
		{"", ""},
		{"..", ""},
		{"/x/" + string(make([]byte, 80)) + "abc", "abc"},
	}
	for _, c := range cases {
		if got := GroupOf(c.in); got != c.want {
			t.Errorf("GroupOf(%q) = %q, want %q", c.in, got, c.want)
		}
	}
	long := GroupOf("/bin/" + string(bytesOf('a', 100)))
	if len(long) != 64 {
		t.Errorf("GroupOf of a 100-byte name: %d bytes, want 64", len(long))
	}
}

func bytesOf(c byte, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = c
	}
	return b
}

// TestDefaultGroupIsTheProgram: DefaultConfig joins no shared group; the
// limiter takes the program's name.
func TestDefaultGroupIsTheProgram(t *testing.T) {
	if g := DefaultConfig().Group; g != "" {
		t.Fatalf("DefaultConfig().Group = %q, want empty (the program's name)", g)
	}
	l := newLocal(t, nil, Deps{})
	if got, want := l.Group(), GroupOf(os.Args[0]); got != want || got == "" || got == "default" {
		t.Fatalf("Group() = %q, want the program's name %q", got, want)
	}
	l = newLocal(t, func(c *Config) { c.Group = "invoices-api" }, Deps{})
	if got := l.Group(); got != "invoices-api" {
		t.Fatalf("Group() = %q, want invoices-api", got)
	}
}

// TestRateLimitHeaderIsClusterWide: two instances of one group split a
// throttle of 2/s; each answers RateLimit-Limit 2, the cluster-wide figure,
// not its local burst of 1. An instance of another group is not split.
func TestRateLimitHeaderIsClusterWide(t *testing.T) {
	srv := testenv.NATS(t)
	pub := newPublisher(t, srv.URL)
	a := start(t, srv.URL, func(c *Config) { c.Group = "svc" })
	b := start(t, srv.URL, func(c *Config) { c.Group = "svc" })
	other := start(t, srv.URL, func(c *Config) { c.Group = "other-svc" })
	waitFor(t, 10*time.Second, "the svc instances see each other", func() bool {
		return a.Instances() == 2 && b.Instances() == 2 && other.Instances() == 1
	})
	if _, err := pub.Put(context.Background(), throttle("acme", 2, 0, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 5*time.Second, "every instance applies the throttle", func() bool {
		for _, in := range []*instance{a, b, other} {
			if _, _, ok := in.Limit("acme"); !ok {
				return false
			}
		}
		return true
	})
	if r, burst, _ := a.Limit("acme"); r != 1 || burst != 1 {
		t.Fatalf("svc instance local limit %v/%d, want 1/s burst 1 (2/s split by 2)", r, burst)
	}
	if r, burst, _ := other.Limit("acme"); r != 2 || burst != 2 {
		t.Fatalf("other group's local limit %v/%d, want 2/s burst 2 (not split)", r, burst)
	}
	for _, in := range []*instance{a, other} {
		mw, err := in.Middleware(MiddlewareConfig{Tenant: HeaderTenant("X-Tenant-ID")})
		if err != nil {
			t.Fatal(err)
		}
		req := httptest.NewRequest("GET", "/", nil)
		req.Header.Set("X-Tenant-ID", "acme")
		rec := httptest.NewRecorder()
		mw(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {})).ServeHTTP(rec, req)
		if got := rec.Header().Get("RateLimit-Limit"); got != "2" {
			t.Errorf("group %s: RateLimit-Limit %q, want the cluster-wide 2", in.Group(), got)
		}
	}
}
