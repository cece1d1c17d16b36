package event

import (
	"bufio"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

type badEntry struct {
	file, subject string
	reason        Reason
	data          []byte // with __NOW__ still in it
}

// loadBadCorpus reads testdata/bad/index.tsv and the files it names.
func loadBadCorpus(t *testing.T) []badEntry {
	t.Helper()
	f, err := os.Open(filepath.Join("testdata", "bad", "index.tsv"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []badEntry
	sc := bufio.NewScanner(f)
	for line := 1; sc.Scan(); line++ {
		text := sc.Text()
		if text == "" || strings.HasPrefix(text, "#") {
			continue
		}
		cols := strings.Split(text, "\t")
		if len(cols) != 3 {
			t.Fatalf("index.tsv:%d: got %d columns, want 3", line, len(cols))
		}
		data, err := os.ReadFile(filepath.Join("testdata", "bad", cols[0]))
		if err != nil {
			t.Fatalf("index.tsv:%d: %v", line, err)
		}
		out = append(out, badEntry{file: cols[0], subject: cols[1], reason: Reason(cols[2]), data: data})
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

func withNow(data []byte, now time.Time) []byte {
	return bytes.ReplaceAll(data, []byte("__NOW__"), []byte(now.UTC().Format(time.RFC3339Nano)))
}

// TestBadCorpus checks every corpus entry gets exactly its reason, both with
// the fixed clock and with the real one (as the collector's DLQ test runs).
func TestBadCorpus(t *testing.T) {
	corpus := loadBadCorpus(t)
	fixed := newTestValidator(t)
	real, err := NewValidator(Rules{})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range corpus {
		t.Run(c.file, func(t *testing.T) {
			if _, _, err := ParseSubject(c.subject); err != nil && c.reason != ReasonSubjectMismatch {
				t.Fatalf("subject %q is malformed, which hides the file's own defect", c.subject)
			}
			var e Event
			for _, run := range []struct {
				name string
				v    *Validator
				now  time.Time
			}{{"fixed clock", fixed, testNow.Add(-time.Minute)}, {"real clock", real, time.Now()}} {
				err := run.v.Parse(withNow(c.data, run.now), c.subject, &e)
				if got := reasonOf(err); got != c.reason {
					t.Errorf("%s: got %q (%v), want %q", run.name, got, err, c.reason)
				}
			}
		})
	}
}

// TestBadCorpusIndex checks the index and the directory agree, and that the
// corpus covers every category the DLQ integration test relies on.
func TestBadCorpusIndex(t *testing.T) {
	corpus := loadBadCorpus(t)
	listed := map[string]bool{}
	byReason := map[Reason]int{}
	for _, c := range corpus {
		if listed[c.file] {
			t.Errorf("index.tsv lists %s twice", c.file)
		}
		listed[c.file] = true
		byReason[c.reason]++
		if !knownReason(c.reason) {
			t.Errorf("%s: reason %q is not a Reason constant", c.file, c.reason)
		}
	}
	files, err := filepath.Glob(filepath.Join("testdata", "bad", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		if !listed[filepath.Base(f)] {
			t.Errorf("%s is not in index.tsv", f)
		}
	}
	for _, r := range []Reason{
		ReasonInvalidJSON, ReasonMissingField, ReasonWrongType, ReasonBadTenantID,
		ReasonSubjectMismatch, ReasonTooLarge, ReasonBadQuantity, ReasonTimeInFuture,
		ReasonTooLate, ReasonUnknownKind,
	} {
		if byReason[r] == 0 {
			t.Errorf("the corpus has no %s case", r)
		}
	}
	// The bad tenant ids the issue names: dots, spaces, *, >, 65 chars, SQL quotes.
	for _, name := range []string{"dot", "space", "star", "gt", "65_chars", "sql_quote"} {
		if !listed["bad_tenant_id_"+name+".json"] {
			t.Errorf("the corpus has no bad_tenant_id_%s.json", name)
		}
	}
}

// TestBadCorpusFixedIsValid checks the corpus is not bad by accident: the
// template its events come from is valid, so each file's defect is its own.
func TestBadCorpusFixedIsValid(t *testing.T) {
	corpus := loadBadCorpus(t)
	v := newTestValidator(t)
	fixes := map[string]func([]byte) []byte{
		"bad_quantity_negative.json": func(b []byte) []byte { return bytes.Replace(b, []byte(`"quantity":-1`), []byte(`"quantity":1`), 1) },
		"subject_mismatch_kind.json": func(b []byte) []byte { return b }, // fixed by the subject below
		"too_late.json":              func(b []byte) []byte { return bytes.Replace(b, []byte(`2000-01-01T00:00:00Z`), []byte(`__NOW__`), 1) },
		"time_in_future.json":        func(b []byte) []byte { return bytes.Replace(b, []byte(`2999-01-01T00:00:00Z`), []byte(`__NOW__`), 1) },
		"bad_tenant_id_dot.json":     func(b []byte) []byte { return bytes.Replace(b, []byte(`acme.prod`), []byte(`acme`), 1) },
	}
	for _, c := range corpus {
		fix, ok := fixes[c.file]
		if !ok {
			continue
		}
		delete(fixes, c.file)
		var e Event
		if err := v.Parse(withNow(fix(c.data), testNow), testSubject, &e); err != nil {
			t.Errorf("%s with its defect fixed: got %v, want a valid event", c.file, err)
		}
	}
	for f := range fixes {
		t.Errorf("%s is missing from the corpus", f)
	}
}

// allReasons lists every Reason constant; schema_test checks the docs name
// each, and knownReason the corpus uses no other.
var allReasons = []Reason{
	ReasonTooLarge, ReasonInvalidJSON, ReasonWrongType, ReasonMissingField, ReasonBadID,
	ReasonBadTenantID, ReasonUnknownKind, ReasonBadTime, ReasonTimeInFuture, ReasonTooLate,
	ReasonBadQuantity, ReasonBadAttrs, ReasonBadField, ReasonSubjectMismatch, ReasonIDMismatch,
	ReasonUnknownEvent, ReasonAlreadyVoided, ReasonNoChange,
}

func knownReason(r Reason) bool {
	for _, k := range allReasons {
		if k == r {
			return true
		}
	}
	return false
}
