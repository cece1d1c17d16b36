package pgstat

import (
	"strconv"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// colKey names one column of one entry of the statement.
type colKey struct {
	e   int
	col string
}

// pinVal says how a column is pinned; fp identifies the value for a
// single pin, so that OR branches and UNION branches that pin the same
// value stay single.
type pinVal struct {
	lvl Scope
	fp  string
}

const (
	rlsFP   = "\x00rls"
	unsetFP = "\x00unset"
)

// fact is either a = b (eq) or a pinned to p.
type fact struct {
	a, b colKey
	eq   bool
	p    pinVal
}

// andPin combines two pins that both hold.
func andPin(a, b pinVal) pinVal {
	if b.lvl > a.lvl {
		return b
	}
	return a
}

// orPin combines two pins of which one holds.
func orPin(a, b pinVal) pinVal {
	if a.fp == unsetFP && a.lvl == ScopeSingle {
		return b
	}
	if b.fp == unsetFP && b.lvl == ScopeSingle {
		return a
	}
	if a.lvl == ScopeNone || b.lvl == ScopeNone {
		return pinVal{}
	}
	if a.lvl == ScopeSingle && b.lvl == ScopeSingle && a.fp == b.fp {
		return a
	}
	return pinVal{lvl: ScopeMulti}
}

// uf is a union-find over column keys with a pin per class.
type uf struct {
	parent map[colKey]colKey
	pins   map[colKey]pinVal
}

func newUF() *uf { return &uf{parent: map[colKey]colKey{}, pins: map[colKey]pinVal{}} }

func (u *uf) find(k colKey) colKey {
	p, ok := u.parent[k]
	if !ok {
		u.parent[k] = k
		return k
	}
	if p == k {
		return k
	}
	r := u.find(p)
	u.parent[k] = r
	return r
}

func (u *uf) union(a, b colKey) {
	ra, rb := u.find(a), u.find(b)
	if ra != rb {
		u.parent[ra] = rb
		u.pins[rb] = andPin(u.pins[rb], u.pins[ra])
	}
}

func (u *uf) addPin(k colKey, p pinVal) {
	if p.lvl == ScopeNone {
		return
	}
	r := u.find(k)
	u.pins[r] = andPin(u.pins[r], p)
}

func (u *uf) pin(k colKey) pinVal {
	if _, ok := u.parent[k]; !ok {
		return pinVal{}
	}
	return u.pins[u.find(k)]
}

// strip removes casts and collations around an expression.
func strip(n *pg.Node) *pg.Node {
	for n != nil {
		switch x := n.Node.(type) {
		case *pg.Node_TypeCast:
			n = x.TypeCast.Arg
		case *pg.Node_CollateClause:
			n = x.CollateClause.Arg
		default:
			return n
		}
	}
	return n
}

func opName(names []*pg.Node) string {
	if len(names) == 0 {
		return ""
	}
	return names[len(names)-1].GetString_().GetSval()
}

func funcName(fc *pg.FuncCall) string {
	if len(fc.Funcname) == 0 {
		return ""
	}
	return fc.Funcname[len(fc.Funcname)-1].GetString_().GetSval()
}

// predFacts adds the facts a predicate that holds for every row implies.
func (b *block) predFacts(n *pg.Node, out []fact) []fact {
	if n == nil || !b.w.tick() {
		return out
	}
	switch x := n.Node.(type) {
	case *pg.Node_BoolExpr:
		switch x.BoolExpr.Boolop {
		case pg.BoolExprType_AND_EXPR:
			for _, a := range x.BoolExpr.Args {
				out = b.predFacts(a, out)
			}
		case pg.BoolExprType_OR_EXPR:
			out = append(out, b.orFacts(x.BoolExpr.Args)...)
		}
	case *pg.Node_AExpr:
		out = b.aexprFacts(x.AExpr, out)
	case *pg.Node_SubLink:
		out = b.sublinkFacts(x.SubLink, out)
	}
	return out
}

// orFacts keeps a pin only when every branch pins the same column; a
// branch without a pin (a bare $n, a constant) makes the OR unsafe.
func (b *block) orFacts(args []*pg.Node) []fact {
	var acc map[colKey]pinVal
	for i, a := range args {
		fs := b.predFacts(a, nil)
		u := newUF()
		for _, f := range fs {
			if f.eq {
				u.union(f.a, f.b)
			}
		}
		for _, f := range fs {
			if !f.eq {
				u.addPin(f.a, f.p)
			}
		}
		cur := map[colKey]pinVal{}
		for k := range u.parent {
			if p := u.pin(k); p.lvl > ScopeNone {
				cur[k] = p
			}
		}
		if i == 0 {
			acc = cur
			continue
		}
		for k, p := range acc {
			q, ok := cur[k]
			if !ok {
				delete(acc, k)
				continue
			}
			acc[k] = orPin(p, q)
		}
		if len(acc) == 0 {
			return nil
		}
	}
	out := make([]fact, 0, len(acc))
	for k, p := range acc {
		out = append(out, fact{a: k, p: p})
	}
	return out
}

func (b *block) aexprFacts(e *pg.A_Expr, out []fact) []fact {
	name := opName(e.Name)
	switch e.Kind {
	case pg.A_Expr_Kind_AEXPR_OP, pg.A_Expr_Kind_AEXPR_NOT_DISTINCT:
		if name != "=" {
			return out
		}
		l, r := strip(e.Lexpr), strip(e.Rexpr)
		if lr, rr := l.GetRowExpr(), r.GetRowExpr(); lr != nil && rr != nil && len(lr.Args) == len(rr.Args) {
			for i := range lr.Args {
				out = b.eqFacts(lr.Args[i], rr.Args[i], out)
			}
			return out
		}
		return b.eqFacts(l, r, out)
	case pg.A_Expr_Kind_AEXPR_OP_ANY:
		if name != "=" {
			return out
		}
		k, ok := b.colKey(e.Lexpr)
		if !ok {
			return out
		}
		r := strip(e.Rexpr)
		if arr := r.GetAArrayExpr(); arr != nil {
			if p := b.listPin(arr.Elements); p.lvl > ScopeNone {
				out = append(out, fact{a: k, p: p})
			}
		} else if _, ok := b.safe(r); ok {
			out = append(out, fact{a: k, p: pinVal{lvl: ScopeMulti}})
		}
	case pg.A_Expr_Kind_AEXPR_IN:
		if name != "=" {
			return out
		}
		list := e.Rexpr.GetList()
		if list == nil {
			return out
		}
		if row := strip(e.Lexpr).GetRowExpr(); row != nil {
			for i, arg := range row.Args {
				k, ok := b.colKey(arg)
				if !ok {
					continue
				}
				var items []*pg.Node
				for _, it := range list.Items {
					r := strip(it).GetRowExpr()
					if r == nil || i >= len(r.Args) {
						items = nil
						break
					}
					items = append(items, r.Args[i])
				}
				if p := b.listPin(items); p.lvl > ScopeNone {
					out = append(out, fact{a: k, p: p})
				}
			}
			return out
		}
		if k, ok := b.colKey(e.Lexpr); ok {
			if p := b.listPin(list.Items); p.lvl > ScopeNone {
				out = append(out, fact{a: k, p: p})
			}
		}
	}
	return out
}

// eqFacts handles l = r.
func (b *block) eqFacts(l, r *pg.Node, out []fact) []fact {
	lk, lok := b.colKey(l)
	rk, rok := b.colKey(r)
	switch {
	case lok && rok:
		if lk != rk {
			out = append(out, fact{a: lk, b: rk, eq: true})
		}
	case lok:
		if p, ok := b.valuePin(r); ok {
			out = append(out, fact{a: lk, p: p})
		}
	case rok:
		if p, ok := b.valuePin(l); ok {
			out = append(out, fact{a: rk, p: p})
		}
	}
	return out
}

// valuePin is the pin col = n gives: a safe value, or a scalar subquery
// whose output is pinned.
func (b *block) valuePin(n *pg.Node) (pinVal, bool) {
	if p, ok := b.safe(n); ok {
		return p, true
	}
	if s := strip(n).GetSubLink(); s != nil && s.SubLinkType == pg.SubLinkType_EXPR_SUBLINK {
		if p := b.subPin(s, 0); p.lvl > ScopeNone {
			return p, true
		}
	}
	return pinVal{}, false
}

// listPin pins a column to a list of values: single if they are all the
// same value, multi otherwise; none if any is not a safe value.
func (b *block) listPin(items []*pg.Node) pinVal {
	if len(items) == 0 {
		return pinVal{}
	}
	acc := pinVal{ScopeSingle, unsetFP}
	for _, it := range items {
		p, ok := b.safe(it)
		if !ok {
			return pinVal{}
		}
		acc = orPin(acc, p)
	}
	return acc
}

// sublinkFacts: col IN (SELECT x ...) pins col as tightly as the subquery
// pins x; a subquery that does not restrict x gives nothing.
func (b *block) sublinkFacts(s *pg.SubLink, out []fact) []fact {
	if s.SubLinkType != pg.SubLinkType_ANY_SUBLINK {
		return out
	}
	if op := opName(s.OperName); op != "" && op != "=" {
		return out
	}
	if row := strip(s.Testexpr).GetRowExpr(); row != nil {
		for i, arg := range row.Args {
			if k, ok := b.colKey(arg); ok {
				if p := b.subPin(s, i); p.lvl > ScopeNone {
					out = append(out, fact{a: k, p: p})
				}
			}
		}
		return out
	}
	if k, ok := b.colKey(s.Testexpr); ok {
		if p := b.subPin(s, 0); p.lvl > ScopeNone {
			out = append(out, fact{a: k, p: p})
		}
	}
	return out
}

// subPin analyses a subquery without recording, for its output pin.
func (b *block) subPin(s *pg.SubLink, pos int) pinVal {
	sel := s.Subselect.GetSelectStmt()
	if sel == nil {
		return pinVal{}
	}
	b.w.dry++
	out := b.w.selectStmt(sel, b, b.ctes, nil)
	b.w.dry--
	return out.pin("", pos)
}

// exprPin is how an output expression is pinned.
func (b *block) exprPin(n *pg.Node) pinVal {
	if k, ok := b.colKey(n); ok {
		return b.pinOf(k)
	}
	if p, ok := b.safe(n); ok {
		return p
	}
	return pinVal{}
}

// safe reports whether n is one value for the whole statement: a
// parameter, a constant, current_setting(...), (SELECT <safe>), or an
// expression of those without column references.
func (b *block) safe(n *pg.Node) (pinVal, bool) {
	if n == nil {
		return pinVal{}, false
	}
	switch x := n.Node.(type) {
	case *pg.Node_ParamRef:
		return pinVal{ScopeSingle, "$" + strconv.Itoa(int(x.ParamRef.Number))}, true
	case *pg.Node_AConst:
		if x.AConst.Isnull {
			return pinVal{}, false
		}
		return pinVal{ScopeSingle, "c:" + constString(x.AConst)}, true
	case *pg.Node_TypeCast:
		return b.safe(x.TypeCast.Arg)
	case *pg.Node_CollateClause:
		return b.safe(x.CollateClause.Arg)
	case *pg.Node_FuncCall:
		fc := x.FuncCall
		if fc.AggStar || fc.Over != nil || fc.AggFilter != nil || len(fc.AggOrder) > 0 {
			return pinVal{}, false
		}
		fps := ""
		for _, a := range fc.Args {
			p, ok := b.safe(a)
			if !ok {
				return pinVal{}, false
			}
			fps += p.fp + ","
		}
		if funcName(fc) == "current_setting" && len(fc.Args) > 0 {
			p, _ := b.safe(fc.Args[0])
			name := p.fp
			if len(name) > 2 && name[:2] == "c:" {
				name = name[2:]
			}
			return pinVal{ScopeSingle, "cs:" + name}, true
		}
		return pinVal{ScopeSingle, "f:" + funcName(fc) + "(" + fps + ")"}, true
	case *pg.Node_AExpr:
		e := x.AExpr
		if e.Kind != pg.A_Expr_Kind_AEXPR_OP {
			return pinVal{}, false
		}
		fp := "op:" + opName(e.Name)
		for _, s := range []*pg.Node{e.Lexpr, e.Rexpr} {
			if s == nil {
				continue
			}
			p, ok := b.safe(s)
			if !ok {
				return pinVal{}, false
			}
			fp += "," + p.fp
		}
		return pinVal{ScopeSingle, fp}, true
	case *pg.Node_SubLink:
		s := x.SubLink
		if s.SubLinkType != pg.SubLinkType_EXPR_SUBLINK {
			return pinVal{}, false
		}
		sel := s.Subselect.GetSelectStmt()
		if sel == nil || len(sel.FromClause) > 0 || sel.WhereClause != nil || len(sel.TargetList) != 1 ||
			sel.Op != pg.SetOperation_SETOP_NONE || len(sel.ValuesLists) > 0 {
			return pinVal{}, false
		}
		return b.safe(sel.TargetList[0].GetResTarget().GetVal())
	}
	return pinVal{}, false
}

func constString(c *pg.A_Const) string {
	switch v := c.Val.(type) {
	case *pg.A_Const_Ival:
		return strconv.Itoa(int(v.Ival.Ival))
	case *pg.A_Const_Fval:
		return v.Fval.Fval
	case *pg.A_Const_Sval:
		return v.Sval.Sval
	case *pg.A_Const_Boolval:
		return strconv.FormatBool(v.Boolval.Boolval)
	case *pg.A_Const_Bsval:
		return v.Bsval.Bsval
	}
	return ""
}

// walkExpr calls fn for every SubLink in n, without descending into the
// subqueries themselves. Common nodes are walked directly; anything else
// through protobuf reflection, so that no subquery is ever missed.
func walkExpr(n *pg.Node, fn func(*pg.SubLink)) {
	if n == nil {
		return
	}
	switch x := n.Node.(type) {
	case *pg.Node_ColumnRef, *pg.Node_ParamRef, *pg.Node_AConst, *pg.Node_String_, *pg.Node_Integer,
		*pg.Node_Float, *pg.Node_Boolean, *pg.Node_AStar, *pg.Node_TypeName, *pg.Node_SqlvalueFunction:
	case *pg.Node_SubLink:
		fn(x.SubLink)
		walkExpr(x.SubLink.Testexpr, fn)
	case *pg.Node_AExpr:
		walkExpr(x.AExpr.Lexpr, fn)
		walkExpr(x.AExpr.Rexpr, fn)
	case *pg.Node_BoolExpr:
		walkList(x.BoolExpr.Args, fn)
	case *pg.Node_FuncCall:
		walkList(x.FuncCall.Args, fn)
		walkList(x.FuncCall.AggOrder, fn)
		walkExpr(x.FuncCall.AggFilter, fn)
		if x.FuncCall.Over != nil {
			walkList(x.FuncCall.Over.PartitionClause, fn)
			walkList(x.FuncCall.Over.OrderClause, fn)
		}
	case *pg.Node_TypeCast:
		walkExpr(x.TypeCast.Arg, fn)
	case *pg.Node_ResTarget:
		walkExpr(x.ResTarget.Val, fn)
	case *pg.Node_List:
		walkList(x.List.Items, fn)
	case *pg.Node_NullTest:
		walkExpr(x.NullTest.Arg, fn)
	case *pg.Node_BooleanTest:
		walkExpr(x.BooleanTest.Arg, fn)
	case *pg.Node_SortBy:
		walkExpr(x.SortBy.Node, fn)
	case *pg.Node_CoalesceExpr:
		walkList(x.CoalesceExpr.Args, fn)
	case *pg.Node_RowExpr:
		walkList(x.RowExpr.Args, fn)
	case *pg.Node_AArrayExpr:
		walkList(x.AArrayExpr.Elements, fn)
	case *pg.Node_CaseExpr:
		walkExpr(x.CaseExpr.Arg, fn)
		walkList(x.CaseExpr.Args, fn)
		walkExpr(x.CaseExpr.Defresult, fn)
	case *pg.Node_CaseWhen:
		walkExpr(x.CaseWhen.Expr, fn)
		walkExpr(x.CaseWhen.Result, fn)
	default:
		walkReflect(n.ProtoReflect(), fn)
	}
}

func walkList(ns []*pg.Node, fn func(*pg.SubLink)) {
	for _, n := range ns {
		walkExpr(n, fn)
	}
}

func walkReflect(m protoreflect.Message, fn func(*pg.SubLink)) {
	eachChild(m, func(mm protoreflect.Message) {
		switch x := mm.Interface().(type) {
		case *pg.Node:
			walkExpr(x, fn)
		case *pg.SubLink:
			fn(x)
			walkExpr(x.Testexpr, fn)
		default:
			walkReflect(mm, fn)
		}
	})
}

// eachChild calls visit on every message-typed field of m, each element of
// a repeated one included; maps are skipped.
func eachChild(m protoreflect.Message, visit func(protoreflect.Message)) {
	m.Range(func(fd protoreflect.FieldDescriptor, v protoreflect.Value) bool {
		if fd.Message() == nil || fd.IsMap() {
			return true
		}
		if fd.IsList() {
			l := v.List()
			for i := 0; i < l.Len(); i++ {
				visit(l.Get(i).Message())
			}
			return true
		}
		visit(v.Message())
		return true
	})
}
