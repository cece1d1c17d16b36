package pgstat

import (
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
)

// entry is one item of a FROM list (or a DML target): a tenant or plain
// table, or a derived relation (subquery, CTE, view) analysed recursively.
type entry struct {
	id     int
	blk    *block
	alias  string
	schema string
	cols   map[string]bool // nil: columns unknown
	used   map[string]bool // columns referenced from this block

	table *Table // a catalog table (not a view)
	tcol  string // visible name of the tenant column
	cmd   string

	// derived
	sel      *pg.SelectStmt
	selScope *cteScope
	names    []string // output names by position, when fixed by an alias list or view
	lateral  bool
	cte      *cteDef
	view     *Table
	fallback []*Table // tenant base tables of a view that could not be parsed
}

func (e *entry) derived() bool { return e.sel != nil }

// joinInfo holds one join's ON/USING facts and the entries they restrict.
type joinInfo struct {
	quals   *pg.Node
	using   []string
	natural bool
	left    []int
	right   []int
	applies map[int]bool
	facts   []fact
	kind    int
}

const (
	joinInner = iota
	joinLeft
	joinRight
	joinFull
	joinMerge
)

// block is one query level: its FROM entries, join facts and WHERE facts.
type block struct {
	w        *walker
	outer    *block
	ctes     *cteScope
	ents     []*entry
	joins    []*joinInfo
	preds    []*pg.Node
	extra    []*pg.Node // expressions in the FROM list (function arguments)
	facts    []fact
	building bool
	ufs      map[string]*uf
}

func newBlock(w *walker, outer *block, ctes *cteScope) *block {
	return &block{w: w, outer: outer, ctes: ctes, building: true}
}

func (b *block) newEntry(alias string) *entry {
	e := &entry{id: len(b.w.ents), blk: b, alias: alias, cmd: "SELECT"}
	b.w.ents = append(b.w.ents, e)
	b.ents = append(b.ents, e)
	return e
}

func aliasName(a *pg.Alias, def string) string {
	if a != nil && a.Aliasname != "" {
		return a.Aliasname
	}
	return def
}

func aliasCols(a *pg.Alias) []string {
	if a == nil {
		return nil
	}
	var out []string
	for _, c := range a.Colnames {
		out = append(out, c.GetString_().GetSval())
	}
	return out
}

func colSet(names []string) map[string]bool {
	m := make(map[string]bool, len(names))
	for _, n := range names {
		m[n] = true
	}
	return m
}

// rangeVar adds a named relation: a CTE, a view, a table or something
// the catalog does not know.
func (b *block) rangeVar(rv *pg.RangeVar, cmd string) *entry {
	alias := aliasName(rv.Alias, rv.Relname)
	acols := aliasCols(rv.Alias)
	if rv.Schemaname == "" && b.ctes != nil {
		if d := b.ctes.find(rv.Relname); d != nil {
			e := b.newEntry(alias)
			sel := d.query.GetSelectStmt()
			if d.active || sel == nil {
				return e // recursive self-reference or DML CTE: opaque
			}
			e.sel, e.selScope, e.cte = sel, d.scope, d
			e.names = d.cols
			if len(acols) > 0 {
				e.names = acols
			}
			if e.names != nil {
				e.cols = colSet(e.names)
			} else if names := leftNames(sel); !selectHasStar(sel) {
				e.cols = colSet(names)
			}
			return e
		}
	}
	t := b.w.lookup(rv.Schemaname, rv.Relname)
	e := b.newEntry(alias)
	e.schema = rv.Schemaname
	if t == nil {
		return e
	}
	if e.schema == "" {
		e.schema = t.Schema
	}
	names := t.Columns
	if len(acols) > 0 {
		names = append(append([]string(nil), acols...), t.Columns[min(len(acols), len(t.Columns)):]...)
	}
	e.cols = colSet(names)
	if t.Kind == "view" {
		var tenantBase []*Table
		for _, bt := range t.BaseTables {
			if x := b.w.cat.Tables[bt]; x != nil && x.Tenant {
				tenantBase = append(tenantBase, x)
			}
		}
		if len(tenantBase) == 0 {
			return e
		}
		e.view = t
		e.names = names
		if b.w.an != nil && b.w.an.views[t.QName()] != nil {
			e.sel = b.w.an.views[t.QName()]
		} else {
			e.fallback = tenantBase
		}
		return e
	}
	e.table = t
	e.cmd = cmd
	if t.Tenant {
		e.tcol = t.TenantColumn
		for i, c := range t.Columns {
			if c == t.TenantColumn && i < len(acols) {
				e.tcol = acols[i]
			}
		}
	}
	return e
}

