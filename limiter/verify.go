package limiter

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"time"
)

// Reasons a decision read from the bucket is rejected: the values of the
// reason label of tenantguard_limiter_decisions_rejected_total and of the
// reject_reason column of the decisions audit table.
const (
	// RejectMalformed: not one JSON decision of at most MaxDecisionSize
	// bytes with known fields only.
	RejectMalformed = "malformed"
	// RejectInvalid: a field fails Validate (control characters, a time
	// beyond what the audit table holds, ...), or the decision is not for
	// the key it is stored under.
	RejectInvalid = "invalid"
	// RejectUnsigned: no signature; or, on a limiter, a delete or purge of
	// a key whose decision is still live (a delete carries no signature).
	RejectUnsigned = "unsigned"
	// RejectUnknownKey: signed by a key that is not trusted.
	RejectUnknownKey = "unknown_key"
	// RejectBadSignature: the signature does not verify: a field was
	// changed, or the decision was copied from another key.
	RejectBadSignature = "bad_signature"
	// RejectExpiryTooFar: it expires beyond the cap (Config.MaxDecisionTTL).
	RejectExpiryTooFar = "expiry_too_far"
	// RejectExpired: already expired when it arrived, so it would only
	// remove the live decision the limiter holds for the key.
	RejectExpired = "expired"
)

// RejectReasons lists every reject reason.
var RejectReasons = []string{RejectMalformed, RejectInvalid, RejectUnsigned, RejectUnknownKey,
	RejectBadSignature, RejectExpiryTooFar, RejectExpired}

// capSkew is how far expires_at may lie beyond now + the cap, for clocks
// that disagree between writer and reader.
const capSkew = 5 * time.Minute

// RejectError says why a decision from the bucket was rejected.
type RejectError struct {
	Reason string // one of RejectReasons
	Err    error
}

func (e *RejectError) Error() string { return "decision rejected (" + e.Reason + "): " + e.Err.Error() }

func (e *RejectError) Unwrap() error { return e.Err }

// RejectReason returns the reason of a *RejectError in err's chain, or "".
func RejectReason(err error) string {
	var re *RejectError
	if errors.As(err, &re) {
		return re.Reason
	}
	return ""
}

func reject(reason string, err error) error { return &RejectError{Reason: reason, Err: err} }

// Verifier checks decisions read from the bucket: decoding, signature,
// fields, key and expiry cap. It is safe for concurrent use.
type Verifier struct {
	keys           map[string]ed25519.PublicKey // by key id
	acceptUnsigned bool
	maxTTL         time.Duration
}

// NewVerifier returns a Verifier that trusts keys and refuses expiries more
// than maxTTL after issued_at or after now (0: no cap). With
// acceptUnsigned, a decision without a signature passes, and with no keys
// at all signatures are not checked; a signed decision is still verified
// when keys are given.
func NewVerifier(keys []ed25519.PublicKey, maxTTL time.Duration, acceptUnsigned bool) *Verifier {
	v := &Verifier{keys: make(map[string]ed25519.PublicKey, len(keys)), acceptUnsigned: acceptUnsigned, maxTTL: maxTTL}
	for _, k := range keys {
		v.keys[KeyID(k)] = k
	}
	return v
}

// RequiresSignature reports whether unsigned decisions are refused.
func (v *Verifier) RequiresSignature() bool { return !v.acceptUnsigned }

// Check decodes value, stored under the KV key key, and checks it. It
// returns the decision and nil, or the fields it could read and a
// *RejectError.
func (v *Verifier) Check(key string, value []byte, now time.Time) (Decision, error) {
	d, err := decodeStrict(value)
	if err != nil {
		var loose Decision
		if len(value) <= MaxDecisionSize {
			_ = json.Unmarshal(value, &loose)
		}
		return loose, reject(RejectMalformed, err)
	}
	if err := v.checkSignature(key, d); err != nil {
		return d, err
	}
	if err := d.Validate(); err != nil {
		return d, reject(RejectInvalid, err)
	}
	if k, err := d.Key(); err != nil || k != key {
		return d, reject(RejectInvalid, fmt.Errorf("stored under key %q, but its tenant and scope make key %q", key, k))
	}
	if v.maxTTL > 0 {
		if life := d.ExpiresAt.Sub(d.IssuedAt); life > v.maxTTL {
			return d, reject(RejectExpiryTooFar, fmt.Errorf("expires %s after issued_at, beyond the cap of %s", life, v.maxTTL))
		}
		if d.ExpiresAt.After(now.Add(v.maxTTL + capSkew)) {
			return d, reject(RejectExpiryTooFar, fmt.Errorf("expires at %s, beyond now + the cap of %s",
				d.ExpiresAt.UTC().Format(time.RFC3339), v.maxTTL))
		}
	}
	return d, nil
}

func (v *Verifier) checkSignature(key string, d Decision) error {
	if d.Sig == "" && d.KeyID == "" {
		if v.acceptUnsigned {
			return nil
		}
		return reject(RejectUnsigned, errors.New("the decision has no signature"))
	}
	if v.acceptUnsigned && len(v.keys) == 0 {
		return nil
	}
	pub, ok := v.keys[d.KeyID]
	if !ok {
		return reject(RejectUnknownKey, fmt.Errorf("signed by key id %q, which is not trusted", d.KeyID))
	}
	sig, err := base64.StdEncoding.Strict().DecodeString(d.Sig)
	if err != nil || len(sig) != ed25519.SignatureSize {
		return reject(RejectBadSignature, fmt.Errorf("sig must be %d bytes in standard base64", ed25519.SignatureSize))
	}
	if !ed25519.Verify(pub, CanonicalBytes(key, d), sig) {
		return reject(RejectBadSignature, errors.New("the signature does not match the decision and its key"))
	}
	return nil
}
