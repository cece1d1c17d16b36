package api

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"net/http"
	"strings"
)

// maxTokenLen bounds what is hashed from an Authorization header.
const maxTokenLen = 1024

// principal is an authenticated caller.
type principal struct {
	name string // the token's configured name, safe to log
	role role
}

type tokenEntry struct {
	hash [sha256.Size]byte
	p    principal
}

// authenticator checks bearer tokens against the configured hashes.
type authenticator struct {
	entries []tokenEntry
}

func newAuthenticator(tokens []Token) (*authenticator, error) {
	a := &authenticator{}
	for _, t := range tokens {
		r, err := parseRole(t.Role)
		if err != nil {
			return nil, err
		}
		var e tokenEntry
		if _, err := hex.Decode(e.hash[:], []byte(strings.ToLower(t.SHA256))); err != nil {
			return nil, err
		}
		e.p = principal{name: t.Name, role: r}
		a.entries = append(a.entries, e)
	}
	return a, nil
}

// authenticate returns the caller of r, or false. It hashes the presented
// token and compares the hash with every entry in constant time, without
// stopping at a match, so timing tells nothing about which hash is close.
func (a *authenticator) authenticate(r *http.Request) (principal, bool) {
	h := r.Header.Get("Authorization")
	scheme, token, ok := strings.Cut(h, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return principal{}, false
	}
	token = strings.TrimSpace(token)
	if token == "" || len(token) > maxTokenLen {
		return principal{}, false
	}
	sum := sha256.Sum256([]byte(token))
	match := -1
	for i := range a.entries {
		if subtle.ConstantTimeCompare(sum[:], a.entries[i].hash[:]) == 1 {
			match = i
		}
	}
	if match < 0 {
		return principal{}, false
	}
	return a.entries[match].p, true
}

// access says which principals may call an endpoint. tenant is the path's
// tenant id, already validated, or "" for endpoints without one.
type access func(p principal, tenant string) bool

// adminOnly: anomalies, decisions, pg findings and heavy-tenant advice of
// every tenant.
func adminOnly(p principal, _ string) bool { return p.role.admin }

// billingRead: the billing export and cost of every tenant.
func billingRead(p principal, _ string) bool { return p.role.admin || p.role.billing }

// usageRead: one tenant's usage and cost; billing reads every tenant's.
func usageRead(p principal, tenant string) bool {
	return p.role.admin || p.role.billing || (p.role.tenant != "" && p.role.tenant == tenant)
}

// tenantPrivate: one tenant's anomalies, decisions and raw events; billing
// has no business there.
func tenantPrivate(p principal, tenant string) bool {
	return p.role.admin || (p.role.tenant != "" && p.role.tenant == tenant)
}