func selectHasStar(sel *pg.SelectStmt) bool {
	for sel != nil && sel.Larg != nil {
		sel = sel.Larg
	}
	if sel == nil {
		return true
	}
	for _, n := range sel.TargetList {
		if cr := n.GetResTarget().GetVal().GetColumnRef(); cr != nil && isStar(cr) {
			return true
		}
	}
	return false
}

// target adds the relation a DML statement writes.
func (b *block) target(rv *pg.RangeVar, cmd string) *entry {
	if rv == nil {
		return nil
	}
	return b.rangeVar(rv, cmd)
}

// fromItem adds one FROM item and returns the ids of its entries.
func (b *block) fromItem(n *pg.Node) []int {
	if n == nil || !b.w.tick() {
		return nil
	}
	switch x := n.Node.(type) {
	case *pg.Node_RangeVar:
		return []int{b.rangeVar(x.RangeVar, "SELECT").id}
	case *pg.Node_RangeSubselect:
		rs := x.RangeSubselect
		e := b.newEntry(aliasName(rs.Alias, ""))
		e.lateral = rs.Lateral
		e.selScope = b.ctes
		if sel := rs.Subquery.GetSelectStmt(); sel != nil {
			e.sel = sel
			e.names = aliasCols(rs.Alias)
			if e.names != nil {
				e.cols = colSet(e.names)
			} else if !selectHasStar(sel) {
				e.cols = colSet(leftNames(sel))
			}
		}
		return []int{e.id}
	case *pg.Node_JoinExpr:
		j := x.JoinExpr
		l := b.fromItem(j.Larg)
		r := b.fromItem(j.Rarg)
		ji := &joinInfo{quals: j.Quals, natural: j.IsNatural, left: l, right: r, applies: map[int]bool{}}
		for _, u := range j.UsingClause {
			ji.using = append(ji.using, u.GetString_().GetSval())
		}
		switch j.Jointype {
		case pg.JoinType_JOIN_LEFT:
			ji.kind = joinLeft
			for _, id := range r {
				ji.applies[id] = true
			}
		case pg.JoinType_JOIN_RIGHT:
			ji.kind = joinRight
			for _, id := range l {
				ji.applies[id] = true
			}
		case pg.JoinType_JOIN_FULL:
			ji.kind = joinFull
		default:
			for _, id := range append(append([]int(nil), l...), r...) {
				ji.applies[id] = true
			}
		}
		b.joins = append(b.joins, ji)
		return append(l, r...)
	case *pg.Node_RangeFunction:
		rf := x.RangeFunction
		e := b.newEntry(aliasName(rf.Alias, ""))
		if cols := aliasCols(rf.Alias); cols != nil {
			e.cols = colSet(cols)
		}
		b.extra = append(b.extra, rf.Functions...)
		return []int{e.id}
	case *pg.Node_RangeTableSample:
		b.extra = append(b.extra, x.RangeTableSample.Args...)
		return b.fromItem(x.RangeTableSample.Relation)
	case *pg.Node_RangeTableFunc, *pg.Node_JsonTable:
		e := b.newEntry("")
		b.extra = append(b.extra, n)
		return []int{e.id}
	}
	b.w.fail("unsupported FROM item")
	return nil
}

func (b *block) where(n *pg.Node) {
	if n != nil {
		b.preds = append(b.preds, n)
	}
}

// finish turns predicates into facts, pulls pins up from derived entries
// that predicates reference, and makes pins available.
func (b *block) finish() {
	b.widenInnerJoins()
	for _, j := range b.joins {
		j.facts = b.predFacts(j.quals, j.facts)
		for _, col := range j.using {
			lk, lok := b.findIn(j.left, col)
			rk, rok := b.findIn(j.right, col)
			if lok && rok {
				j.facts = append(j.facts, fact{a: lk, b: rk, eq: true})
			}
		}
		if j.natural {
			for _, id := range j.left {
				for col := range b.w.ents[id].cols {
					lk, lok := b.findIn(j.left, col)
					rk, rok := b.findIn(j.right, col)
					if lok && rok {
						j.facts = append(j.facts, fact{a: lk, b: rk, eq: true})
					}
				}
			}
		}
	}
	for _, p := range b.preds {
		b.facts = b.predFacts(p, b.facts)
	}
	for _, e := range b.ents {
		if !e.derived() || len(e.used) == 0 || b.w.failed != "" {
			continue
		}
		up := b.w.derived(e, nil, true)
		for col := range e.used {
			if p := e.outPin(up, col); p.lvl > ScopeNone {
				b.facts = append(b.facts, fact{a: colKey{e.id, col}, p: p})
			}
		}
	}
	b.building = false
}

