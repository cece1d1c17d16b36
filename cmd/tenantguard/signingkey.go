package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"syscall"

	"github.com/tenantguard/tenantguard/limiter"
)

// defaultSigningKeyFile is where the daemon and the CLI keep the decisions
// signing key when decisions.signing_key_file is not set: one key per user
// and machine, made on first use, so `run` and `throttle` work out of the
// box and sign with the same key.
// Without a user config directory ($XDG_CONFIG_HOME and $HOME unset, as
// in some service managers) it falls back to a directory of the user's
// own under the temporary directory.
func defaultSigningKeyFile() (string, error) {
	if dir, err := os.UserConfigDir(); err == nil {
		return filepath.Join(dir, "tenantguard", "decisions.key"), nil
	}
	return filepath.Join(tempKeyDir(), "decisions.key"), nil
}

// tempKeyDir is the default key's directory when there is no user config
// directory.
func tempKeyDir() string {
	return filepath.Join(os.TempDir(), "tenantguard-"+strconv.Itoa(os.Getuid()))
}

// signingKeyFile returns the configured key file or the default one. With
// create, a missing default key is generated (mode 0600) and its public key
// logged, since limiters must be given it; without, a missing default is "".
func (a *app) signingKeyFile(create bool) (string, error) {
	if f := a.cfg.Decisions.SigningKeyFile; f != "" {
		return f, nil
	}
	path, err := defaultSigningKeyFile()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) || !create {
		return "", nil
	}
	if err := ensureSigningKey(path); err != nil {
		return "", err
	}
	if s, err := limiter.LoadSigner(path); err == nil {
		a.log.Warn("decisions.signing_key_file is not set: created a signing key; give limiters its public key (limiter trusted keys)",
			"component", "decisions", "path", path, "public_key", limiter.FormatPublicKey(s.PublicKey()))
	}
	return path, nil
}

// ensureSigningKey creates a decisions signing key at path (mode 0600, its
// directory 0700) unless a file is there already.
func ensureSigningKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	privPEM, _, err := limiter.GenerateKey()
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return fmt.Errorf("decisions signing key: %w", err)
	}
	if filepath.Dir(path) == tempKeyDir() {
		// In a shared directory: refuse one that someone else made or can read.
		if fi, err := os.Stat(filepath.Dir(path)); err != nil || fi.Mode().Perm()&0o077 != 0 || !ownedByMe(fi) {
			return fmt.Errorf("decisions signing key: %s must be a directory of this user's with mode 0700; set decisions.signing_key_file", filepath.Dir(path))
		}
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, os.ErrExist) {
		return nil // made meanwhile by another process
	}
	if err != nil {
		return fmt.Errorf("decisions signing key: %w", err)
	}
	if _, err := f.Write(privPEM); err != nil {
		f.Close()
		return fmt.Errorf("decisions signing key: %w", err)
	}
	return f.Close()
}

func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}
