package limiter

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// GroupOf turns a program or service name into a limiter group: its base
// name without extension, every character outside [A-Za-z0-9_-] replaced
// by "-", leading "-" and "_" dropped, at most 64 bytes. It returns "" when
// nothing is left. "/usr/bin/invoices-api" gives "invoices-api".
func GroupOf(name string) string {
	name = filepath.Base(name)
	if name == "." || name == string(filepath.Separator) {
		return ""
	}
	name = strings.TrimSuffix(name, filepath.Ext(name))
	b := make([]byte, 0, len(name))
	for i := 0; i < len(name) && len(b) < 64; i++ {
		c := name[i]
		switch {
		case alnum(c):
		case c == '_' || c == '-':
			if len(b) == 0 {
				continue
			}
		default:
			if len(b) == 0 {
				continue
			}
			c = '-'
		}
		b = append(b, c)
	}
	return string(b)
}

func alnum(c byte) bool {
	return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9')
}

// resolveGroup fills an empty Config.Group with the program's name.
func resolveGroup(cfg *Config) error {
	if cfg.Group != "" {
		return nil
	}
	if cfg.Group = GroupOf(os.Args[0]); cfg.Group == "" {
		return fmt.Errorf("limiter.Config.Group: empty, and the program name %q gives no group: set it to the service's name", os.Args[0])
	}
	return nil
}

// Group returns the group whose instances split the global rates.
func (l *Limiter) Group() string { return l.cfg.Group }
