// Package configkeys decodes a config struct from merged settings (nested
// maps, as a config file, the environment and flags give them) and reports
// every problem at once, each named by its key path: unknown keys, with
// the closest known key; values of the wrong type, without quoting them;
// durations without a unit; and the fields the config's Validate refuses.
// It also lists every key of a default config (Leaves) and finds
// environment variables that set no key. It knows nothing of
// viper or of tenantguard's keys: cmd/tenantguard hands both in.
package configkeys

import (
	"errors"
	"fmt"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// Decode decodes settings into out, a pointer to a struct tagged for
// mapstructure, and returns every problem, one line each, sorted: unknown
// keys (keys lists every known key path), values that cannot be decoded
// (they keep out's default, so each is named once, for its type), and the
// lines of validate's error for fields that did decode.
func Decode(settings map[string]any, out any, keys []string, validate func() error) []string {
	// Unknown keys are found apart from decoding, so that one does not
	// stop its section from decoding, and the section's checks still run.
	problems := unknownKeys(settings, reflect.TypeOf(out).Elem(), "", keyPrefixes(keys))
	dec, err := mapstructure.NewDecoder(&mapstructure.DecoderConfig{
		Result:           out,
		WeaklyTypedInput: true,
		ZeroFields:       true, // lists and maps from the file replace the defaults'
		DecodeHook: mapstructure.ComposeDecodeHookFunc(
			durationHook,
			mapstructure.StringToSliceHookFunc(","),
		),
	})
	if err != nil {
		return []string{err.Error()}
	}
	decodeErrs, failed := decodeProblems(dec.Decode(settings))
	problems = append(problems, decodeErrs...)
	sort.Strings(problems)
	for _, line := range ErrorLines(validate()) {
		field, _, _ := strings.Cut(line, ": ")
		if !coveredBy(field, failed) {
			problems = append(problems, line)
		}
	}
	return problems
}

// ErrorLines returns the leaves of a tree of joined errors, one line each
// (a newline inside one, say from a key in the file, is escaped).
func ErrorLines(err error) []string {
	if err == nil {
		return nil
	}
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		var out []string
		for _, e := range j.Unwrap() {
			out = append(out, ErrorLines(e)...)
		}
		return out
	}
	return []string{strings.ReplaceAll(err.Error(), "\n", `\n`)}
}

// showKey prints a key path as is, or quoted when it holds anything but
// letters, digits and _ - . [ ] (a key in YAML may hold any text).
func showKey(path string) string {
	if path == "" {
		return `""`
	}
	for _, r := range path {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("_-.[]", r)) {
			return strconv.Quote(path)
		}
	}
	return path
}

var durationType = reflect.TypeOf(time.Duration(0))

// durationHook decodes a duration from text with a unit ("500ms", "5m"),
// as the environment gives it, or from a number, as YAML may: a number must
// be 0, since a bare 5 would be five nanoseconds, never what was meant.
func durationHook(_ reflect.Type, to reflect.Type, data any) (any, error) {
	if to != durationType {
		return data, nil
	}
	switch x := data.(type) {
	case time.Duration:
		return x, nil
	case string:
		s := strings.TrimSpace(x)
		d, err := time.ParseDuration(s)
		if err != nil {
			if _, nerr := strconv.ParseFloat(s, 64); nerr == nil {
				return nil, fmt.Errorf("%s needs a unit, like %ss or %sms", s, s, s)
			}
			return nil, fmt.Errorf("%q is not a duration like 500ms, 30s or 5m", s)
		}
		return d, nil
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64, float32, float64:
		if reflect.ValueOf(x).IsZero() {
			return time.Duration(0), nil
		}
		return nil, fmt.Errorf("%v needs a unit, like %vs or %vms", x, x, x)
	}
	return data, nil
}

