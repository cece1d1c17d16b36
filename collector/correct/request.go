package correct

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/tenantguard/tenantguard/collector/event"
	"github.com/tenantguard/tenantguard/collector/store"
)

// MaxIDs bounds a file of event ids.
const MaxIDs = 1_000_000

// ReadIDs reads event ids from path ("-" is stdin), one per line,
// skipping blank lines and # comments. A line longer than an event id may
// be, more than MaxIDs ids, or no id at all is an error naming the file.
func ReadIDs(path string, stdin io.Reader) ([]string, error) {
	r := stdin
	if path != "-" {
		f, err := os.Open(path)
		if err != nil {
			return nil, err
		}
		defer f.Close()
		r = f
	}
	var ids []string
	sc := bufio.NewScanner(r)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		if len(line) > event.MaxIDLen {
			return nil, fmt.Errorf("%s:%d: an event id is at most %d bytes", path, n, event.MaxIDLen)
		}
		if len(ids) == MaxIDs {
			return nil, fmt.Errorf("%s: more than %d ids; split the file", path, MaxIDs)
		}
		ids = append(ids, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	if len(ids) == 0 {
		return nil, fmt.Errorf("%s holds no event ids", path)
	}
	return ids, nil
}

// ForEvents returns one correction like tmpl for each event id, each with
// a correction id of its own under one random prefix, so that sending the
// same batch again is a duplicate and another batch is not. Each is
// validated; the first invalid one is an error naming its event.
func ForEvents(tmpl event.Correction, ids []string) ([]event.Correction, error) {
	var b [6]byte
	_, _ = rand.Read(b[:])
	prefix := "cli-" + hex.EncodeToString(b[:]) + "-"
	cs := make([]event.Correction, len(ids))
	for i, id := range ids {
		c := tmpl
		c.ID, c.EventID = prefix+strconv.Itoa(i), id
		if c.Quantity != nil {
			q := *c.Quantity
			c.Quantity = &q
		}
		if verr := event.ValidateCorrection(&c); verr != nil {
			return nil, fmt.Errorf("event %q: %w", id, verr)
		}
		cs[i] = c
	}
	return cs, nil
}

// ApplyAll applies cs in requests of at most
// event.MaxCorrectionsPerRequest and returns every result in order.
func (a *Applier) ApplyAll(ctx context.Context, tenant string, cs []event.Correction) ([]event.CorrectionResult, error) {
	results := make([]event.CorrectionResult, 0, len(cs))
	for start := 0; start < len(cs); start += event.MaxCorrectionsPerRequest {
		out, err := a.Apply(ctx, tenant, cs[start:min(start+event.MaxCorrectionsPerRequest, len(cs))])
		if err != nil {
			return nil, err
		}
		results = append(results, out.Results...)
	}
	return results, nil
}

// ApplyStore applies cs through the ClickHouse that sc names, with the
// Applier the daemon uses (lateness: collector.lateness).
func ApplyStore(ctx context.Context, sc store.Config, lateness time.Duration, tenant string, cs []event.Correction) ([]event.CorrectionResult, error) {
	st, err := store.Open(ctx, sc)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	applier, err := NewApplier(Config{Lateness: lateness}, st)
	if err != nil {
		return nil, err
	}
	return applier.ApplyAll(ctx, tenant, cs)
}

// DaemonConsumes reports whether a daemon is consuming correction
// requests now: the durable consumer has a pull waiting or a request in
// flight. Then corrections must go through it, which serializes them with
// everything else it applies. It looks for at most 3 s.
func DaemonConsumes(ctx context.Context, js jetstream.JetStream) bool {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	// An idle daemon renews its pull request every few seconds: look
	// twice, so a renewal in between is not mistaken for no daemon.
	for i := 0; i < 2; i++ {
		cons, err := js.Consumer(ctx, event.CorrectionsStream, DefaultServiceConfig().Durable)
		if err != nil {
			return false
		}
		info, err := cons.Info(ctx)
		if err != nil {
			return false
		}
		if info.NumWaiting > 0 || info.NumAckPending > 0 {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(200 * time.Millisecond):
		}
	}
	return false
}
