package alert

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"strconv"
	"strings"
	"time"
)

// SignatureHeader carries the signature of a delivery.
const SignatureHeader = "Agentmesh-Signature"

// DefaultTolerance is how far a delivery's timestamp may be from the
// receiver's clock for Verify, unless told otherwise.
const DefaultTolerance = 5 * time.Minute

// MinSecret is the shortest secret a receiver may have, in bytes.
const MinSecret = 16

// Errors of Verify. A receiver answers every one of them the same way
// (refuse the delivery); they differ for its logs.
var (
	ErrNoSignature  = errors.New("alert: no valid v1 signature in the header")
	ErrBadSignature = errors.New("alert: signature does not match the body")
	ErrStale        = errors.New("alert: signature timestamp outside the tolerance")
)

// Sign returns the SignatureHeader value for body sent at t with secret:
// "t=UNIX,v1=HEX", HEX being HMAC-SHA256(secret, "UNIX." + body).
func Sign(secret, body []byte, t time.Time) string {
	ts := strconv.FormatInt(t.Unix(), 10)
	return "t=" + ts + ",v1=" + hex.EncodeToString(mac(secret, ts, body))
}

func mac(secret []byte, ts string, body []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(ts))
	m.Write([]byte{'.'})
	m.Write(body)
	return m.Sum(nil)
}

// Verify checks a delivery as its receiver gets it: header is the
// SignatureHeader value, body the request body exactly as received, now
// the receiver's clock. It accepts the delivery when one v1 signature in
// the header (several are allowed, for a secret being rotated) is the
// HMAC of the header's timestamp and the body under secret, and that
// timestamp is within tolerance of now (zero: DefaultTolerance), so a
// delivery recorded and replayed later is refused. Compare the alert's id
// with those already seen to drop retried duplicates.
func Verify(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	if tolerance <= 0 {
		tolerance = DefaultTolerance
	}
	var ts string
	var sigs [][]byte
	for part := range strings.SplitSeq(header, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			continue
		}
		switch k {
		case "t":
			ts = v
		case "v1":
			if s, err := hex.DecodeString(v); err == nil && len(s) == sha256.Size {
				sigs = append(sigs, s)
			}
		}
	}
	unix, err := strconv.ParseInt(ts, 10, 64)
	if err != nil || len(sigs) == 0 {
		return ErrNoSignature
	}
	want := mac(secret, ts, body)
	matched := false
	for _, s := range sigs {
		if hmac.Equal(s, want) {
			matched = true
		}
	}
	if !matched {
		return ErrBadSignature
	}
	if d := now.Sub(time.Unix(unix, 0)); d > tolerance || d < -tolerance {
		return ErrStale
	}
	return nil
}
