package limiter

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// MaxTokenSize bounds a bearer token.
const MaxTokenSize = 8 << 10

// ErrInvalidToken is wrapped by every JWT verification failure.
var ErrInvalidToken = errors.New("invalid token")

// VerifyHS256 verifies a compact JWT signed with HMAC-SHA256 under secret
// and returns its claims. Only alg HS256 is accepted (so "none" and every
// other algorithm are rejected); exp and nbf, when present, are checked
// against now with the given leeway.
func VerifyHS256(token string, secret []byte, now time.Time, leeway time.Duration) (map[string]any, error) {
	if len(secret) == 0 {
		return nil, fmt.Errorf("%w: empty secret", ErrInvalidToken)
	}
	if len(token) > MaxTokenSize {
		return nil, fmt.Errorf("%w: longer than %d bytes", ErrInvalidToken, MaxTokenSize)
	}
	h64, rest, ok := strings.Cut(token, ".")
	if !ok {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrInvalidToken)
	}
	p64, s64, ok := strings.Cut(rest, ".")
	if !ok || strings.Contains(s64, ".") {
		return nil, fmt.Errorf("%w: not a compact JWS", ErrInvalidToken)
	}
	hdrJSON, err := base64.RawURLEncoding.DecodeString(h64)
	if err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrInvalidToken, err)
	}
	var hdr struct {
		Alg  string `json:"alg"`
		Crit []any  `json:"crit"`
	}
	if err := json.Unmarshal(hdrJSON, &hdr); err != nil {
		return nil, fmt.Errorf("%w: header: %v", ErrInvalidToken, err)
	}
	if hdr.Alg != "HS256" {
		return nil, fmt.Errorf("%w: alg %q is not HS256", ErrInvalidToken, hdr.Alg)
	}
	if len(hdr.Crit) > 0 {
		return nil, fmt.Errorf("%w: unsupported crit header", ErrInvalidToken)
	}
	sig, err := base64.RawURLEncoding.DecodeString(s64)
	if err != nil {
		return nil, fmt.Errorf("%w: signature: %v", ErrInvalidToken, err)
	}
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(token[:len(h64)+1+len(p64)]))
	if !hmac.Equal(sig, mac.Sum(nil)) {
		return nil, fmt.Errorf("%w: bad signature", ErrInvalidToken)
	}
	payload, err := base64.RawURLEncoding.DecodeString(p64)
	if err != nil {
		return nil, fmt.Errorf("%w: payload: %v", ErrInvalidToken, err)
	}
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.UseNumber()
	var claims map[string]any
	if err := dec.Decode(&claims); err != nil || claims == nil {
		return nil, fmt.Errorf("%w: payload is not a JSON object", ErrInvalidToken)
	}
	if exp, ok, err := numericDate(claims, "exp"); err != nil {
		return nil, err
	} else if ok && !now.Before(exp.Add(leeway)) {
		return nil, fmt.Errorf("%w: expired", ErrInvalidToken)
	}
	if nbf, ok, err := numericDate(claims, "nbf"); err != nil {
		return nil, err
	} else if ok && now.Add(leeway).Before(nbf) {
		return nil, fmt.Errorf("%w: not valid yet", ErrInvalidToken)
	}
	return claims, nil
}

func numericDate(claims map[string]any, name string) (time.Time, bool, error) {
	v, ok := claims[name]
	if !ok {
		return time.Time{}, false, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return time.Time{}, false, fmt.Errorf("%w: %s is not a number", ErrInvalidToken, name)
	}
	f, err := n.Float64()
	if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || math.Abs(f) > 1e12 {
		return time.Time{}, false, fmt.Errorf("%w: %s is out of range", ErrInvalidToken, name)
	}
	sec, frac := math.Modf(f)
	return time.Unix(int64(sec), int64(frac*1e9)), true, nil
}

// SignHS256 makes a compact HS256 JWT of claims; for tests and tooling.
func SignHS256(claims map[string]any, secret []byte) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	head := base64.RawURLEncoding.EncodeToString([]byte(`{"alg":"HS256","typ":"JWT"}`))
	body := head + "." + base64.RawURLEncoding.EncodeToString(payload)
	mac := hmac.New(sha256.New, secret)
	mac.Write([]byte(body))
	return body + "." + base64.RawURLEncoding.EncodeToString(mac.Sum(nil)), nil
}
