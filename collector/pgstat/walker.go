package pgstat

import (
	pg "github.com/pganalyze/pg_query_go/v6"
)

// Limits that turn pathological input into an unknown verdict.
const (
	maxDepth = 64
	maxSteps = 50_000
)

// walker analyses one statement text for one role.
type walker struct {
	cat    *Catalog
	an     *Analyzer
	role   *Role // the role that ran the statement
	asRole *Role // the role RLS is checked for: a view's owner inside a view
	view   string
	uses   []TableUse
	dry    int // > 0 while computing facts only: nothing is recorded
	depth  int
	steps  int
	failed string
	nextID int
	ents   []*entry
}

func (w *walker) fail(reason string) {
	if w.failed == "" {
		w.failed = reason
	}
}

// tick counts work and reports whether the walk should go on.
func (w *walker) tick() bool {
	w.steps++
	if w.steps > maxSteps {
		w.fail("statement too complex to analyse")
	}
	return w.failed == ""
}

func (w *walker) lookup(schema, name string) *Table {
	if w.cat == nil {
		return nil
	}
	return w.cat.lookup(schema, name)
}

// rlsProtects reports whether RLS restricts the current role on t for cmd.
func (w *walker) rlsProtects(t *Table, cmd string) bool {
	if w.cat == nil {
		return false
	}
	if cmd == "MERGE" {
		return w.cat.RLSProtects(t, w.asRole, "SELECT") && w.cat.RLSProtects(t, w.asRole, "UPDATE") &&
			w.cat.RLSProtects(t, w.asRole, "DELETE")
	}
	return w.cat.RLSProtects(t, w.asRole, cmd)
}

func (w *walker) record(t *Table, cmd string, p pinVal, rls bool) {
	if w.dry > 0 {
		return
	}
	w.uses = append(w.uses, TableUse{Table: t.QName(), Cmd: cmd, Scope: p.lvl, ByRLS: rls && p.lvl == ScopeSingle && p.fp == rlsFP, View: w.view})
}

// cteScope is the set of CTE names visible at a point of the statement.
type cteScope struct {
	parent *cteScope
	defs   map[string]*cteDef
}

type cteDef struct {
	name   string
	query  *pg.Node
	cols   []string
	scope  *cteScope
	active bool
	refs   int
}

func (s *cteScope) find(name string) *cteDef {
	for ; s != nil; s = s.parent {
		if d := s.defs[name]; d != nil {
			return d
		}
	}
	return nil
}

// withClause makes the scope of a WITH; data-modifying CTEs run whether
// referenced or not, so they are analysed here.
func (w *walker) withClause(wc *pg.WithClause, parent *cteScope) *cteScope {
	if wc == nil || len(wc.Ctes) == 0 {
		return parent
	}
	s := &cteScope{parent: parent, defs: map[string]*cteDef{}}
	for _, n := range wc.Ctes {
		c := n.GetCommonTableExpr()
		if c == nil {
			continue
		}
		d := &cteDef{name: c.Ctename, query: c.Ctequery, scope: s}
		for _, cn := range c.Aliascolnames {
			d.cols = append(d.cols, cn.GetString_().GetSval())
		}
		s.defs[c.Ctename] = d
	}
	for _, n := range wc.Ctes {
		c := n.GetCommonTableExpr()
		if c == nil || c.Ctequery.GetSelectStmt() != nil {
			continue
		}
		d := s.defs[c.Ctename]
		d.active = true
		w.stmt(c.Ctequery, s)
		d.active = false
	}
	return s
}

// finishCTEs analyses SELECT CTEs that nothing referenced, so that a
// tenant table inside one is never skipped.
func (w *walker) finishCTEs(s, parent *cteScope) {
	if w.dry > 0 || s == parent || s == nil {
		return
	}
	for _, d := range s.defs {
		if d.refs == 0 && !d.active {
			if sel := d.query.GetSelectStmt(); sel != nil {
				d.active = true
				d.refs++
				w.selectStmt(sel, nil, d.scope, nil)
				d.active = false
			}
		}
	}
}

