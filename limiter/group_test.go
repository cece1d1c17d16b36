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
	testenv.Eventually(t, 10*time.Second, "the svc instances see each other", func() bool {
		return a.Instances() == 2 && b.Instances() == 2 && other.Instances() == 1
	})
	if _, err := pub.Put(context.Background(), throttle("acme", 2, 0, SourceManual, time.Minute)); err != nil {
		t.Fatal(err)
	}
	testenv.Eventually(t, 5*time.Second, "every instance applies the throttle", func() bool {
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

func TestRateLimitHeaderValues(t *testing.T) {
	cases := []struct {
		res                  Result
		limit, remain, reset string
	}{
		{Result{ClusterLimit: 3, Remaining: 2, Reset: 1500 * time.Millisecond}, "3", "2", "2"},
		{Result{ClusterLimit: 1000000000, Remaining: 999999999, Reset: 0}, "1000000000", "999999999", "0"},
		{Result{ClusterLimit: 0, Remaining: 0, Reset: 90 * time.Second}, "0", "0", "90"},
		{Result{ClusterLimit: 1<<63 - 1, Remaining: 1<<63 - 1, Reset: 1<<63 - 1}, "9223372036854775807", "9223372036854775807", "9223372037"},
	}
	for _, c := range cases {
		h := http.Header{}
		writeRateLimit(h, &c.res)
		got := [3]string{h.Get("RateLimit-Limit"), h.Get("RateLimit-Remaining"), h.Get("RateLimit-Reset")}
		if want := [3]string{c.limit, c.remain, c.reset}; got != want {
			t.Errorf("%+v: got %q, want %q", c.res, got, want)
		}
		h.Add("RateLimit-Limit", "x") // appending must not touch the other values
		if h.Get("RateLimit-Remaining") != c.remain {
			t.Errorf("Add on one header changed another")
		}
	}
	if n := testing.AllocsPerRun(100, func() {
		writeRateLimit(http.Header{}, &Result{ClusterLimit: 123456, Remaining: 654321, Reset: time.Hour})
	}); n > 2 { // the header map itself, and the values
		t.Errorf("got %.0f allocations, want at most 2", n)
	}
}