// widenInnerJoins: an inner join's ON holds for every row of the nearest
// enclosing nullable side (or of the whole block when there is none).
func (b *block) widenInnerJoins() {
	for i, j := range b.joins {
		if j.kind != joinInner {
			continue
		}
		var scope []int
		found := false
		for _, k := range b.joins[i+1:] {
			for _, side := range k.nullable() {
				if len(j.left) > 0 && containsID(side, j.left[0]) {
					scope, found = side, true
					break
				}
			}
			if found {
				break
			}
		}
		if !found {
			for _, e := range b.ents {
				j.applies[e.id] = true
			}
			continue
		}
		for _, id := range scope {
			j.applies[id] = true
		}
	}
}

func containsID(ids []int, id int) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

func (j *joinInfo) nullable() [][]int {
	switch j.kind {
	case joinLeft:
		return [][]int{j.right}
	case joinRight:
		return [][]int{j.left}
	case joinFull:
		return [][]int{j.left, j.right}
	}
	return nil
}

// findIn finds column col among the entries ids (for USING/NATURAL).
func (b *block) findIn(ids []int, col string) (colKey, bool) {
	for _, id := range ids {
		e := b.w.ents[id]
		if e.cols[col] {
			b.use(e, col)
			return colKey{id, col}, true
		}
	}
	return colKey{}, false
}

func (b *block) use(e *entry, col string) {
	if e.used == nil {
		e.used = map[string]bool{}
	}
	e.used[col] = true
}

// outPin maps a derived entry's column to the pin its query gives it.
func (e *entry) outPin(up *outputs, col string) pinVal {
	if e.names != nil {
		for i, n := range e.names {
			if n == col {
				return up.pin("", i)
			}
		}
		return pinVal{}
	}
	return up.pin(col, -1)
}

func (e *entry) push(col string, p pinVal) pushPin {
	if e.names != nil {
		for i, n := range e.names {
			if n == col {
				return pushPin{pos: i, p: p}
			}
		}
		return pushPin{pos: -1, p: p}
	}
	return pushPin{name: col, pos: -1, p: p}
}

// derived analyses a derived entry's query with the given pushed pins.
func (w *walker) derived(e *entry, push []pushPin, dry bool) *outputs {
	if dry {
		w.dry++
		defer func() { w.dry-- }()
	}
	outer := e.blk.outer
	if e.lateral {
		outer = e.blk
	}
	if e.view != nil {
		saveView, saveRole := w.view, w.asRole
		if w.view == "" {
			w.view = e.view.QName()
		}
		if !e.view.SecurityInvoker && w.cat != nil {
			w.asRole = w.cat.RoleByName(e.view.Owner)
		}
		defer func() { w.view, w.asRole = saveView, saveRole }()
		return w.selectStmt(e.sel, nil, nil, push)
	}
	if e.cte != nil {
		if e.cte.active {
			return nil
		}
		e.cte.active = true
		defer func() { e.cte.active = false }()
		if !dry && w.dry == 0 {
			e.cte.refs++
		}
	}
	return w.selectStmt(e.sel, outer, e.selScope, push)
}

// recordEntries records the verdict on every tenant table of this block
// and analyses derived entries and sublinks with the final pins.
func (b *block) recordEntries() {
	if b.w.dry > 0 {
		return
	}
	for _, e := range b.ents {
		if b.w.failed != "" {
			return
		}
		switch {
		case e.table != nil && e.table.Tenant:
			rls := b.w.rlsProtects(e.table, e.cmd)
			b.w.record(e.table, e.cmd, b.pinOf(colKey{e.id, e.tcol}), rls)
		case e.fallback != nil:
			save := b.w.asRole
			if !e.view.SecurityInvoker && b.w.cat != nil {
				b.w.asRole = b.w.cat.RoleByName(e.view.Owner)
			}
			for _, t := range e.fallback {
				rls := b.w.rlsProtects(t, "SELECT")
				p := pinVal{}
				if rls {
					p = pinVal{ScopeSingle, rlsFP}
				}
				saveView := b.w.view
				b.w.view = e.view.QName()
				b.w.record(t, "SELECT", p, rls)
				b.w.view = saveView
			}
			b.w.asRole = save
		case e.derived():
			var push []pushPin
			for col := range e.used {
				if p := b.pinOf(colKey{e.id, col}); p.lvl > ScopeNone {
					push = append(push, e.push(col, p))
				}
			}
			b.w.derived(e, push, false)
		}
	}
	for _, p := range b.preds {
		b.scanSublinks(p)
	}
	for _, j := range b.joins {
		b.scanSublinks(j.quals)
	}
	for _, x := range b.extra {
		b.scanSublinks(x)
	}
}

// scanSublinks analyses every subquery inside expression n.
func (b *block) scanSublinks(n *pg.Node) {
	if n == nil || b.w.dry > 0 || b.w.failed != "" {
		return
	}
	walkExpr(n, func(s *pg.SubLink) {
		if sel := s.Subselect.GetSelectStmt(); sel != nil {
			b.w.selectStmt(sel, b, b.ctes, nil)
		}
	})
}