// stmt analyses one statement; utility statements are ignored except COPY.
func (w *walker) stmt(n *pg.Node, ctes *cteScope) {
	if n == nil || !w.tick() {
		return
	}
	w.depth++
	defer func() { w.depth-- }()
	if w.depth > maxDepth {
		w.fail("statement nested too deeply")
		return
	}
	switch x := n.Node.(type) {
	case *pg.Node_SelectStmt:
		w.selectStmt(x.SelectStmt, nil, ctes, nil)
	case *pg.Node_InsertStmt:
		w.insertStmt(x.InsertStmt, ctes)
	case *pg.Node_UpdateStmt:
		w.updateStmt(x.UpdateStmt, ctes)
	case *pg.Node_DeleteStmt:
		w.deleteStmt(x.DeleteStmt, ctes)
	case *pg.Node_MergeStmt:
		w.mergeStmt(x.MergeStmt, ctes)
	case *pg.Node_CopyStmt:
		c := x.CopyStmt
		if c.IsFrom {
			return
		}
		if c.Query != nil {
			w.stmt(c.Query, ctes)
			return
		}
		if rv := c.Relation; rv != nil {
			if t := w.lookup(rv.Schemaname, rv.Relname); t != nil {
				w.copyTable(t)
			}
		}
	case *pg.Node_CreateTableAsStmt:
		w.stmt(x.CreateTableAsStmt.Query, ctes)
	case *pg.Node_DeclareCursorStmt:
		w.stmt(x.DeclareCursorStmt.Query, ctes)
	case *pg.Node_ExplainStmt:
		// EXPLAIN ANALYZE runs the statement; pg_stat_statements then
		// records it as its own nested entry, analysed on its own.
	}
}

func (w *walker) copyTable(t *Table) {
	if t.Kind == "view" {
		return // COPY view TO is an error in Postgres
	}
	if !t.Tenant {
		return
	}
	if w.rlsProtects(t, "SELECT") {
		w.record(t, "COPY", pinVal{ScopeSingle, rlsFP}, true)
		return
	}
	w.record(t, "COPY", pinVal{}, false)
}

// outputs describes the columns a SELECT returns and how each is pinned.
type outputs struct {
	names []string
	pins  []pinVal
	// byName resolves a name hidden behind *; nil when there is no *.
	byName func(string) pinVal
}

func (o *outputs) pin(name string, pos int) pinVal {
	if o == nil {
		return pinVal{}
	}
	if name != "" {
		for i, n := range o.names {
			if n == name && i < len(o.pins) {
				return o.pins[i]
			}
		}
		if o.byName != nil {
			return o.byName(name)
		}
		return pinVal{}
	}
	if pos >= 0 && pos < len(o.pins) {
		return o.pins[pos]
	}
	return pinVal{}
}

// pushPin is a pin the enclosing query puts on a subquery's output column.
type pushPin struct {
	name string
	pos  int
	p    pinVal
}

// selectStmt analyses a SELECT (or set operation, or VALUES) whose
// correlated references resolve in outer, and returns its outputs.
func (w *walker) selectStmt(sel *pg.SelectStmt, outer *block, ctes *cteScope, push []pushPin) *outputs {
	if sel == nil || !w.tick() {
		return nil
	}
	w.depth++
	defer func() { w.depth-- }()
	if w.depth > maxDepth {
		w.fail("statement nested too deeply")
		return nil
	}
	scope := w.withClause(sel.WithClause, ctes)
	defer w.finishCTEs(scope, ctes)

	if sel.Op != pg.SetOperation_SETOP_NONE && sel.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		return w.setOp(sel, outer, scope, push)
	}
	if len(sel.ValuesLists) > 0 {
		return w.valuesList(sel.ValuesLists, outer, scope)
	}

	b := newBlock(w, outer, scope)
	for _, f := range sel.FromClause {
		b.fromItem(f)
	}
	b.where(sel.WhereClause)
	b.where(sel.HavingClause)
	// Pins the enclosing query pushes into this one.
	for _, pp := range push {
		if k, ok := b.targetKey(sel.TargetList, pp.name, pp.pos); ok {
			b.facts = append(b.facts, fact{a: k, p: pp.p})
		}
	}
	b.finish()
	for _, n := range sel.TargetList {
		b.scanSublinks(n)
	}
	for _, n := range sel.GroupClause {
		b.scanSublinks(n)
	}
	for _, n := range sel.SortClause {
		b.scanSublinks(n)
	}
	for _, n := range sel.DistinctClause {
		b.scanSublinks(n)
	}
	for _, n := range sel.WindowClause {
		b.scanSublinks(n)
	}
	b.scanSublinks(sel.LimitCount)
	b.scanSublinks(sel.LimitOffset)
	b.recordEntries()

	out := &outputs{}
	hasStar := false
	for _, n := range sel.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && isStar(cr) {
			hasStar = true
			// The names a * expands to are unknown here; positions after it are too.
			break
		}
		out.names = append(out.names, targetName(rt))
		out.pins = append(out.pins, b.exprPin(rt.Val))
	}
	if hasStar {
		out.byName = func(name string) pinVal {
			if k, ok := b.resolveName("", "", name, false); ok {
				return b.pinOf(k)
			}
			return pinVal{}
		}
	}
	return out
}

