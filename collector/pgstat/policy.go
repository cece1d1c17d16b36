package pgstat

import (
	"strings"

	pg "github.com/pganalyze/pg_query_go/v6"
	"google.golang.org/protobuf/reflect/protoreflect"
)

// parseExpr parses one SQL expression as the catalog prints it.
func parseExpr(text string) *pg.Node {
	if text == "" || len(text) > MaxQueryBytes {
		return nil
	}
	res, err := pg.Parse("SELECT (" + text + ")")
	if err != nil || len(res.Stmts) != 1 {
		return nil
	}
	sel := res.Stmts[0].Stmt.GetSelectStmt()
	if sel == nil || len(sel.TargetList) != 1 {
		return nil
	}
	return sel.TargetList[0].GetResTarget().GetVal()
}

// analyzePolicy fills UsesGUC, Scopes and AlwaysTrue from the policy text.
func analyzePolicy(p *Policy, t *Table, guc string) {
	using, check := parseExpr(p.Using), parseExpr(p.Check)
	p.UsesGUC = nodeReadsGUC(using, guc) || nodeReadsGUC(check, guc)
	p.AlwaysTrue = alwaysTrue(using) || (using == nil && alwaysTrue(check))
	expr := using
	if expr == nil {
		expr = check
	}
	if expr == nil || !t.Tenant {
		return
	}
	w := &walker{}
	b := newBlock(w, nil, nil)
	e := b.newEntry(t.Name)
	e.schema = t.Schema
	e.cols = colSet(t.Columns)
	e.table = t
	e.tcol = t.TenantColumn
	b.where(expr)
	b.finish()
	pin := b.pinOf(colKey{e.id, e.tcol})
	p.Scopes = w.failed == "" && pin.lvl == ScopeSingle && pin.fp == "cs:"+guc
}

// exprReadsGUC reports whether a default expression reads the GUC.
func exprReadsGUC(text, guc string) bool { return nodeReadsGUC(parseExpr(text), guc) }

func nodeReadsGUC(n *pg.Node, guc string) bool {
	if n == nil {
		return false
	}
	found := false
	var visit func(m protoreflect.Message)
	visit = func(m protoreflect.Message) {
		if found {
			return
		}
		if fc, ok := m.Interface().(*pg.FuncCall); ok && funcName(fc) == "current_setting" && len(fc.Args) > 0 {
			if c := strip(fc.Args[0]).GetAConst(); c != nil && constString(c) == guc {
				found = true
				return
			}
		}
		eachChild(m, visit)
	}
	visit(n.ProtoReflect())
	return found
}

// alwaysTrue recognises constant-true conditions: true, 't'::boolean,
// x OR true, col = col.
func alwaysTrue(n *pg.Node) bool {
	if n == nil {
		return false
	}
	switch x := n.Node.(type) {
	case *pg.Node_AConst:
		if bv, ok := x.AConst.Val.(*pg.A_Const_Boolval); ok {
			return bv.Boolval.Boolval
		}
	case *pg.Node_TypeCast:
		if c := x.TypeCast.Arg.GetAConst(); c != nil {
			if _, ok := c.Val.(*pg.A_Const_Boolval); ok {
				return alwaysTrue(x.TypeCast.Arg)
			}
			switch strings.ToLower(constString(c)) {
			case "t", "true", "on", "yes", "y", "1":
				return true
			}
			return false
		}
		return alwaysTrue(x.TypeCast.Arg)
	case *pg.Node_BoolExpr:
		switch x.BoolExpr.Boolop {
		case pg.BoolExprType_OR_EXPR:
			for _, a := range x.BoolExpr.Args {
				if alwaysTrue(a) {
					return true
				}
			}
		case pg.BoolExprType_AND_EXPR:
			for _, a := range x.BoolExpr.Args {
				if !alwaysTrue(a) {
					return false
				}
			}
			return true
		}
	case *pg.Node_AExpr:
		e := x.AExpr
		if e.Kind == pg.A_Expr_Kind_AEXPR_OP && opName(e.Name) == "=" {
			l, r := strip(e.Lexpr), strip(e.Rexpr)
			if lc, rc := l.GetColumnRef(), r.GetColumnRef(); lc != nil && rc != nil {
				return columnText(lc) == columnText(rc)
			}
			if lc, rc := l.GetAConst(), r.GetAConst(); lc != nil && rc != nil && !lc.Isnull && !rc.Isnull {
				return constString(lc) == constString(rc)
			}
		}
	}
	return false
}

func columnText(cr *pg.ColumnRef) string {
	parts := make([]string, 0, len(cr.Fields))
	for _, f := range cr.Fields {
		parts = append(parts, f.GetString_().GetSval())
	}
	return strings.Join(parts, ".")
}
