package controlapi_test

import (
	"errors"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/agentmesh/agentmesh/internal/controlapi"
)

func TestDecodeIsStrict(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		ok         bool
		says       string
	}{
		{"a known body", `{"key_id":"k","secret":"s","name":"n","kind":"agent","csr":"c"}`, true, ""},
		{"fields left out", `{"name":"n"}`, true, ""},
		{"surrounding whitespace", " \n{\"name\":\"n\"}\n\t", true, ""},
		{"an unknown field", `{"name":"n","admin":true}`, false, "unknown field"},
		{"a second value", `{"name":"n"} {"name":"m"}`, false, "trailing data"},
		{"trailing garbage", `{"name":"n"}x`, false, "trailing data"},
		{"a truncated value", `{"name":"n"`, false, "unexpected EOF"},
		{"the wrong type", `{"name":1}`, false, "cannot unmarshal"},
		{"nothing", ``, false, "EOF"},
	} {
		var req controlapi.JoinRequest
		err := controlapi.Decode(strings.NewReader(tc.body), controlapi.MaxJoinBody, &req)
		if tc.ok != (err == nil) || !tc.ok && !strings.Contains(err.Error(), tc.says) {
			t.Errorf("%s: Decode = %v, want ok %v saying %q", tc.name, err, tc.ok, tc.says)
		}
		if tc.ok && req.Name != "n" {
			t.Errorf("%s: decoded %+v", tc.name, req)
		}
	}
}

func TestDecodeReadsAtMostItsBound(t *testing.T) {
	const max = 64
	body := func(n int) string { // a valid body of exactly n bytes
		return `{"csr":"` + strings.Repeat("a", n-len(`{"csr":""}`)) + `"}`
	}
	var req controlapi.RenewRequest
	if err := controlapi.Decode(strings.NewReader(body(max)), max, &req); err != nil || len(req.CSR) != max-len(`{"csr":""}`) {
		t.Fatalf("a body of exactly the bound: %v", err)
	}
	err := controlapi.Decode(strings.NewReader(body(max+1)), max, &req)
	if err == nil || !strings.Contains(err.Error(), "larger than 64 bytes") {
		t.Fatalf("a body one byte over the bound: %v", err)
	}
	// A sender that never stops is read no further than the bound.
	r := &countingReader{r: endless{}}
	if err := controlapi.Decode(r, max, &req); err == nil {
		t.Fatal("an endless body decoded")
	}
	if r.n > max+1 {
		t.Fatalf("read %d bytes of an endless body, bound %d", r.n, max)
	}
}

func TestDecodeReportsAFailedRead(t *testing.T) {
	boom := errors.New("connection reset")
	var req controlapi.RenewRequest
	r := io.MultiReader(strings.NewReader(`{"csr":`), iotest.ErrReader(boom))
	if err := controlapi.Decode(r, controlapi.MaxBody, &req); !errors.Is(err, boom) {
		t.Fatalf("Decode = %v, want the read error", err)
	}
}

type endless struct{}

func (endless) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = ' '
	}
	return len(p), nil
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// The bounds are ordered as the API relies on: a join (anybody may send
// one) is the smallest, an audit batch the largest.
func TestBodyBoundsAreOrdered(t *testing.T) {
	if !(controlapi.MaxJoinBody < controlapi.MaxBody && controlapi.MaxBody < controlapi.MaxAuditBody) {
		t.Fatalf("bounds join %d, body %d, audit %d", controlapi.MaxJoinBody, controlapi.MaxBody, controlapi.MaxAuditBody)
	}
}
