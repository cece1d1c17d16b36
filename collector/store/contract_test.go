package store

import (
	"context"
	"slices"
	"strings"
	"testing"
)

// TestWritersListEveryColumn checks each writer's column list against the
// migrated schema: it names exactly the table's columns that have no
// DEFAULT, MATERIALIZED or ALIAS expression, so a migration that adds a
// column fails here until the writer writes it. Every table has a writer,
// except usage_1m and usage_1h, whose views must each produce exactly
// their columns.
func TestWritersListEveryColumn(t *testing.T) {
	st := openTest(t)
	writers := InsertColumns()
	// The views of the rollups, the tables without a writer, by view.
	rollupViews := map[string]string{
		"usage_1m_mv":             "usage_1m",
		"usage_1m_corrections_mv": "usage_1m",
		"usage_1h_mv":             "usage_1h",
		"usage_1h_corrections_mv": "usage_1h",
	}
	for _, tbl := range tablesOf(t, st) {
		switch {
		case tbl.engine == "MaterializedView":
			target, ok := rollupViews[tbl.name]
			if !ok {
				t.Errorf("view %s: not a known view of a rollup; add it to the contract", tbl.name)
				continue
			}
			_, view := describe(t, st, tbl.name)
			if diff := columnDiff(t, st, target, view); diff != "" {
				t.Errorf("view %s writes %s: %s", tbl.name, target, diff)
			}
		case tbl.name == "usage_1m", tbl.name == "usage_1h":
		default:
			cols, ok := writers[tbl.name]
			if !ok {
				t.Errorf("table %s: no writer in InsertColumns", tbl.name)
				continue
			}
			if diff := columnDiff(t, st, tbl.name, splitColumns(cols)); diff != "" {
				t.Errorf("writer of %s: %s", tbl.name, diff)
			}
		}
	}
	for name := range writers {
		if !slices.ContainsFunc(tablesOf(t, st), func(tb table) bool { return tb.name == name }) {
			t.Errorf("InsertColumns names %s, which the migrations do not create", name)
		}
	}
}

// TestColumnDiffCatchesANewColumn shows the contract failing: a column
// added without a default is missing from the writer's list, one with a
// default or a MATERIALIZED expression is not required (nor may it be
// listed), and a list naming a column the table lacks, or one twice, is
// caught too.
func TestColumnDiffCatchesANewColumn(t *testing.T) {
	st := openTest(t)
	ctx := context.Background()
	for _, stmt := range []string{
		"ALTER TABLE " + st.Table("anomalies") + " ADD COLUMN added String",
		"ALTER TABLE " + st.Table("anomalies") + " ADD COLUMN with_default String DEFAULT 'x'",
		"ALTER TABLE " + st.Table("anomalies") + " ADD COLUMN derived UInt64 MATERIALIZED length(summary)",
	} {
		if err := st.Conn().Exec(ctx, stmt); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name string
		cols []string
		want string
	}{
		{"writer without the new column", splitColumns(AnomalyColumns), "does not list added"},
		{"writer with it", append(splitColumns(AnomalyColumns), "added"), ""},
		{"writer with a column the table lacks", append(splitColumns(AnomalyColumns), "added", "gone"), "lists gone"},
		{"writer naming a column with a default", append(splitColumns(AnomalyColumns), "added", "with_default"), "lists with_default, which the table computes"},
		{"writer naming a column twice", append(splitColumns(AnomalyColumns), "added", "added"), "lists added twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := columnDiff(t, st, "anomalies", tc.cols)
			if tc.want == "" && got != "" || !strings.Contains(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}
}

type table struct{ name, engine string }

func tablesOf(t *testing.T, st *Store) []table {
	t.Helper()
	rows, err := st.Conn().Query(context.Background(), "SELECT name, engine FROM system.tables WHERE database = ? ORDER BY name", st.Database())
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var out []table
	for rows.Next() {
		var tb table
		if err := rows.Scan(&tb.name, &tb.engine); err != nil {
			t.Fatal(err)
		}
		out = append(out, tb)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// describe returns a table's columns that an insert must give (no
// default_type) and all its columns, from DESCRIBE TABLE.
func describe(t *testing.T, st *Store, name string) (required, all []string) {
	t.Helper()
	rows, err := st.Conn().Query(context.Background(), "DESCRIBE TABLE "+st.Table(name))
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	cols := rows.Columns()
	nameAt, kindAt := slices.Index(cols, "name"), slices.Index(cols, "default_type")
	if nameAt < 0 || kindAt < 0 {
		t.Fatalf("DESCRIBE TABLE %s: columns %v, want name and default_type", name, cols)
	}
	for rows.Next() {
		vals := make([]any, len(cols))
		for i := range vals {
			vals[i] = new(string)
		}
		if err := rows.Scan(vals...); err != nil {
			t.Fatal(err)
		}
		col := *vals[nameAt].(*string)
		all = append(all, col)
		if *vals[kindAt].(*string) == "" {
			required = append(required, col)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return required, all
}

// columnDiff says how cols differs from the columns of table an insert
// must give; "" when they match.
func columnDiff(t *testing.T, st *Store, table string, cols []string) string {
	t.Helper()
	required, all := describe(t, st, table)
	var diffs []string
	for _, c := range required {
		if !slices.Contains(cols, c) {
			diffs = append(diffs, "does not list "+c)
		}
	}
	seen := map[string]bool{}
	for _, c := range cols {
		switch {
		case seen[c]:
			diffs = append(diffs, "lists "+c+" twice")
		case !slices.Contains(all, c):
			diffs = append(diffs, "lists "+c+", which the table lacks")
		case !slices.Contains(required, c):
			diffs = append(diffs, "lists "+c+", which the table computes")
		}
		seen[c] = true
	}
	return strings.Join(diffs, "; ")
}

func splitColumns(list string) []string {
	var out []string
	for _, c := range strings.Split(list, ",") {
		out = append(out, strings.TrimSpace(c))
	}
	return out
}
