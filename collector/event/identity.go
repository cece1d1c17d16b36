package event

import "context"

// Identity is who a piece of work is done for: a tenant and, optionally,
// an end user inside it. It travels in a context.Context, so that a request
// the HTTP middleware has metered passes its tenant to the outbound calls
// and database queries it makes, without repeating it.
type Identity struct {
	Tenant string // a tenant id (see ValidTenantID)
	User   string // the end user, or empty
}

// IdentityKey is the context key of the Identity: ctx.Value(IdentityKey{})
// holds a *Identity, which readers must not modify. WithIdentity is the way
// to set it; a package that keeps its own context node per request (the
// HTTP middleware does, to save an allocation) may answer the key itself.
type IdentityKey struct{}

// WithIdentity returns a child of ctx that carries id.
func WithIdentity(ctx context.Context, id Identity) context.Context {
	return &identityCtx{Context: ctx, id: id}
}

// WithTenant returns a child of ctx that carries tenant and no user.
func WithTenant(ctx context.Context, tenant string) context.Context {
	return WithIdentity(ctx, Identity{Tenant: tenant})
}

// IdentityFrom returns the Identity ctx carries, and false when it carries
// none or its tenant is empty.
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, _ := ctx.Value(IdentityKey{}).(*Identity)
	if id == nil || id.Tenant == "" {
		return Identity{}, false
	}
	return *id, true
}

// TenantFrom returns the tenant ctx carries, or "".
func TenantFrom(ctx context.Context) string {
	id, _ := IdentityFrom(ctx)
	return id.Tenant
}

// identityCtx is a context node holding an Identity: one allocation, where
// context.WithValue would take two (the node and the boxed value).
type identityCtx struct {
	context.Context
	id Identity
}

func (c *identityCtx) Value(key any) any {
	if _, ok := key.(IdentityKey); ok {
		return &c.id
	}
	return c.Context.Value(key)
}

func (c *identityCtx) String() string { return "event.WithIdentity(" + c.id.Tenant + ")" }
