package pgstat

import (
	"fmt"
	"runtime"
	"sort"
	"sync"
	"sync/atomic"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// Scope says how far a statement restricts the rows of a tenant table.
type Scope uint8

const (
	// ScopeNone: rows of any tenant can be read or written.
	ScopeNone Scope = iota
	// ScopeMulti: restricted to a list of tenants (IN, = ANY, OR).
	ScopeMulti
	// ScopeSingle: restricted to one tenant, by predicate or by RLS.
	ScopeSingle
)

func (s Scope) String() string {
	switch s {
	case ScopeSingle:
		return "single"
	case ScopeMulti:
		return "multi"
	}
	return "none"
}

// Class is the verdict on one statement.
type Class string

const (
	ClassClean       Class = "clean"
	ClassUnscoped    Class = "unscoped"
	ClassMultiTenant Class = "multi_tenant"
	ClassUnknown     Class = "unknown"
)

// TableUse is one tenant table that a statement reads or writes.
type TableUse struct {
	Table string `json:"table"`
	// Cmd is SELECT, INSERT, UPDATE, DELETE, MERGE or COPY.
	Cmd   string `json:"cmd"`
	Scope Scope  `json:"scope"`
	// ByRLS: row-level security, not a predicate, restricts the rows.
	ByRLS bool `json:"by_rls,omitempty"`
	// View is the view through which the table is reached, if any.
	View string `json:"view,omitempty"`
}

// Analysis is the verdict on one statement for one role.
type Analysis struct {
	Uses    []TableUse
	Unknown bool
	// Reason explains an unknown verdict.
	Reason string
}

// Class folds the uses into one verdict.
func (a *Analysis) Class() Class {
	if a.Unknown {
		return ClassUnknown
	}
	c := ClassClean
	for _, u := range a.Uses {
		switch u.Scope {
		case ScopeNone:
			return ClassUnscoped
		case ScopeMulti:
			c = ClassMultiTenant
		}
	}
	return c
}

// Unrestricted returns the tenant tables not restricted to one tenant.
func (a *Analysis) Unrestricted() []string {
	set := map[string]bool{}
	for _, u := range a.Uses {
		if u.Scope != ScopeSingle {
			set[u.Table] = true
		}
	}
	out := make([]string, 0, len(set))
	for t := range set {
		out = append(out, t)
	}
	sort.Strings(out)
	return out
}

// MaxQueryBytes bounds the text the analyzer parses; longer is unknown.
const MaxQueryBytes = 1 << 20

// maxCacheEntries bounds the verdict cache; it is cleared when full.
const maxCacheEntries = 200_000

type cacheKey struct {
	queryID int64
	profile string
}

// Analyzer decides, for each statement, whether it restricts every tenant
// table it touches to one tenant. It is bound to one catalog and caches
// verdicts by (queryid, RLS profile of the role), so an unchanged workload
// is parsed once. It is safe for concurrent use.
type Analyzer struct {
	cat      *Catalog
	views    map[string]*pg.SelectStmt
	mu       sync.Mutex
	cache    map[cacheKey]*Analysis
	profiles map[*Role]string
	parses   atomic.Uint64
}

// NewAnalyzer parses the catalog's view definitions and returns an
// analyzer with an empty cache.
func NewAnalyzer(cat *Catalog) *Analyzer {
	a := &Analyzer{cat: cat, views: map[string]*pg.SelectStmt{}, cache: map[cacheKey]*Analysis{}, profiles: map[*Role]string{}}
	for name, t := range cat.Tables {
		if t.Kind != "view" || t.ViewDef == "" {
			continue
		}
		res, err := pg.Parse(t.ViewDef)
		if err != nil || len(res.Stmts) != 1 {
			continue // resolved through BaseTables instead
		}
		if sel := res.Stmts[0].Stmt.GetSelectStmt(); sel != nil {
			a.views[name] = sel
		}
	}
	return a
}

// Catalog returns the catalog the analyzer is bound to.
func (a *Analyzer) Catalog() *Catalog { return a.cat }

// Parses counts statement texts parsed so far (cache misses).
func (a *Analyzer) Parses() uint64 { return a.parses.Load() }

// Analyze returns the verdict on text run by role (nil: unknown role, so
// RLS is assumed not to apply). A queryID of 0 disables the cache.
func (a *Analyzer) Analyze(queryID int64, text string, role *Role) *Analysis {
	if queryID == 0 {
		return a.analyze(text, role)
	}
	a.mu.Lock()
	prof, ok := a.profiles[role]
	if !ok {
		prof = a.cat.rlsProfile(role)
		a.profiles[role] = prof
	}
	key := cacheKey{queryID, prof}
	if r, ok := a.cache[key]; ok {
		a.mu.Unlock()
		return r
	}
	a.mu.Unlock()
	r := a.analyze(text, role)
	a.mu.Lock()
	if len(a.cache) >= maxCacheEntries {
		a.cache = map[cacheKey]*Analysis{}
	}
	a.cache[key] = r
	a.mu.Unlock()
	return r
}

func (a *Analyzer) analyze(text string, role *Role) (res *Analysis) {
	if len(text) > MaxQueryBytes {
		return &Analysis{Unknown: true, Reason: fmt.Sprintf("query text longer than %d bytes", MaxQueryBytes)}
	}
	a.parses.Add(1)
	tree, err := pg.Parse(text)
	if err != nil {
		return &Analysis{Unknown: true, Reason: "parse: " + err.Error()}
	}
	w := &walker{cat: a.cat, an: a, role: role, asRole: role}
	defer func() {
		if p := recover(); p != nil {
			res = &Analysis{Unknown: true, Reason: fmt.Sprintf("internal error: %v", p)}
		}
	}()
	for _, raw := range tree.Stmts {
		w.stmt(raw.Stmt, nil)
	}
	if w.failed != "" {
		return &Analysis{Unknown: true, Reason: w.failed}
	}
	return &Analysis{Uses: mergeUses(w.uses)}
}

// mergeUses keeps, per (table, cmd, view), the weakest scope seen.
func mergeUses(uses []TableUse) []TableUse {
	type k struct{ table, cmd, view string }
	idx := map[k]int{}
	var out []TableUse
	for _, u := range uses {
		key := k{u.Table, u.Cmd, u.View}
		if i, ok := idx[key]; ok {
			if u.Scope < out[i].Scope {
				out[i] = u
			}
			continue
		}
		idx[key] = len(out)
		out = append(out, u)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Table != out[j].Table {
			return out[i].Table < out[j].Table
		}
		if out[i].Cmd != out[j].Cmd {
			return out[i].Cmd < out[j].Cmd
		}
		return out[i].View < out[j].View
	})
	return out
}

type analyzed struct {
	stmt *Stmt
	res  *Analysis
}

// analyzeAll analyses the statements called at least minCalls times, on
// all CPUs when there are many cache misses. A statement whose text is
// unavailable is unknown.
func analyzeAll(an *Analyzer, stmts []Stmt, cat *Catalog, minCalls uint64) []analyzed {
	out := make([]analyzed, 0, len(stmts))
	for i := range stmts {
		if stmts[i].Calls >= minCalls {
			out = append(out, analyzed{stmt: &stmts[i]})
		}
	}
	one := func(a *analyzed) {
		if a.stmt.Text == "" {
			a.res = &Analysis{Unknown: true, Reason: "query text unavailable"}
			return
		}
		a.res = an.Analyze(a.stmt.QueryID, a.stmt.Text, cat.Roles[a.stmt.UserID])
	}
	workers := runtime.GOMAXPROCS(0)
	if len(out) < 256 || workers < 2 {
		for i := range out {
			one(&out[i])
		}
		return out
	}
	var wg sync.WaitGroup
	next := atomic.Int64{}
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= len(out) {
					return
				}
				one(&out[i])
			}
		}()
	}
	wg.Wait()
	return out
}