func isStar(cr *pg.ColumnRef) bool {
	for _, f := range cr.Fields {
		if f.GetAStar() != nil {
			return true
		}
	}
	return false
}

// targetName is the output name Postgres gives a target.
func targetName(rt *pg.ResTarget) string {
	if rt.Name != "" {
		return rt.Name
	}
	if cr := rt.Val.GetColumnRef(); cr != nil && len(cr.Fields) > 0 {
		return cr.Fields[len(cr.Fields)-1].GetString_().GetSval()
	}
	if fc := rt.Val.GetFuncCall(); fc != nil && len(fc.Funcname) > 0 {
		return fc.Funcname[len(fc.Funcname)-1].GetString_().GetSval()
	}
	if tc := rt.Val.GetTypeCast(); tc != nil {
		if cr := tc.Arg.GetColumnRef(); cr != nil && len(cr.Fields) > 0 {
			return cr.Fields[len(cr.Fields)-1].GetString_().GetSval()
		}
	}
	return ""
}

// setOp analyses UNION/INTERSECT/EXCEPT: every branch needs its own
// restriction; an output is pinned only when every branch pins it.
func (w *walker) setOp(sel *pg.SelectStmt, outer *block, ctes *cteScope, push []pushPin) *outputs {
	names := leftNames(sel)
	var pos []pushPin
	for _, pp := range push {
		i := pp.pos
		if pp.name != "" {
			i = -1
			for j, n := range names {
				if n == pp.name {
					i = j
					break
				}
			}
		}
		if i >= 0 {
			pos = append(pos, pushPin{pos: i, p: pp.p})
		}
	}
	l := w.selectStmt(sel.Larg, outer, ctes, pos)
	r := w.selectStmt(sel.Rarg, outer, ctes, pos)
	out := &outputs{names: names}
	for i := range names {
		lp, rp := l.pin("", i), r.pin("", i)
		if sel.Op == pg.SetOperation_SETOP_INTERSECT {
			out.pins = append(out.pins, andPin(lp, rp))
		} else if sel.Op == pg.SetOperation_SETOP_EXCEPT {
			out.pins = append(out.pins, lp)
		} else {
			out.pins = append(out.pins, orPin(lp, rp))
		}
	}
	return out
}

func leftNames(sel *pg.SelectStmt) []string {
	for sel != nil && sel.Larg != nil && sel.Op != pg.SetOperation_SETOP_NONE && sel.Op != pg.SetOperation_SET_OPERATION_UNDEFINED {
		sel = sel.Larg
	}
	if sel == nil {
		return nil
	}
	if len(sel.ValuesLists) > 0 {
		if l := sel.ValuesLists[0].GetList(); l != nil {
			names := make([]string, len(l.Items))
			for i := range names {
				names[i] = "column" + itoa(i+1)
			}
			return names
		}
	}
	var names []string
	for _, n := range sel.TargetList {
		rt := n.GetResTarget()
		if rt == nil {
			continue
		}
		if cr := rt.Val.GetColumnRef(); cr != nil && isStar(cr) {
			break
		}
		names = append(names, targetName(rt))
	}
	return names
}

func itoa(i int) string {
	if i < 10 {
		return string(rune('0' + i))
	}
	return itoa(i/10) + string(rune('0'+i%10))
}

// valuesList returns the pins of a VALUES list: a column is pinned when
// every row gives it a safe value.
func (w *walker) valuesList(rows []*pg.Node, outer *block, ctes *cteScope) *outputs {
	b := newBlock(w, outer, ctes)
	b.finish()
	var out *outputs
	for _, r := range rows {
		l := r.GetList()
		if l == nil {
			continue
		}
		if out == nil {
			out = &outputs{}
			for i := range l.Items {
				out.names = append(out.names, "column"+itoa(i+1))
				out.pins = append(out.pins, pinVal{lvl: ScopeSingle, fp: unsetFP})
			}
		}
		for i, it := range l.Items {
			b.scanSublinks(it)
			if i < len(out.pins) {
				out.pins[i] = orPin(out.pins[i], b.exprPin(it))
			}
		}
	}
	return out
}