// unknownKeys names every key of settings that no field of t (a struct)
// reads, by its full path, with the closest known key when one is near.
func unknownKeys(settings map[string]any, t reflect.Type, path string, known []string) []string {
	var out []string
	for key, val := range settings {
		full := joinKey(path, key)
		f, ok := fieldByKey(t, key)
		if !ok {
			msg := showKey(full) + ": unknown key"
			if near := closest(full, known); near != "" {
				msg += fmt.Sprintf(" (did you mean %s?)", near)
			}
			out = append(out, msg)
			continue
		}
		out = append(out, unknownIn(val, f.Type, full, known)...)
	}
	return out
}

// unknownIn looks for unknown keys in a value read into a field of type t.
func unknownIn(val any, t reflect.Type, path string, known []string) []string {
	switch t.Kind() {
	case reflect.Struct:
		if m, ok := stringMap(val); ok && t != reflect.TypeOf(time.Time{}) {
			return unknownKeys(m, t, path, known)
		}
	case reflect.Map:
		if m, ok := stringMap(val); ok {
			var out []string
			for k, v := range m {
				out = append(out, unknownIn(v, t.Elem(), joinKey(path, k), known)...)
			}
			return out
		}
	case reflect.Slice:
		if list, ok := val.([]any); ok {
			var out []string
			for i, v := range list {
				out = append(out, unknownIn(v, t.Elem(), fmt.Sprintf("%s[%d]", path, i), known)...)
			}
			return out
		}
	}
	return nil
}

func stringMap(v any) (map[string]any, bool) {
	switch m := v.(type) {
	case map[string]any:
		return m, true
	case map[any]any:
		out := make(map[string]any, len(m))
		for k, v := range m {
			out[fmt.Sprint(k)] = v
		}
		return out, true
	}
	return nil, false
}

// fieldByKey finds the field of struct t that the config key reads,
// looking into squashed (embedded) structs, ignoring case as the decoder does.
func fieldByKey(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("mapstructure"), ",")
		if opts == "squash" {
			if sf, ok := fieldByKey(f.Type, key); ok {
				return sf, true
			}
			continue
		}
		if name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		if strings.EqualFold(name, key) {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// decodeProblems flattens the decoder's errors into one line per key, named
// by its full path, and returns the paths whose values failed to decode.
func decodeProblems(err error) (problems, failed []string) {
	if err == nil {
		return nil, nil
	}
	var walk func(error)
	walk = func(e error) {
		var de *mapstructure.DecodeError
		switch x := e.(type) {
		case interface{ Unwrap() []error }:
			for _, c := range x.Unwrap() {
				walk(c)
			}
			return
		case *mapstructure.DecodeError:
			de = x
		default:
			// The decoder wraps several errors in one message: go through it.
			var joined interface{ Unwrap() []error }
			if errors.As(e, &joined) {
				walk(joined.(error))
				return
			}
			if !errors.As(e, &de) {
				problems = append(problems, e.Error())
				return
			}
		}
		path := keyPath(de.Name())
		inner := de.Unwrap()
		if _, ok := inner.(interface{ Unwrap() []error }); ok {
			walk(inner)
			return
		}
		failed = append(failed, path)
		problems = append(problems, showKey(path)+": "+strings.ReplaceAll(describeDecodeError(inner), "\n", `\n`))
	}
	walk(err)
	return problems, failed
}

// describeDecodeError says what a value should have been without quoting
// it, since a misplaced value may be a secret.
func describeDecodeError(err error) string {
	var pe *mapstructure.ParseError
	var ue *mapstructure.UnconvertibleTypeError
	switch {
	case errors.As(err, &pe):
		return "must be " + typeName(pe.Expected.Type())
	case errors.As(err, &ue):
		return fmt.Sprintf("must be %s, not %s", typeName(ue.Expected.Type()), typeName(reflect.TypeOf(ue.Value)))
	}
	return err.Error()
}

func typeName(t reflect.Type) string {
	if t == nil {
		return "empty"
	}
	if t == durationType {
		return "a duration like 30s"
	}
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a whole number"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.Bool:
		return "true or false"
	case reflect.String:
		return "a string"
	case reflect.Slice, reflect.Array:
		return "a list"
	case reflect.Map, reflect.Struct:
		return "a section of keys"
	}
	return t.String()
}

