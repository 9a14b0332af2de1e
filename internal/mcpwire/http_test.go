package mcpwire

import (
	"maps"
	"net/http"
	"slices"
	"strings"
	"testing"
)

// hostile is a request or answer full of headers no hop may pass on.
func hostile() http.Header {
	h := http.Header{}
	for _, k := range []string{
		"Authorization", "Proxy-Authorization", "Cookie", "Set-Cookie", "Host",
		"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Real-Ip",
		"Connection", "Upgrade", "Te", "Transfer-Encoding", "Keep-Alive",
		"Origin", "User-Agent", "Www-Authenticate", "Content-Length",
		HeaderMethod, HeaderName, HeaderParamPrefix + "Region", HeaderLastEventID,
		"Mcp-Unknown",
	} {
		h.Set(k, "x")
	}
	return h
}

func TestCopyRequestHeadersPassesOnlyTheAllowList(t *testing.T) {
	src := hostile()
	for _, k := range []string{"Accept", "Content-Type", HeaderSessionID, HeaderProtocolVersion} {
		src[k] = []string{"v1", "v2"}
	}
	dst := http.Header{}
	CopyRequestHeaders(dst, src)
	got := slices.Sorted(maps.Keys(dst))
	want := []string{"Accept", "Content-Type", HeaderProtocolVersion, HeaderSessionID}
	if !slices.Equal(got, want) {
		t.Fatalf("copied %v, want exactly %v", got, want)
	}
	if vs := dst[HeaderSessionID]; !slices.Equal(vs, []string{"v1", "v2"}) {
		t.Fatalf("Mcp-Session-Id = %q, want every value as sent", vs)
	}
}

func TestCopyResponseHeadersPassesOnlyTheAllowList(t *testing.T) {
	src := hostile()
	for _, k := range []string{"Content-Type", "Cache-Control", HeaderSessionID, HeaderProtocolVersion, "Allow", "Retry-After"} {
		src.Set(k, "v")
	}
	dst := http.Header{}
	CopyResponseHeaders(dst, src)
	if len(dst) != 6 {
		t.Fatalf("copied %v, want the six allowed headers", dst)
	}
	for k := range hostile() {
		if _, ok := dst[k]; ok {
			t.Errorf("%s passed back", k)
		}
	}
}

func TestCopyHeadersLeavesMissingKeysAlone(t *testing.T) {
	dst := http.Header{"Accept": {"kept"}}
	CopyHeaders(dst, http.Header{"Content-Type": {ContentTypeJSON}}, "Accept", "content-type")
	if dst.Get("Accept") != "kept" || dst.Get("Content-Type") != ContentTypeJSON {
		t.Fatalf("dst = %v", dst)
	}
	if _, ok := dst["content-type"]; ok {
		t.Fatalf("copied under a non-canonical key: %v", dst)
	}
}

func TestIsMirrorHeaderIgnoresCase(t *testing.T) {
	for k, want := range map[string]bool{
		"Mcp-Method": true, "mcp-method": true, "MCP-METHOD": true,
		"Mcp-Name": true, "mcp-NAME": true,
		"Mcp-Param-Region": true, "mcp-param-region": true, "MCP-PARAM-X": true,
		"Mcp-Param-":     false, // no argument named
		"Mcp-Session-Id": false, "Mcp-Protocol-Version": false,
		"Mcp-Methods": false, "X-Mcp-Method": false, "Authorization": false, "": false,
	} {
		if got := IsMirrorHeader(k); got != want {
			t.Errorf("IsMirrorHeader(%q) = %v, want %v", k, got, want)
		}
	}
}

func TestVersionsCompareAsStrings(t *testing.T) {
	vs := SessionVersions()
	if !slices.IsSortedFunc(vs, func(a, b string) int { return strings.Compare(b, a) }) {
		t.Fatalf("SessionVersions() = %v, want newest first", vs)
	}
	for _, v := range vs {
		if v >= VersionStateless {
			t.Errorf("session version %s is not before the stateless %s", v, VersionStateless)
		}
	}
}
