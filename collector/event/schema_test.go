package event

import (
	"encoding/json"
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

const (
	schemaPath = "../../docs/event.schema.json"
	docPath    = "../../docs/events.md"
)

type schemaNode struct {
	Schema               string                 `json:"$schema"`
	Type                 string                 `json:"type"`
	Format               string                 `json:"format"`
	Pattern              string                 `json:"pattern"`
	Enum                 []string               `json:"enum"`
	AnyOf                []schemaNode           `json:"anyOf"`
	Required             []string               `json:"required"`
	Properties           map[string]*schemaNode `json:"properties"`
	AdditionalProperties json.RawMessage        `json:"additionalProperties"`
	MinLength            *int                   `json:"minLength"`
	MaxLength            *int                   `json:"maxLength"`
	MaxProperties        *int                   `json:"maxProperties"`
	Minimum              *float64               `json:"minimum"`
	Maximum              *float64               `json:"maximum"`
	Default              any                    `json:"default"`
	MaxBytes             *int                   `json:"x-tenantguard-max-bytes"`
	Examples             []json.RawMessage      `json:"examples"`
}

// show prints an optional schema number.
func show[T int | float64](p *T) string {
	if p == nil {
		return "absent"
	}
	return fmt.Sprint(*p)
}

func loadSchema(t *testing.T) *schemaNode {
	t.Helper()
	data, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	var s schemaNode
	if err := dec.Decode(&s); err != nil {
		t.Fatalf("parse %s: %v", schemaPath, err)
	}
	return &s
}

// jsonFields returns Event's JSON names and the JSON Schema type of each.
func jsonFields(t *testing.T) map[string]string {
	t.Helper()
	out := map[string]string{}
	rt := reflect.TypeFor[Event]()
	for i := range rt.NumField() {
		f := rt.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			t.Fatalf("Event.%s has no json name", f.Name)
		}
		var typ string
		switch {
		case f.Type == reflect.TypeFor[time.Time]():
			typ = "string"
		case f.Type.Kind() == reflect.String:
			typ = "string"
		case f.Type.Kind() == reflect.Float64:
			typ = "number"
		case f.Type.Kind() == reflect.Int:
			typ = "integer"
		case f.Type.Kind() == reflect.Bool:
			typ = "boolean"
		case f.Type.Kind() == reflect.Map:
			typ = "object"
		default:
			t.Fatalf("Event.%s: no JSON Schema type for %s", f.Name, f.Type)
		}
		out[name] = typ
	}
	return out
}

func TestSchemaMatchesEvent(t *testing.T) {
	s := loadSchema(t)
	if s.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$schema: got %q, want draft 2020-12", s.Schema)
	}
	if s.Type != "object" {
		t.Errorf("type: got %q, want object", s.Type)
	}
	fields := jsonFields(t)
	for name, typ := range fields {
		p, ok := s.Properties[name]
		if !ok {
			t.Errorf("schema has no property %q", name)
			continue
		}
		if p.Type != typ {
			t.Errorf("property %q: got type %q, want %q", name, p.Type, typ)
		}
	}
	for name := range s.Properties {
		if _, ok := fields[name]; !ok {
			t.Errorf("schema property %q is not a field of event.Event", name)
		}
	}
	if s.MaxBytes == nil || *s.MaxBytes != MaxSize {
		t.Errorf("x-tenantguard-max-bytes: got %s, want %d", show(s.MaxBytes), MaxSize)
	}
	if string(s.AdditionalProperties) != "true" {
		t.Errorf("additionalProperties: got %s, want true (unknown fields are skipped)", s.AdditionalProperties)
	}
}

// TestSchemaRequired derives the required fields from the code: a field is
// required when leaving it out is missing_field.
func TestSchemaRequired(t *testing.T) {
	s := loadSchema(t)
	v := newTestValidator(t)
	var required []string
	for _, m := range baseMembers {
		var e Event
		err := v.Parse(body(m[0], "-"), testSubject, &e)
		switch reasonOf(err) {
		case ReasonMissingField:
			required = append(required, m[0])
		case "":
		default:
			t.Fatalf("without %s: unexpected %v", m[0], err)
		}
	}
	got := slices.Sorted(slices.Values(s.Required))
	slices.Sort(required)
	if !slices.Equal(got, required) {
		t.Fatalf("required: schema has %v, code requires %v", got, required)
	}
}

