package daemon

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/tenantguard/tenantguard/limiter"
)

// ErrNoSigningKey is returned where a decision would be written without a
// key: limiters ignore unsigned decisions.
var ErrNoSigningKey = errors.New("decisions.signing_key_file is not set: every decision is signed, " +
	"and limiters ignore unsigned ones; create a key with `tenantguard keygen -o FILE`, " +
	"set decisions.signing_key_file (TENANTGUARD_DECISIONS_SIGNING_KEY_FILE) to FILE, " +
	"and give limiters the public key it prints (limiter.Config.TrustedKeys)")

// DefaultSigningKeyFile is where the daemon and the CLI keep the decisions
// signing key when decisions.signing_key_file is not set: one key per user
// and machine, made on first use, so `run` and `throttle` work out of the
// box and sign with the same key.
// Without a user config directory ($XDG_CONFIG_HOME and $HOME unset, as
// in some service managers) it falls back to a directory of the user's
// own under the temporary directory.
func DefaultSigningKeyFile() (string, error) {
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

// SigningKeyFile returns the configured key file or the default one. With
// create, a missing default key is generated (mode 0600) and its public key
// logged, since limiters must be given it; without, a missing default is "".
func SigningKeyFile(dc DecisionsConfig, create bool, log *slog.Logger) (string, error) {
	if f := dc.SigningKeyFile; f != "" {
		return f, nil
	}
	path, err := DefaultSigningKeyFile()
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); err == nil {
		return path, nil
	} else if !errors.Is(err, os.ErrNotExist) || !create {
		return "", nil
	}
	if err := EnsureSigningKey(path); err != nil {
		return "", err
	}
	if s, err := limiter.LoadSigner(path); err == nil && log != nil {
		log.Warn("decisions.signing_key_file is not set: created a signing key; give limiters its public key (limiter trusted keys)",
			"component", "decisions", "path", path, "public_key", limiter.FormatPublicKey(s.PublicKey()))
	}
	return path, nil
}

// EnsureSigningKey creates a decisions signing key at path (mode 0600, its
// directory 0700) unless a file is there already.
func EnsureSigningKey(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
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
	if _, err := WriteSigningKey(path); err != nil && !errors.Is(err, os.ErrExist) { // ErrExist: made meanwhile by another process
		return fmt.Errorf("decisions signing key: %w", err)
	}
	return nil
}

// WriteSigningKey writes a new Ed25519 private key to path (PEM, mode
// 0600) and returns its public key as limiters take it. It never
// overwrites a file: one at path is an error that wraps os.ErrExist.
func WriteSigningKey(path string) (publicKey string, err error) {
	privPEM, pub, err := limiter.GenerateKey()
	if err != nil {
		return "", err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return "", err
	}
	if _, err := f.Write(privPEM); err != nil {
		f.Close()
		return "", err
	}
	return pub, f.Close()
}

func ownedByMe(fi os.FileInfo) bool {
	st, ok := fi.Sys().(*syscall.Stat_t)
	return ok && int(st.Uid) == os.Getuid()
}

// CLINATSTimeout bounds how long a CLI command waits for NATS.
const CLINATSTimeout = 4 * time.Second

// OpenPublisher connects to NATS as a CLI command does and returns a
// decisions publisher with the configured caps and keys, and the func that
// closes its connection. sign requires the signing key (throttle,
// release; the default one is made on first use). It gives up within
// CLINATSTimeout when no server answers, unlike the daemon. A bucket that
// does not answer in time is asked up to twice more (within ctx): in a
// cluster, the bucket is silent for a few seconds after its leader failed.
// A missing bucket is a provision.MissingError: only `run` and `migrate`
// create it.
func OpenPublisher(ctx context.Context, cfg Config, log *slog.Logger, sign bool) (*limiter.Publisher, func(), error) {
	nc, err := ConnectNATS(cfg.NATS, log, "cli", nats.RetryOnFailedConnect(false), nats.Timeout(CLINATSTimeout/2))
	if err != nil {
		return nil, nil, err
	}
	var pub *limiter.Publisher
	for attempt := 1; ; attempt++ {
		octx, cancel := context.WithTimeout(ctx, CLINATSTimeout)
		pub, err = signedPublisher(octx, nc, cfg, log, sign)
		cancel()
		if err == nil || attempt == 3 || ctx.Err() != nil || !errors.Is(err, context.DeadlineExceeded) {
			break
		}
	}
	if err != nil {
		nc.Close()
		return nil, nil, err
	}
	return pub, nc.Close, nil
}

// signedPublisher returns a decisions publisher on nc, with the signing
// key when there is one; sign requires it.
func signedPublisher(ctx context.Context, nc *nats.Conn, cfg Config, log *slog.Logger, sign bool) (*limiter.Publisher, error) {
	keyFile, err := SigningKeyFile(cfg.Decisions, sign, log)
	if err != nil {
		return nil, err
	}
	var signer *limiter.Signer
	if keyFile != "" {
		if signer, err = limiter.LoadSigner(keyFile); err != nil {
			return nil, err
		}
	} else if sign {
		return nil, ErrNoSigningKey
	}
	return NewDecisionsPublisher(ctx, nc, cfg.Decisions.Config, signer)
}
