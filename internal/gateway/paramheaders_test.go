package gateway

import (
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/reason"
)

// TestGatewayForwardsMcpParamHeadersOnlyWhenTheyMatchTheBody: an
// Mcp-Param-* header (2026-07-28 x-mcp-header) is forwarded only when the
// tool's schema, as the gateway saw it in tools/list, declares it and its
// value equals the argument the policy judged; everything else is refused
// with header_mismatch and not forwarded.
func TestGatewayForwardsMcpParamHeadersOnlyWhenTheyMatchTheBody(t *testing.T) {
	up := &taskUpstream{}
	f := newFixture(t, fixtureOpts{upstream: up})
	ctx := testContext(t)
	c := f.httpClient(f.fraud)
	echo := func(id int, args string) string {
		return call(id, "tools/call", `{"name":"echo","arguments":`+args+`}`)
	}
	refuse := func(name, body string, hdr map[string]string) {
		t.Helper()
		n := len(up.received())
		status, _, b := f.rawPost(ctx, c, body, hdr)
		d := rpcError(t, b)
		if status != http.StatusBadRequest || d.Code != CodeHeaderMismatch || d.Reason != reason.HeaderMismatch {
			t.Errorf("%s: %d %+v, want 400 header_mismatch", name, status, d)
		}
		if len(up.received()) != n {
			t.Errorf("%s: forwarded upstream", name)
		}
	}
	forward := func(name, body string, hdr map[string]string) {
		t.Helper()
		if status, _, b := f.rawPost(ctx, c, body, hdr); status != http.StatusOK || strings.Contains(string(b), `"error"`) {
			t.Errorf("%s: %d %s", name, status, b)
		}
		for k, v := range hdr {
			if got := up.lastHeader().Get(k); got != v {
				t.Errorf("%s: upstream got %s: %q, want %q", name, k, got, v)
			}
		}
	}

	// Before the gateway has seen the tool's schema, no header can be
	// checked, so none passes.
	refuse("schema not seen yet", echo(1, `{"text":"hi"}`), map[string]string{"Mcp-Param-Text": "hi"})
	forward("no header, schema not seen yet", echo(2, `{"text":"hi"}`), nil)

	if status, _, b := f.rawPost(ctx, c, call(3, "tools/list", `{}`), nil); status != http.StatusOK || strings.Contains(string(b), "drop_table") {
		t.Fatalf("tools/list: %d %s", status, b)
	}

	forward("matching header", echo(4, `{"text":"hi"}`), map[string]string{"Mcp-Param-Text": "hi"})
	forward("header name in other case", echo(5, `{"text":"hi"}`), map[string]string{"mcp-param-text": "hi"})
	forward("base64 header", echo(6, `{"text":"héllo"}`), map[string]string{"Mcp-Param-Text": "=?base64?aMOpbGxv?="})
	forward("nested argument", echo(7, `{"text":"a","opts":{"region":"eu-1"}}`), map[string]string{"Mcp-Param-Text": "a", "Mcp-Param-Region": "eu-1"})
	forward("no value, no header", echo(8, `{"opts":{}}`), nil)
	forward("null value, no header", echo(9, `{"text":null}`), nil)

	refuse("value differs", echo(10, `{"text":"hi"}`), map[string]string{"Mcp-Param-Text": "drop"})
	refuse("header without the argument", echo(11, `{}`), map[string]string{"Mcp-Param-Text": "hi"})
	refuse("argument without the header", echo(12, `{"text":"hi"}`), nil)
	refuse("undeclared header", echo(13, `{"text":"hi"}`), map[string]string{"Mcp-Param-Text": "hi", "Mcp-Param-Table": "payments"})
	refuse("bad base64", echo(14, `{"text":"hi"}`), map[string]string{"Mcp-Param-Text": "=?base64?!!?="})
	refuse("non-primitive argument", echo(15, `{"text":{"a":1}}`), map[string]string{"Mcp-Param-Text": "x"})
	refuse("header on another method", call(16, "resources/read", `{"uri":"db://public/a"}`), map[string]string{"Mcp-Param-Text": "x"})
	refuse("header on a notification", `{"jsonrpc":"2.0","method":"notifications/initialized"}`, map[string]string{"Mcp-Param-Text": "x"})
}

