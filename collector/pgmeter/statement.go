package pgmeter

import (
	"sync"
	"sync/atomic"
)

// statement is what a query's event says about its SQL.
type statement struct {
	op string
	fp uint64
}

// statements caches the operation and fingerprint of up to max SQL texts.
type statements struct {
	m   sync.Map // SQL text -> *statement
	n   atomic.Int64
	max int64
}

func (s *statements) get(sql string) *statement {
	if v, ok := s.m.Load(sql); ok {
		return v.(*statement)
	}
	st := &statement{op: Operation(sql), fp: Fingerprint(sql)}
	if s.n.Load() < s.max {
		if v, loaded := s.m.LoadOrStore(sql, st); loaded {
			return v.(*statement)
		}
		s.n.Add(1)
	}
	return st
}

// Fingerprint is the 64-bit FNV-1a hash of the SQL text as given.
func Fingerprint(sql string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(sql); i++ {
		h ^= uint64(sql[i])
		h *= 1099511628211
	}
	return h
}

// Operation returns the command of a SQL statement: its first keyword,
// upper-case, from Postgres's commands (SELECT, INSERT, UPDATE, DELETE,
// MERGE, COPY, BEGIN, …), or OTHER. Leading blanks, comments and opening
// parentheses are skipped. For WITH it is the command of the main
// statement after the common table expressions (WITH when there is none).
// The result is one of a fixed set, so it never carries text of the query.
func Operation(sql string) string {
	sc := scanner{s: sql}
	word := sc.word(true)
	op := command(word)
	if op != "WITH" {
		return op
	}
	// The main statement is the first data-modifying or query keyword at
	// depth 0 after the CTEs, whose bodies are in parentheses.
	for {
		w := sc.word(false)
		if w == "" {
			return "WITH"
		}
		switch c := command(w); c {
		case "SELECT", "INSERT", "UPDATE", "DELETE", "MERGE", "VALUES", "TABLE":
			return c
		}
	}
}