// insertStmt: the target is scoped when every inserted row gets a safe
// tenant value (or the column defaults to the tenant GUC).
func (w *walker) insertStmt(ins *pg.InsertStmt, ctes *cteScope) {
	scope := w.withClause(ins.WithClause, ctes)
	defer w.finishCTEs(scope, ctes)
	var src *outputs
	if sel := ins.SelectStmt.GetSelectStmt(); sel != nil {
		src = w.selectStmt(sel, nil, scope, nil)
	}
	b := newBlock(w, nil, scope)
	b.finish()
	if oc := ins.OnConflictClause; oc != nil {
		for _, n := range oc.TargetList {
			b.scanSublinks(n)
		}
		b.scanSublinks(oc.WhereClause)
	}
	for _, n := range ins.ReturningList {
		b.scanSublinks(n)
	}
	rv := ins.Relation
	if rv == nil {
		return
	}
	t := w.lookup(rv.Schemaname, rv.Relname)
	if t == nil || t.Kind == "view" || !t.Tenant {
		return
	}
	pos := -1
	if len(ins.Cols) > 0 {
		for i, c := range ins.Cols {
			if c.GetResTarget().GetName() == t.TenantColumn {
				pos = i
			}
		}
	} else {
		for i, c := range t.Columns {
			if c == t.TenantColumn {
				pos = i
			}
		}
	}
	var p pinVal
	switch {
	case pos < 0 && t.TenantDefaultGUC:
		p = pinVal{ScopeSingle, "default"}
	case pos >= 0 && src != nil:
		p = src.pin("", pos)
	}
	if p.lvl == ScopeSingle && p.fp == unsetFP {
		p = pinVal{}
	}
	if p.lvl == ScopeMulti && len(ins.SelectStmt.GetSelectStmt().GetValuesLists()) > 0 {
		// Each VALUES row carries its own explicit tenant: nothing is read.
		p = pinVal{ScopeSingle, "values"}
	}
	if p.lvl != ScopeSingle && w.rlsProtects(t, "INSERT") {
		w.record(t, "INSERT", pinVal{ScopeSingle, rlsFP}, true)
		return
	}
	w.record(t, "INSERT", p, false)
}

func (w *walker) updateStmt(u *pg.UpdateStmt, ctes *cteScope) {
	scope := w.withClause(u.WithClause, ctes)
	defer w.finishCTEs(scope, ctes)
	b := newBlock(w, nil, scope)
	b.target(u.Relation, "UPDATE")
	for _, f := range u.FromClause {
		b.fromItem(f)
	}
	b.where(u.WhereClause)
	b.finish()
	for _, n := range u.TargetList {
		b.scanSublinks(n)
	}
	for _, n := range u.ReturningList {
		b.scanSublinks(n)
	}
	b.recordEntries()
}

func (w *walker) deleteStmt(d *pg.DeleteStmt, ctes *cteScope) {
	scope := w.withClause(d.WithClause, ctes)
	defer w.finishCTEs(scope, ctes)
	b := newBlock(w, nil, scope)
	b.target(d.Relation, "DELETE")
	for _, f := range d.UsingClause {
		b.fromItem(f)
	}
	b.where(d.WhereClause)
	b.finish()
	for _, n := range d.ReturningList {
		b.scanSublinks(n)
	}
	b.recordEntries()
}

// mergeStmt: the ON condition restricts the target rows that are matched;
// the source is read in full (unmatched source rows are inserted).
func (w *walker) mergeStmt(m *pg.MergeStmt, ctes *cteScope) {
	scope := w.withClause(m.WithClause, ctes)
	defer w.finishCTEs(scope, ctes)
	b := newBlock(w, nil, scope)
	tgt := b.target(m.Relation, "MERGE")
	b.fromItem(m.SourceRelation)
	bySource := false
	for _, n := range m.MergeWhenClauses {
		if c := n.GetMergeWhenClause(); c != nil && c.MatchKind == pg.MergeMatchKind_MERGE_WHEN_NOT_MATCHED_BY_SOURCE {
			bySource = true
		}
	}
	if tgt != nil && !bySource {
		j := &joinInfo{applies: map[int]bool{tgt.id: true}, quals: m.JoinCondition, kind: joinMerge}
		b.joins = append(b.joins, j)
	}
	b.finish()
	for _, n := range m.MergeWhenClauses {
		if c := n.GetMergeWhenClause(); c != nil {
			b.scanSublinks(c.Condition)
			for _, t := range c.TargetList {
				b.scanSublinks(t)
			}
			for _, v := range c.Values {
				b.scanSublinks(v)
			}
		}
	}
	b.recordEntries()
}
