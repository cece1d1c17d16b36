package limiter

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// kvEntry is one watch update, for the pure logic of collect.
type kvEntry struct {
	key string
	val []byte
	rev uint64
}

func (e kvEntry) Bucket() string                  { return "tenantguard_decisions" }
func (e kvEntry) Key() string                     { return e.key }
func (e kvEntry) Value() []byte                   { return e.val }
func (e kvEntry) Revision() uint64                { return e.rev }
func (e kvEntry) Created() time.Time              { return time.Now() }
func (e kvEntry) Delta() uint64                   { return 0 }
func (e kvEntry) Operation() jetstream.KeyValueOp { return jetstream.KeyValuePut }

// A full resync that dies before the end-of-initial-values marker must not
// move the resume point past entries it never applied: the next watch
// would resume after them and a manual decision would be missed until it
// is rewritten.
func TestCollectLeavesResumePointUntilApplied(t *testing.T) {
	l := newLocal(t, func(c *Config) { c.TrustedKeys = []string{FormatPublicKey(testSigner(t, 1).PublicKey())} }, Deps{})
	d := throttle("acme", 5, 5, SourceManual, time.Hour)
	val, err := json.Marshal(testSigner(t, 1).Sign("acme", d))
	if err != nil {
		t.Fatal(err)
	}
	initial := map[string]*Decision{}
	var rev uint64
	if done := l.collect(kvEntry{key: "acme", val: val, rev: 7}, map[string]*Decision{}, &initial, map[string]bool{}, &rev); done {
		t.Fatal("a put entry was taken for the end-of-initial-values marker")
	}
	if rev != 7 {
		t.Fatalf("collected revision %d, want 7", rev)
	}
	l.mu.Lock()
	last := l.lastRev
	l.mu.Unlock()
	if last != 0 {
		t.Fatalf("resume point moved to %d before the entry was applied, want 0", last)
	}
	if got := initial["acme"]; got == nil || got.RatePerSec != 5 {
		t.Fatalf("initial[acme] = %+v, want the throttle at 5/s", got)
	}
}
