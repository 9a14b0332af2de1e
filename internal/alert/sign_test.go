package alert

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestVerifyAcceptsWhatSignSigns(t *testing.T) {
	secret := []byte("0123456789abcdef-secret")
	body := []byte(`{"id":"x","kind":"denials"}`)
	now := time.Unix(1_800_000_000, 0)
	h := Sign(secret, body, now)
	if !strings.HasPrefix(h, "t=1800000000,v1=") {
		t.Fatalf("header %q", h)
	}
	if err := Verify(secret, h, body, now.Add(time.Minute), 0); err != nil {
		t.Fatalf("verify: %v", err)
	}
	// A rotated secret: the receiver accepts when any v1 matches.
	both := h + ",v1=" + strings.Repeat("ab", 32)
	if err := Verify(secret, both, body, now, time.Minute); err != nil {
		t.Fatalf("verify with two signatures: %v", err)
	}
}

func TestVerifyRefusesTamperingWrongSecretAndStaleTimestamps(t *testing.T) {
	secret := []byte("0123456789abcdef-secret")
	body := []byte(`{"id":"x","kind":"denials","summary":"5 denials"}`)
	now := time.Unix(1_800_000_000, 0)
	h := Sign(secret, body, now)
	ts := strconv.FormatInt(now.Unix(), 10)
	for _, tc := range []struct {
		name   string
		secret []byte
		header string
		body   []byte
		now    time.Time
		want   error
	}{
		{"tampered body", secret, h, []byte(`{"id":"x","kind":"denials","summary":"0 denials"}`), now, ErrBadSignature},
		{"wrong secret", []byte("another-secret-of-16+"), h, body, now, ErrBadSignature},
		{"stale timestamp", secret, h, body, now.Add(6 * time.Minute), ErrStale},
		{"timestamp from the future", secret, h, body, now.Add(-6 * time.Minute), ErrStale},
		{"timestamp moved", secret, strings.Replace(h, "t="+ts, "t="+strconv.FormatInt(now.Unix()+1, 10), 1), body, now, ErrBadSignature},
		{"no header", secret, "", body, now, ErrNoSignature},
		{"no v1", secret, "t=" + ts, body, now, ErrNoSignature},
		{"bad hex", secret, "t=" + ts + ",v1=zz", body, now, ErrNoSignature},
		{"no timestamp", secret, strings.Replace(h, "t="+ts+",", "", 1), body, now, ErrNoSignature},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := Verify(tc.secret, tc.header, tc.body, tc.now, 5*time.Minute)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Verify = %v, want %v", err, tc.want)
			}
		})
	}
}

func TestAlertPayloadHasItsFields(t *testing.T) {
	a := New(Denials, "spiffe://x/agent/a", "25 denials", time.Unix(100, 0))
	a.Coordinator = "https://127.0.0.1:7443"
	a.Window = "secret-window-not-sent"
	b, err := a.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"v":1`, `"id":"` + a.ID + `"`, `"kind":"denials"`, `"time":"1970-01-01T00:01:40Z"`,
		`"coordinator":"https://127.0.0.1:7443"`, `"subject":"spiffe://x/agent/a"`, `"summary":"25 denials"`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("payload %s lacks %s", b, want)
		}
	}
	if strings.Contains(string(b), "window") {
		t.Errorf("payload %s carries the claim window", b)
	}
	if len(a.ID) != 32 {
		t.Errorf("id %q", a.ID)
	}
}
