package event

import (
	"context"
	"testing"
	"time"
)

type otherKey struct{}

func TestIdentityTravelsInContext(t *testing.T) {
	base := context.WithValue(context.Background(), otherKey{}, "kept")
	cases := []struct {
		name   string
		ctx    context.Context
		want   Identity
		wantOK bool
	}{
		{"none", base, Identity{}, false},
		{"tenant", WithTenant(base, "acme"), Identity{Tenant: "acme"}, true},
		{"tenant and user", WithIdentity(base, Identity{Tenant: "acme", User: "u_42"}), Identity{Tenant: "acme", User: "u_42"}, true},
		{"inner wins", WithTenant(WithIdentity(base, Identity{Tenant: "globex", User: "u_1"}), "acme"), Identity{Tenant: "acme"}, true},
		{"empty tenant", WithIdentity(base, Identity{User: "u_1"}), Identity{}, false},
		{"under a child context", func() context.Context {
			ctx, cancel := context.WithTimeout(WithTenant(base, "acme"), time.Hour)
			t.Cleanup(cancel)
			return ctx
		}(), Identity{Tenant: "acme"}, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			got, ok := IdentityFrom(c.ctx)
			if got != c.want || ok != c.wantOK {
				t.Fatalf("got %+v, %v; want %+v, %v", got, ok, c.want, c.wantOK)
			}
			if tn := TenantFrom(c.ctx); tn != c.want.Tenant {
				t.Fatalf("TenantFrom: got %q, want %q", tn, c.want.Tenant)
			}
			if v := c.ctx.Value(otherKey{}); v != "kept" {
				t.Fatalf("parent value: got %v, want kept", v)
			}
		})
	}
}

func TestIdentityContextCancelsWithParent(t *testing.T) {
	parent, cancel := context.WithCancel(context.Background())
	ctx := WithTenant(parent, "acme")
	child, stop := context.WithCancel(ctx)
	defer stop()
	cancel()
	select {
	case <-child.Done():
	case <-time.After(time.Second):
		t.Fatal("a context under WithTenant was not cancelled with its parent")
	}
}

func TestWithIdentityAllocatesOnce(t *testing.T) {
	ctx := context.Background()
	got := testing.AllocsPerRun(1000, func() {
		c := WithIdentity(ctx, Identity{Tenant: "acme", User: "u"})
		if _, ok := IdentityFrom(c); !ok {
			t.Fatal("lost")
		}
	})
	if got > 1 {
		t.Fatalf("got %.0f allocations, want 1", got)
	}
}
