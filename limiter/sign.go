package limiter

import (
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// PublicKeyPrefix starts the text form of a public key: "ed25519:" and the
// 32 key bytes in standard base64, as `tenantguard keygen` prints it.
const PublicKeyPrefix = "ed25519:"

// canonicalHeader starts the canonical form of a decision; see
// CanonicalBytes.
const canonicalHeader = "tenantguard/decision/v1\n"

// ErrBadKey is returned for a public or private key that cannot be used.
var ErrBadKey = errors.New("bad decision signing key")

// Signer signs decisions with one Ed25519 private key. It is safe for
// concurrent use.
type Signer struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	id   string
}

// NewSigner returns a Signer for priv.
func NewSigner(priv ed25519.PrivateKey) (*Signer, error) {
	if len(priv) != ed25519.PrivateKeySize {
		return nil, fmt.Errorf("%w: an Ed25519 private key has %d bytes, got %d", ErrBadKey, ed25519.PrivateKeySize, len(priv))
	}
	pub := priv.Public().(ed25519.PublicKey)
	return &Signer{priv: priv, pub: pub, id: KeyID(pub)}, nil
}

// GenerateKey returns a new Ed25519 private key in PEM (PKCS #8, the form
// `openssl genpkey -algorithm ed25519` writes) and its public key in text
// form (see FormatPublicKey).
func GenerateKey() (privPEM []byte, pub string, err error) {
	pk, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, "", err
	}
	der, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, "", err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), FormatPublicKey(pk), nil
}

// ParsePrivateKey reads an Ed25519 private key in PEM (PKCS #8).
func ParsePrivateKey(data []byte) (*Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PRIVATE KEY" {
		return nil, fmt.Errorf("%w: want a PEM block \"PRIVATE KEY\" (PKCS #8)", ErrBadKey)
	}
	key, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadKey, err)
	}
	priv, ok := key.(ed25519.PrivateKey)
	if !ok {
		return nil, fmt.Errorf("%w: the key is a %T, want Ed25519", ErrBadKey, key)
	}
	return NewSigner(priv)
}

// LoadSigner reads the private key file at path (see ParsePrivateKey).
func LoadSigner(path string) (*Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("decision signing key: %w", err)
	}
	s, err := ParsePrivateKey(data)
	if err != nil {
		return nil, fmt.Errorf("decision signing key %s: %w", path, err)
	}
	return s, nil
}

// PublicKey returns the signer's public key.
func (s *Signer) PublicKey() ed25519.PublicKey { return s.pub }

// KeyID returns the id the signer puts in key_id.
func (s *Signer) KeyID() string { return s.id }

// Sign returns d with key_id and sig set for the KV key it is stored
// under. Sign does not validate d; Publisher.Put does.
func (s *Signer) Sign(key string, d Decision) Decision {
	d.KeyID = s.id
	d.Sig = base64.StdEncoding.EncodeToString(ed25519.Sign(s.priv, CanonicalBytes(key, d)))
	return d
}

// FormatPublicKey returns the text form of a public key: "ed25519:" and
// its 32 bytes in standard base64.
func FormatPublicKey(pub ed25519.PublicKey) string {
	return PublicKeyPrefix + base64.StdEncoding.EncodeToString(pub)
}

// ParsePublicKey reads the text form of FormatPublicKey.
func ParsePublicKey(s string) (ed25519.PublicKey, error) {
	enc, ok := strings.CutPrefix(strings.TrimSpace(s), PublicKeyPrefix)
	if !ok {
		return nil, fmt.Errorf("%w: %q must start with %q", ErrBadKey, s, PublicKeyPrefix)
	}
	b, err := base64.StdEncoding.Strict().DecodeString(enc)
	if err != nil || len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: %q must be %q and %d bytes in standard base64", ErrBadKey, s, PublicKeyPrefix, ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// ParsePublicKeys reads several public keys; each error names its index
// under field (e.g. "decisions.trusted_keys", or "limiter.Config.TrustedKeys"
// in the SDK).
func ParsePublicKeys(field string, keys []string) ([]ed25519.PublicKey, error) {
	var errs []error
	out := make([]ed25519.PublicKey, 0, len(keys))
	for i, k := range keys {
		pub, err := ParsePublicKey(k)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s[%d]: %w", field, i, err))
			continue
		}
		out = append(out, pub)
	}
	return out, errors.Join(errs...)
}

// KeyID is the id of a public key in a decision's key_id: the first 8 bytes
// of its SHA-256, in hex.
func KeyID(pub ed25519.PublicKey) string {
	sum := sha256.Sum256(pub)
	return hex.EncodeToString(sum[:8])
}

// CanonicalBytes is what a decision's signature covers: the KV key it is
// stored under and every field but sig, one per line, in this order:
//
//	tenantguard/decision/v1
//	key=<len>:<KV key>
//	tenant_id=<len>:<tenant_id>
//	scope=<len>:<scope>
//	action=<len>:<action>
//	rate_per_sec=<len>:<rate, shortest decimal that round-trips ('g', -1)>
//	burst=<len>:<burst, decimal>
//	issued_at=<len>:<issued_at, UTC, RFC 3339 with nanoseconds, trailing zeros trimmed>
//	expires_at=<len>:<expires_at, same form>
//	reason=<len>:<reason>
//	source=<len>:<source>
//	anomaly_id=<len>:<anomaly_id>
//	key_id=<len>:<key_id>
//	mode=<len>:<mode>        (only when mode is set)
//
// Each line is the field name, "=", the value's length in bytes in
// decimal, ":", the value and "\n", so no value can pass for another.
// Binding the key means a valid decision copied under another tenant's or
// scope's key no longer verifies. A field added to the decision later is
// appended after key_id only when it is set, so a decision without it keeps
// the same bytes and older limiters still verify it.
func CanonicalBytes(key string, d Decision) []byte {
	b := make([]byte, 0, 256+len(d.Reason))
	b = append(b, canonicalHeader...)
	field := func(name, v string) {
		b = append(b, name...)
		b = append(b, '=')
		b = strconv.AppendInt(b, int64(len(v)), 10)
		b = append(b, ':')
		b = append(b, v...)
		b = append(b, '\n')
	}
	field("key", key)
	field("tenant_id", d.TenantID)
	field("scope", d.Scope)
	field("action", string(d.Action))
	field("rate_per_sec", strconv.FormatFloat(d.RatePerSec, 'g', -1, 64))
	field("burst", strconv.FormatUint(uint64(d.Burst), 10))
	field("issued_at", d.IssuedAt.UTC().Format(time.RFC3339Nano))
	field("expires_at", d.ExpiresAt.UTC().Format(time.RFC3339Nano))
	field("reason", d.Reason)
	field("source", string(d.Source))
	field("anomaly_id", d.AnomalyID)
	field("key_id", d.KeyID)
	if d.Mode != "" {
		field("mode", string(d.Mode))
	}
	return b
}