func TestParamCheckRefusesRepeatedHeadersAndComparesIntegersAsNumbers(t *testing.T) {
	g := &Gateway{params: newParamHeaders()}
	g.params.learn([]byte(`{"tools":[{"name":"t","inputSchema":{"properties":{"n":{"type":"integer","x-mcp-header":"N"},"b":{"type":"boolean","x-mcp-header":"B"}}}}]}`))
	msg := func(args string) *mcpwire.Message {
		msgs, _, err := mcpwire.Decode([]byte(call(1, "tools/call", `{"name":"t","arguments":`+args+`}`)), mcpwire.Limits{})
		if err != nil {
			t.Fatal(err)
		}
		return &msgs[0]
	}
	tests := []struct {
		name string
		h    http.Header
		args string
		want reason.Code
	}{
		{"integer", http.Header{"Mcp-Param-N": {"42"}}, `{"n":42}`, ""},
		{"integer written with a fraction", http.Header{"Mcp-Param-N": {"42"}}, `{"n":42.0}`, ""},
		{"other integer", http.Header{"Mcp-Param-N": {"43"}}, `{"n":42}`, reason.HeaderMismatch},
		{"boolean", http.Header{"Mcp-Param-B": {"true"}}, `{"b":true}`, ""},
		{"boolean in other case", http.Header{"Mcp-Param-B": {"True"}}, `{"b":true}`, reason.HeaderMismatch},
		{"repeated header", http.Header{"Mcp-Param-N": {"42", "42"}}, `{"n":42}`, reason.HeaderMismatch},
		{"two spellings of one header", http.Header{"Mcp-Param-N": {"42"}, "MCP-PARAM-N": {"42"}}, `{"n":42}`, reason.HeaderMismatch},
		{"raw non-ASCII value", http.Header{"Mcp-Param-N": {"4\u00b2"}}, `{"n":42}`, reason.HeaderMismatch},
		{"invalid base64 never matches", http.Header{"Mcp-Param-N": {"=?base64?!!?="}}, `{"n":"\u0000invalid"}`, reason.HeaderMismatch},
		{"fraction", http.Header{"Mcp-Param-N": {"42"}}, `{"n":42.5}`, reason.HeaderMismatch},
		{"unsafe integer", http.Header{"Mcp-Param-N": {"9007199254740993"}}, `{"n":9007199254740993}`, reason.HeaderMismatch},
	}
	for _, tt := range tests {
		if got := g.paramCheck(tt.h, msg(tt.args)); got != tt.want {
			t.Errorf("%s: paramCheck = %q, want %q", tt.name, got, tt.want)
		}
	}
	// A schema whose annotations break the rules (two names equal but for
	// case) makes every header of the tool unverifiable: none passes, and
	// a call without headers goes on as the body says.
	g.params.learn([]byte(`{"tools":[{"name":"t","inputSchema":{"properties":{"n":{"type":"integer","x-mcp-header":"N"},"m":{"type":"integer","x-mcp-header":"n"}}}}]}`))
	if got := g.paramCheck(http.Header{"Mcp-Param-N": {"42"}}, msg(`{"n":42,"m":42}`)); got != reason.HeaderMismatch {
		t.Errorf("header of an invalid definition: %q", got)
	}
	if got := g.paramCheck(http.Header{}, msg(`{"n":42}`)); got != "" {
		t.Errorf("no header, invalid definition: %q", got)
	}
	// A schema without annotations forgets the old ones.
	g.params.learn([]byte(`{"tools":[{"name":"t","inputSchema":{"properties":{"n":{"type":"integer"}}}}]}`))
	if got := g.paramCheck(http.Header{}, msg(`{"n":42}`)); got != "" {
		t.Errorf("after the annotation went: %q", got)
	}
}

// FuzzHeaderMatches checks the comparison of a mirrored header with the
// body value it claims to carry: a value matches only what it decodes to,
// never with a byte outside visible ASCII, space and tab; any string the
// body holds matches its base64 wrapping; an integer matches its decimal.
func FuzzHeaderMatches(f *testing.F) {
	for _, s := range [][2]string{{"us-west1", "us-west1"}, {"=?base64?SGVsbG8sIOS4lueVjA==?=", "Hello, 世界"},
		{"=?base64?!!?=", "\x00invalid"}, {"42", "42"}, {"4\u00b2", "42"}, {"=?base64??=", ""}, {" x", "x"}} {
		f.Add(s[0], s[1], int64(42))
	}
	f.Fuzz(func(t *testing.T, hv, body string, n int64) {
		if headerMatches(hv, body) {
			got, ok := decodeHeaderValue(hv)
			if !ok || got != body {
				t.Fatalf("%q matched %q but decodes to %q, %v", hv, body, got, ok)
			}
			for i := 0; i < len(hv); i++ {
				if c := hv[i]; (c < 0x20 && c != '\t') || c >= 0x7f {
					t.Fatalf("%q matched with byte %#x", hv, c)
				}
			}
		}
		if !headerMatches("=?base64?"+base64.StdEncoding.EncodeToString([]byte(body))+"?=", body) {
			t.Fatalf("the base64 wrapping of %q does not match it", body)
		}
		if n > -(1<<53) && n < 1<<53 && !headerMatches(strconv.FormatInt(n, 10), json.Number(strconv.FormatInt(n, 10))) {
			t.Fatalf("%d does not match itself", n)
		}
	})
}
