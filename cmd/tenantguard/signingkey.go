package main

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/tenantguard/tenantguard/limiter"
)

// defaultSigningKeyFile is where the daemon and the CLI keep the decisions
// signing key when decisions.signing_key_file is not set: one key per user
// and machine, made on first use, so `run` and `throttle` work out of the
// box and sign with the same key.
func defaultSigningKeyFile() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("decisions.signing_key_file is not set and there is no user config directory for a default key: %w", err)
	}
	return filepath.Join(dir, "tenantguard", "decisions.key"), nil
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