func TestSchemaRules(t *testing.T) {
	s := loadSchema(t)
	p := s.Properties
	if p["tenant_id"].Pattern != TenantPattern {
		t.Errorf("tenant_id pattern: got %q, want %q", p["tenant_id"].Pattern, TenantPattern)
	}
	if n := p["id"].MaxLength; n == nil || *n != MaxIDLen {
		t.Errorf("id maxLength: got %s, want %d", show(n), MaxIDLen)
	}
	if n := p["id"].MinLength; n == nil || *n != 1 {
		t.Errorf("id minLength: got %s, want 1", show(n))
	}
	if n := p["attrs"].MaxProperties; n == nil || *n != MaxAttrs {
		t.Errorf("attrs maxProperties: got %s, want %d", show(n), MaxAttrs)
	}
	if got := string(p["attrs"].AdditionalProperties); strings.ReplaceAll(got, " ", "") != `{"type":"string"}` {
		t.Errorf("attrs additionalProperties: got %s, want string values", got)
	}
	// kind: the enum holds the built-in kinds, the pattern the custom ones.
	var enum []string
	var pattern string
	for _, alt := range p["kind"].AnyOf {
		enum = append(enum, alt.Enum...)
		if alt.Pattern != "" {
			pattern = alt.Pattern
		}
	}
	if !slices.Equal(slices.Sorted(slices.Values(enum)), slices.Sorted(slices.Values(BuiltinKinds))) {
		t.Errorf("kind enum: got %v, want %v", enum, BuiltinKinds)
	}
	if pattern != KindPattern {
		t.Errorf("kind pattern: got %q, want %q", pattern, KindPattern)
	}
	if q := p["quantity"]; q.Default != 1.0 || q.Minimum == nil || *q.Minimum != 0 || q.Maximum == nil || *q.Maximum != MaxQuantity {
		t.Errorf("quantity: got default %v range [%s, %s], want 1 and [0, %d]", q.Default, show(q.Minimum), show(q.Maximum), int64(MaxQuantity))
	}
	if l := p["latency_ms"]; l.Minimum == nil || *l.Minimum != 0 || l.Maximum == nil || *l.Maximum != MaxLatencyMs {
		t.Errorf("latency_ms: got [%s, %s], want [0, %v]", show(l.Minimum), show(l.Maximum), MaxLatencyMs)
	}
	if sc := p["status_code"]; sc.Minimum == nil || *sc.Minimum != 0 || sc.Maximum == nil || *sc.Maximum != 999 {
		t.Errorf("status_code: got [%s, %s], want [0, 999]", show(sc.Minimum), show(sc.Maximum))
	}
	if tm := p["time"]; tm.Format != "date-time" {
		t.Errorf("time format: got %q, want date-time", tm.Format)
	}
}

// TestSchemaTimePattern checks the schema's time pattern accepts exactly the
// shapes Decode accepts.
func TestSchemaTimePattern(t *testing.T) {
	re, err := regexp.Compile(loadSchema(t).Properties["time"].Pattern)
	if err != nil {
		t.Fatalf("time pattern: %v", err)
	}
	for _, ts := range []string{
		"2026-11-25T19:00:00Z", "2026-11-25T19:00:00.1Z", "2026-11-25T19:00:00.123456789Z",
		"2026-11-25T19:00:00+02:00", "2026-11-25T19:00:00.5-05:30", "2026-11-25t19:00:00Z",
		"2026-11-25T19:00:00z", "2026-11-25T19:00:00", "2026-11-25 19:00:00Z", "2026-11-25T9:00:00Z",
		"2026-11-25T19:00:00,5Z", "2026-11-25T19:00:00.Z", "2026-11-25T19:00:00+0200", "2026-11-25T19:00Z",
		"26-11-25T19:00:00Z", "2026-11-25T19:00:00+02", "yesterday", "",
	} {
		if got, want := re.MatchString(ts), rfc3339Shape([]byte(ts)); got != want {
			t.Errorf("%q: schema pattern says %v, decoder says %v", ts, got, want)
		}
	}
}