// bracketRE matches the decoder's map-key notation, plans[pro].
var bracketRE = regexp.MustCompile(`\[([^\]]*)\]`)

// keyPath turns the decoder's field name into a config key path:
// pricing.plans[pro] becomes pricing.plans.pro; list indexes stay, as in
// api.tokens[0].
func keyPath(name string) string {
	return bracketRE.ReplaceAllStringFunc(name, func(m string) string {
		inner := m[1 : len(m)-1]
		if _, err := strconv.Atoi(inner); err == nil {
			return m
		}
		return "." + inner
	})
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// coveredBy reports whether field is one of paths or lies under one.
func coveredBy(field string, paths []string) bool {
	for _, p := range paths {
		if field == p || strings.HasPrefix(field, p+".") || strings.HasPrefix(field, p+"[") {
			return true
		}
	}
	return false
}

// keyPrefixes returns every key and every section above one.
func keyPrefixes(keys []string) []string {
	seen := map[string]bool{}
	var out []string
	for _, k := range keys {
		for p := k; p != ""; {
			if !seen[p] {
				seen[p] = true
				out = append(out, p)
			}
			i := strings.LastIndexByte(p, '.')
			if i < 0 {
				break
			}
			p = p[:i]
		}
	}
	sort.Strings(out)
	return out
}

// EnvName is the environment variable of a config key: prefix, then the
// key upper-cased with dots as underscores.
func EnvName(prefix, key string) string {
	return prefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// EnvTypo is a variable that looks like a config key's but sets none, and
// the closest one that does ("" when none is near).
type EnvTypo struct{ Name, Closest string }

func (e EnvTypo) String() string {
	s := e.Name + ": unknown environment variable, ignored"
	if e.Closest != "" {
		s += " (did you mean " + e.Closest + "?)"
	}
	return s
}

// UnknownEnv returns the variables of environ that start with prefix but
// set no config key, except those ignore accepts.
func UnknownEnv(environ []string, prefix string, keys []string, ignore func(name string) bool) []EnvTypo {
	known := make(map[string]bool, len(keys))
	names := make([]string, 0, len(keys))
	for _, k := range keys {
		n := EnvName(prefix, k)
		known[n] = true
		names = append(names, n)
	}
	sort.Strings(names)
	var out []EnvTypo
	for _, kv := range environ {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, prefix) || known[name] || ignore(name) {
			continue
		}
		out = append(out, EnvTypo{Name: name, Closest: closest(name, names)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// closest returns the candidate nearest to s by edit distance, or "" when
// none is near enough to be a likely typo (more than a third of s differs).
func closest(s string, candidates []string) string {
	best, bestD := "", len(s)/3+2
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance counts the insertions, deletions, substitutions and swaps of
// two neighbours that turn a into b (optimal string alignment distance):
// "ulr" is one edit from "url".
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// Leaves calls set with the key path and the value of every leaf of def,
// a struct tagged for mapstructure (squashed structs add their fields to
// the parent's path; a time.Time is a leaf), and returns the key paths.
func Leaves(def any, set func(key string, value any)) []string {
	return leaves(reflect.ValueOf(def), "", set)
}

func leaves(def reflect.Value, prefix string, set func(string, any)) []string {
	var keys []string
	t := def.Type()
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		parts := strings.Split(f.Tag.Get("mapstructure"), ",")
		if len(parts) > 1 && parts[1] == "squash" {
			keys = append(keys, leaves(def.Field(i), prefix, set)...)
			continue
		}
		tag := parts[0]
		if tag == "" || tag == "-" || !f.IsExported() {
			continue
		}
		key := joinKey(prefix, tag)
		fv := def.Field(i)
		if fv.Kind() == reflect.Struct && fv.Type() != reflect.TypeOf(time.Time{}) {
			keys = append(keys, leaves(fv, key, set)...)
			continue
		}
		set(key, fv.Interface())
		keys = append(keys, key)
	}
	return keys
}