// resolveName resolves a column reference to a key, looking in this
// block first and then in enclosing ones (correlation).
func (b *block) resolveName(schema, qual, col string, outerToo bool) (colKey, bool) {
	for blk := b; blk != nil; blk = blk.outer {
		k, found, stop := blk.resolveLocal(schema, qual, col)
		if found {
			return k, true
		}
		if stop || !outerToo {
			break
		}
	}
	return colKey{}, false
}

func (b *block) resolveLocal(schema, qual, col string) (k colKey, found, stop bool) {
	if qual != "" {
		for _, e := range b.ents {
			if e.alias == qual && (schema == "" || e.schema == schema) {
				if e.cols == nil || e.cols[col] {
					b.use(e, col)
					return colKey{e.id, col}, true, false
				}
				return colKey{}, false, true
			}
		}
		return colKey{}, false, false
	}
	var hit, unk *entry
	n, m := 0, 0
	for _, e := range b.ents {
		if e.cols == nil {
			unk = e
			m++
		} else if e.cols[col] {
			hit = e
			n++
		}
	}
	switch {
	case n == 1:
		b.use(hit, col)
		return colKey{hit.id, col}, true, false
	case n > 1:
		return colKey{}, false, true
	case m == 1:
		b.use(unk, col)
		return colKey{unk.id, col}, true, false
	case m > 1:
		return colKey{}, false, true
	}
	return colKey{}, false, false
}

// colKey resolves n when it is a (possibly cast) column reference.
func (b *block) colKey(n *pg.Node) (colKey, bool) {
	cr := strip(n).GetColumnRef()
	if cr == nil {
		return colKey{}, false
	}
	f := make([]string, 0, len(cr.Fields))
	for _, x := range cr.Fields {
		s, ok := x.Node.(*pg.Node_String_)
		if !ok {
			return colKey{}, false
		}
		f = append(f, s.String_.Sval)
	}
	switch len(f) {
	case 1:
		return b.resolveName("", "", f[0], true)
	case 2:
		return b.resolveName("", f[0], f[1], true)
	case 3:
		return b.resolveName(f[0], f[1], f[2], true)
	case 4:
		return b.resolveName(f[1], f[2], f[3], true)
	}
	return colKey{}, false
}

// targetKey finds the key of the output column a pushed pin names.
func (b *block) targetKey(targets []*pg.Node, name string, pos int) (colKey, bool) {
	i := 0
	for _, n := range targets {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && isStar(cr) {
			if name != "" {
				return b.resolveName("", "", name, false)
			}
			return colKey{}, false
		}
		if (name != "" && targetName(rt) == name) || (name == "" && i == pos) {
			return b.colKey(rt.Val)
		}
		i++
	}
	return colKey{}, false
}

// pinOf returns how the column k is pinned for the rows of its entry.
func (b *block) pinOf(k colKey) pinVal {
	e := b.w.ents[k.e]
	if e.blk != b {
		return e.blk.pinOf(k)
	}
	if b.building {
		return pinVal{}
	}
	return b.ufFor(e).pin(k)
}

// ufFor builds (once per distinct fact set) the equivalence classes that
// hold for the rows of entry e: WHERE facts plus the ON facts of every
// join that filters e, seeded with RLS and with outer pins.
func (b *block) ufFor(e *entry) *uf {
	sig := ""
	for i, j := range b.joins {
		if j.applies[e.id] {
			sig += strconv.Itoa(i) + ","
		}
	}
	if u := b.ufs[sig]; u != nil {
		return u
	}
	u := newUF()
	add := func(fs []fact) {
		for _, f := range fs {
			if f.eq {
				u.union(f.a, f.b)
			}
		}
	}
	add(b.facts)
	for _, j := range b.joins {
		if j.applies[e.id] {
			add(j.facts)
		}
	}
	pins := func(fs []fact) {
		for _, f := range fs {
			if !f.eq {
				u.addPin(f.a, f.p)
			}
		}
	}
	pins(b.facts)
	for _, j := range b.joins {
		if j.applies[e.id] {
			pins(j.facts)
		}
	}
	for _, x := range b.ents {
		if x.table != nil && x.table.Tenant && b.w.rlsProtects(x.table, x.cmd) {
			u.addPin(colKey{x.id, x.tcol}, pinVal{ScopeSingle, rlsFP})
		}
	}
	for k := range u.parent {
		if o := b.w.ents[k.e]; o.blk != b {
			u.addPin(k, o.blk.pinOf(k))
		}
	}
	if b.ufs == nil {
		b.ufs = map[string]*uf{}
	}
	b.ufs[sig] = u
	return u
}