// TestSchemaExamplesAreValid checks each example in the schema passes Parse.
func TestSchemaExamplesAreValid(t *testing.T) {
	s := loadSchema(t)
	if len(s.Examples) == 0 {
		t.Fatal("schema has no examples")
	}
	v := newTestValidator(t)
	for i, ex := range s.Examples {
		var e Event
		if err := Decode(ex, &e); err != nil {
			t.Fatalf("example %d: %v", i, err)
		}
		if err := v.Parse(ex, Subject(e.TenantID, e.Kind), &e); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}

var tableRow = regexp.MustCompile("(?m)^\\| `([a-z_]+)` \\|")

// docSection returns the text of doc from the heading line to the next
// heading of the same or a higher level.
func docSection(t *testing.T, doc []byte, heading string) string {
	t.Helper()
	s := string(doc)
	i := strings.Index(s, "\n"+heading+"\n")
	if i < 0 {
		t.Fatalf("docs/events.md has no heading %q", heading)
	}
	s = s[i+len(heading)+2:]
	level := strings.Repeat("#", strings.Index(heading, " "))
	for j := 0; j < len(s); {
		k := strings.Index(s[j:], "\n#")
		if k < 0 {
			break
		}
		line := s[j+k+1:]
		hashes := len(line) - len(strings.TrimLeft(line, "#"))
		if hashes <= len(level) {
			return s[:j+k]
		}
		j += k + 2
	}
	return s
}

// reasonConstants parses the package's source for every constant of type Reason.
func reasonConstants(t *testing.T) []Reason {
	t.Helper()
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	var out []Reason
	fset := token.NewFileSet()
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
					continue
				}
				for _, val := range vs.Values {
					lit, ok := val.(*ast.BasicLit)
					if !ok {
						t.Fatalf("%s: Reason constant is not a literal", name)
					}
					s, err := strconv.Unquote(lit.Value)
					if err != nil {
						t.Fatal(err)
					}
					out = append(out, Reason(s))
				}
			}
		}
	}
	return out
}

// TestDocsListEveryReason checks docs/events.md has a table row for every
// Reason constant, and no row for a code that does not exist.
func TestDocsListEveryReason(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	consts := reasonConstants(t)
	if len(consts) < 10 {
		t.Fatalf("found only %d Reason constants in the source", len(consts))
	}
	if !slices.Equal(slices.Sorted(slices.Values(consts)), slices.Sorted(slices.Values(allReasons))) {
		t.Errorf("allReasons in corpus_test.go is out of date: source has %v", consts)
	}
	rows := map[Reason]bool{}
	for _, m := range tableRow.FindAllStringSubmatch(docSection(t, doc, "### Reason codes"), -1) {
		rows[Reason(m[1])] = true
	}
	for _, r := range consts {
		if !rows[r] {
			t.Errorf("docs/events.md has no reason table row for %q", r)
		}
		delete(rows, r)
	}
	for r := range rows {
		t.Errorf("docs/events.md has a reason row %q that is not a Reason constant", r)
	}
	// The field table lists exactly the fields of event.Event.
	fieldRows := map[string]bool{}
	for _, m := range tableRow.FindAllStringSubmatch(docSection(t, doc, "## The body"), -1) {
		fieldRows[m[1]] = true
	}
	for name := range jsonFields(t) {
		if !fieldRows[name] {
			t.Errorf("docs/events.md field table has no row for %q", name)
		}
		delete(fieldRows, name)
	}
	for _, k := range BuiltinKinds {
		if !fieldRows[k] {
			t.Errorf("docs/events.md built-in kinds table has no row for %q", k)
		}
		delete(fieldRows, k)
	}
	for name := range fieldRows {
		t.Errorf("docs/events.md lists %q, which is neither a field nor a built-in kind", name)
	}
	for _, want := range []string{TenantPattern, KindPattern, HeaderReason, HeaderSubject, HeaderMsgID, HeaderOriginalMsgID, DLQStream, UsageStream, DLQSubjects, UsageSubjects} {
		if !strings.Contains(string(doc), want) {
			t.Errorf("docs/events.md does not mention %q", want)
		}
	}
}

// TestDocsExamplesAreValid checks the JSON event examples in docs/events.md
// (the ```json blocks and the nats pub body) decode and validate.
func TestDocsExamplesAreValid(t *testing.T) {
	doc, err := os.ReadFile(docPath)
	if err != nil {
		t.Fatal(err)
	}
	blocks := regexp.MustCompile("(?s)```json\n(.*?)```").FindAllSubmatch(doc, -1)
	pub := regexp.MustCompile(`(?m)^  '(\{.*\})'$`).FindAllSubmatch(doc, -1)
	if len(blocks) == 0 || len(pub) == 0 {
		t.Fatalf("found %d json blocks and %d nats pub bodies, want at least one of each", len(blocks), len(pub))
	}
	v := newTestValidator(t, func(r *Rules) { r.Now = func() time.Time { return testNow } })
	for i, b := range append(blocks, pub...) {
		var e Event
		if err := Decode(b[1], &e); err != nil {
			t.Fatalf("example %d: %v\n%s", i, err, b[1])
		}
		if err := v.Parse(b[1], Subject(e.TenantID, e.Kind), &e); err != nil {
			t.Errorf("example %d: %v", i, err)
		}
	}
}