// command upper-cases word and returns it if it is a known command.
func command(word string) string {
	if len(word) == 0 || len(word) > 12 {
		return "OTHER"
	}
	var b [12]byte
	for i := 0; i < len(word); i++ {
		c := word[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		b[i] = c
	}
	switch string(b[:len(word)]) {
	case "SELECT":
		return "SELECT"
	case "INSERT":
		return "INSERT"
	case "UPDATE":
		return "UPDATE"
	case "DELETE":
		return "DELETE"
	case "MERGE":
		return "MERGE"
	case "WITH":
		return "WITH"
	case "VALUES":
		return "VALUES"
	case "TABLE":
		return "TABLE"
	case "COPY":
		return "COPY"
	case "BEGIN", "START":
		return "BEGIN"
	case "COMMIT", "END":
		return "COMMIT"
	case "ROLLBACK", "ABORT":
		return "ROLLBACK"
	case "SAVEPOINT":
		return "SAVEPOINT"
	case "RELEASE":
		return "RELEASE"
	case "SET":
		return "SET"
	case "RESET":
		return "RESET"
	case "SHOW":
		return "SHOW"
	case "CALL":
		return "CALL"
	case "DO":
		return "DO"
	case "EXPLAIN":
		return "EXPLAIN"
	case "ANALYZE", "ANALYSE":
		return "ANALYZE"
	case "VACUUM":
		return "VACUUM"
	case "CREATE":
		return "CREATE"
	case "ALTER":
		return "ALTER"
	case "DROP":
		return "DROP"
	case "TRUNCATE":
		return "TRUNCATE"
	case "GRANT":
		return "GRANT"
	case "REVOKE":
		return "REVOKE"
	case "COMMENT":
		return "COMMENT"
	case "LOCK":
		return "LOCK"
	case "LISTEN":
		return "LISTEN"
	case "NOTIFY":
		return "NOTIFY"
	case "UNLISTEN":
		return "UNLISTEN"
	case "PREPARE":
		return "PREPARE"
	case "EXECUTE":
		return "EXECUTE"
	case "DEALLOCATE":
		return "DEALLOCATE"
	case "DECLARE":
		return "DECLARE"
	case "FETCH":
		return "FETCH"
	case "MOVE":
		return "MOVE"
	case "CLOSE":
		return "CLOSE"
	case "DISCARD":
		return "DISCARD"
	case "REFRESH":
		return "REFRESH"
	case "REINDEX":
		return "REINDEX"
	case "CLUSTER":
		return "CLUSTER"
	case "CHECKPOINT":
		return "CHECKPOINT"
	case "IMPORT":
		return "IMPORT"
	case "SECURITY":
		return "SECURITY"
	case "LOAD":
		return "LOAD"
	}
	return "OTHER"
}

// scanner walks SQL text word by word, skipping blanks, comments, string
// and identifier quotes, dollar quotes and parenthesised text.
type scanner struct {
	s     string
	i     int
	depth int
}

// word returns the next bare word at parenthesis depth 0, or "" at the
// end. With first, only the statement's first word is looked for: opening
// parentheses are stepped into rather than skipped.
func (sc *scanner) word(first bool) string {
	s := sc.s
	for sc.i < len(s) {
		c := s[sc.i]
		switch {
		case c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || c == ';' || c == ',':
			sc.i++
		case c == '-' && sc.i+1 < len(s) && s[sc.i+1] == '-':
			for sc.i < len(s) && s[sc.i] != '\n' {
				sc.i++
			}
		case c == '/' && sc.i+1 < len(s) && s[sc.i+1] == '*':
			sc.skipBlockComment()
		case c == '(':
			sc.i++
			if !first {
				sc.depth++
			}
		case c == ')':
			sc.i++
			if sc.depth > 0 {
				sc.depth--
			}
		case first && (c == '\'' || c == '"' || c == '$'):
			return "" // a statement starts with a keyword
		case c == '\'' || c == '"':
			sc.skipQuoted(c)
		case c == '$':
			sc.skipDollar()
		case isWordStart(c):
			start := sc.i
			for sc.i < len(s) && isWordPart(s[sc.i]) {
				sc.i++
			}
			if first || sc.depth == 0 {
				return s[start:sc.i]
			}
		default:
			if first {
				return ""
			}
			sc.i++
		}
	}
	return ""
}

// skipBlockComment skips a /* */ comment; they nest in Postgres.
func (sc *scanner) skipBlockComment() {
	s, n := sc.s, 0
	for sc.i < len(s) {
		switch {
		case s[sc.i] == '/' && sc.i+1 < len(s) && s[sc.i+1] == '*':
			n++
			sc.i += 2
		case s[sc.i] == '*' && sc.i+1 < len(s) && s[sc.i+1] == '/':
			n--
			sc.i += 2
			if n == 0 {
				return
			}
		default:
			sc.i++
		}
	}
}

// skipQuoted skips '…' or "…", where a doubled quote is part of the text.
func (sc *scanner) skipQuoted(q byte) {
	s := sc.s
	sc.i++
	for sc.i < len(s) {
		if s[sc.i] == q {
			if sc.i+1 < len(s) && s[sc.i+1] == q {
				sc.i += 2
				continue
			}
			sc.i++
			return
		}
		sc.i++
	}
}

// skipDollar skips a $tag$…$tag$ string, or a $n parameter.
func (sc *scanner) skipDollar() {
	s := sc.s
	j := sc.i + 1
	for j < len(s) && isWordPart(s[j]) && !(s[j] >= '0' && s[j] <= '9' && j == sc.i+1) {
		j++
	}
	if j >= len(s) || s[j] != '$' {
		sc.i++ // a parameter ($1) or a stray dollar
		for sc.i < len(s) && s[sc.i] >= '0' && s[sc.i] <= '9' {
			sc.i++
		}
		return
	}
	tag := s[sc.i : j+1]
	end := indexFrom(s, tag, j+1)
	if end < 0 {
		sc.i = len(s)
		return
	}
	sc.i = end + len(tag)
}

func indexFrom(s, sub string, from int) int {
	for i := from; i+len(sub) <= len(s); i++ {
		if s[i:i+len(sub)] == sub {
			return i
		}
	}
	return -1
}

func isWordStart(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c >= 0x80
}

func isWordPart(c byte) bool { return isWordStart(c) || (c >= '0' && c <= '9') }
