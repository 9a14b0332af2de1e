package policy

import (
	"errors"
	"strings"
	"testing"

	"github.com/agentmesh/agentmesh/internal/reason"
)

func TestCanonicalURIForms(t *testing.T) {
	tests := []struct {
		in, want string // want "" means no canonical form
	}{
		// Already canonical: legitimate URIs real servers list.
		{"file:///public/secret", "file:///public/secret"},
		{"demo://resource/dynamic/text/1", "demo://resource/dynamic/text/1"},
		{"demo://resource/static/document/architecture.md", "demo://resource/static/document/architecture.md"},
		{"db://payments/public/charges", "db://payments/public/charges"},
		{"urn:isbn:0451450523", "urn:isbn:0451450523"},
		{"https://example.com/", "https://example.com/"},
		{"http://127.0.0.1:8080/x", "http://127.0.0.1:8080/x"},
		{"http://[::1]/x", "http://[::1]/x"},
		{"file:///caf%C3%A9", "file:///caf%C3%A9"},
		{"file:///a%20b", "file:///a%20b"},
		{"file:///a!b", "file:///a!b"},
		{"db://x/a%3Fb", "db://x/a%3Fb"},
		{"file:///dir/", "file:///dir/"},
		{"file:///C:/x", "file:///C:/x"},
		{"db://x/t?where=a%3Db&x=1#frag", "db://x/t?where=a%3Db&x=1#frag"},
		// Scheme and host case.
		{"FILE:///public/secret", "file:///public/secret"},
		{"Db://Payments/public", "db://payments/public"},
		{"http://Example.COM/x", "http://example.com/x"},
		// Dot segments, empty segments.
		{"file:///public/./secret", "file:///public/secret"},
		{"file:///public/x/../secret", "file:///public/secret"},
		{"file:///public//secret", "file:///public/secret"},
		{"file:////public/secret", "file:///public/secret"},
		{"file:///public/secret/.", "file:///public/secret/"},
		// Percent-encoding: unreserved and pchar octets decoded in the path,
		// upper-case hex, required encodings added.
		{"file:///public/secr%65t", "file:///public/secret"},
		{"file:///public/%7Esecret", "file:///public/~secret"},
		{"file:///public/a%21b", "file:///public/a!b"},
		{"file:///caf%c3%a9", "file:///caf%C3%A9"},
		{"file:///café", "file:///caf%C3%A9"},
		{"file:///a b", "file:///a%20b"},
		{`file:///a\b`, "file:///a%5Cb"},
		{"db://x/t?q=%41&r=%3d", "db://x/t?q=A&r=%3D"},
		// Unicode normalisation form C.
		{"file:///cafe%CC%81", "file:///caf%C3%A9"},
		// Authority.
		{"file://localhost/public/secret", "file:///public/secret"},
		{"file://LOCALHOST/x", "file:///x"},
		// A file URI without "//" is the same file to URL parsers.
		{"file:/public/secret", "file:///public/secret"},
		{"file:public/secret", "file:///public/secret"},
		{"file:", "file:///"},
		{"http://example.com:80/x", "http://example.com/x"},
		{"https://example.com:443/x", "https://example.com/x"},
		{"https://example.com:0443/x", "https://example.com/x"},
		{"http://example.com:/x", "http://example.com/x"},
		{"http://example.com", "http://example.com/"},
		{"http://example.com./x", "http://example.com/x"},
		{"http://[0:0:0::1]/x", "http://[::1]/x"},
		{"http://[::FFFF:7F00:1]/", "http://[::ffff:127.0.0.1]/"},
		// Empty query and fragment.
		{"file:///a?", "file:///a"},
		{"file:///a#", "file:///a"},
		// No canonical form.
		{"relative/path", ""},
		{"//host/x", ""},
		{":x", ""},
		{"1x:y", ""},
		{"http://user@example.com/", ""},
		{"http://user:pw@example.com/", ""},
		{"http://exa%6Dple.com/", ""},
		{"http://ex_am!ple.com/", ""},
		{"http://exämple.com/", ""},
		{"http://a..b/", ""},
		{"http://127.1/", ""},
		{"http://0x7f.0.0.1/", ""},
		{"http://2130706433/", ""},
		{"http://127.000.000.001/", ""},
		{"http://[::1%25eth0]/", ""},
		{"http://[v1.x]/", ""},
		{"http:/example.com/x", ""},
		{"https:example.com/x", ""},
		{"http://[::1/", ""},
		{"http://example.com:65536/", ""},
		{"http://example.com:0/", ""},
		{"http://example.com:8o/", ""},
		{"file://:8080/x", ""},
		{"file:///a%FF", ""},
		{"file:///a%C3", ""},
		{"file:///a%zz", ""},
		{"file:///a%4", ""},
		{"file:///secret.", ""},
		{"file:///secret%2E", ""},
		{"file:///secret%20", ""},
		{"file:///secret%20/x", ""},
		{"file:///a\x00b", ""},
		{"file:///a\nb", ""},
		// NFC of the decoded text that no spelling reaches: an encoded
		// reserved '=' before a combining U+0338 (it looped forever).
		{"db://x/?%3D%CC%B8", ""},
		{"db://x/%3C%CC%B8", ""},
		{"db://x/%3F%CC%B8", "db://x/%3F%CC%B8"}, // ? and U+0338 do not compose
	}
	for _, tt := range tests {
		got, err := canonicalURI(tt.in)
		switch {
		case tt.want == "" && err == nil:
			t.Errorf("canonicalURI(%q) = %q, want no canonical form", tt.in, got)
		case tt.want != "" && (err != nil || got != tt.want):
			t.Errorf("canonicalURI(%q) = %q, %v; want %q", tt.in, got, err, tt.want)
		}
		if isCanonicalURI(tt.in) != (tt.in == tt.want) {
			t.Errorf("isCanonicalURI(%q) = %v, want %v", tt.in, !(tt.in == tt.want), tt.in == tt.want)
		}
	}
}

// excludeDoc grants a public directory except its secret files.
const excludeDoc = `{"grants": [
  {"src": ["agent:a"], "dst": ["tool:files"], "resources": ["file:///public/*", "!file:///public/secret*"]},
  {"src": ["agent:a"], "dst": ["tool:web"], "resources": ["https://docs.example.com/*", "!https://docs.example.com/internal/*"]},
]}`

func TestDecideRefusesEverySpellingOfAnExcludedResource(t *testing.T) {
	p := mustCompile(t, excludeDoc)
	read := func(dst Node, uri string) Decision {
		return p.Decide(Request{Src: agent("a"), Dst: dst, Action: ActionResource, Method: "resources/read", Resource: uri})
	}
	files, web := tool("files"), tool("web")
	if d := read(files, "file:///public/readme.txt"); !d.Allow {
		t.Fatalf("canonical allowed URI denied: %s", d.Explain())
	}
	if d := read(files, "file:///public/secret.txt"); d.Allow || d.Reason != reason.NotGranted {
		t.Fatalf("canonical excluded URI: %s, want not_granted", d.Explain())
	}
	spellings := []struct {
		dst  Node
		uri  string
		want reason.Code
	}{
		{files, "FILE:///public/secret.txt", reason.NonCanonicalURI},
		{files, "File:///public/secret.txt", reason.NonCanonicalURI},
		{files, "file:///public/./secret.txt", reason.NonCanonicalURI},
		{files, "file:///public//secret.txt", reason.NonCanonicalURI},
		{files, "file:////public/secret.txt", reason.NonCanonicalURI},
		{files, "file:///public/x/../secret.txt", reason.UnsafeURI},
		{files, "file:///public/%73ecret.txt", reason.NonCanonicalURI},
		{files, "file:///public/secr%65t.txt", reason.NonCanonicalURI},
		{files, "file:///public/secret%2Etxt", reason.UnsafeURI},
		{files, "file:///public%2Fsecret.txt", reason.UnsafeURI},
		{files, "file:///public/%252e%252e/public/secret.txt", reason.UnsafeURI},
		{files, "file:///public/secret.txt%00.png", reason.UnsafeURI},
		{files, "file://localhost/public/secret.txt", reason.NonCanonicalURI},
		{files, "file://LOCALHOST/public/secret.txt", reason.NonCanonicalURI},
		{files, "file:/public/secret.txt", reason.NonCanonicalURI},
		{files, "file:///public/secret.txt?%3D%CC%B8", reason.NonCanonicalURI}, // once a stack overflow
		{files, "file:public/secret.txt", reason.NonCanonicalURI},
		{files, "file:///public/secret.txt.", reason.NonCanonicalURI},
		{files, "file:///public/secret.txt%20", reason.NonCanonicalURI},
		{files, "file:///public/secret.txt?", reason.NonCanonicalURI},
		{files, "file:///public/secret.txt#", reason.NonCanonicalURI},
		// Case: a case-insensitive file system opens the excluded file.
		{files, "file:///public/SECRET.txt", reason.NotGranted},
		{files, "file:///public/Secret.txt", reason.NotGranted},
		{files, "file:///public/\u017fecret.txt", reason.NonCanonicalURI}, // raw long s: not URI text
		{files, "file:///public/%C5%BFecret.txt", reason.NotGranted},      // encoded long s folds to s
		{web, "https://docs.example.com/internal/x", reason.NotGranted},
		{web, "https://DOCS.example.com/internal/x", reason.NonCanonicalURI},
		{web, "https://docs.example.com:443/internal/x", reason.NonCanonicalURI},
		{web, "https://docs.example.com./internal/x", reason.NonCanonicalURI},
		{web, "https://user@docs.example.com/internal/x", reason.NonCanonicalURI},
		{web, "https://docs.example.com/%69nternal/x", reason.NonCanonicalURI},
		{web, "https://docs.example.com/Internal/x", reason.NotGranted},
		{web, "https:/docs.example.com/internal/x", reason.NonCanonicalURI},
	}
	for _, s := range spellings {
		d := read(s.dst, s.uri)
		if d.Allow || d.Reason != s.want {
			t.Errorf("%q: %s, want %s", s.uri, d.Explain(), s.want)
		}
	}
}

func TestDecideChecksCompletionTemplatesByTheirLiteralText(t *testing.T) {
	p := mustCompile(t, excludeDoc)
	complete := func(tpl string) Decision {
		return p.Decide(Request{Src: agent("a"), Dst: tool("files"), Action: ActionResource, Method: "completion/complete", Resource: tpl, Template: true})
	}
	if d := complete("file:///public/{name}"); !d.Allow {
		t.Errorf("canonical template denied: %s", d.Explain())
	}
	for _, tpl := range []string{"FILE:///public/{name}", "file:///public/./{name}", "file:///public/{name", "file:///public/{na me}"} {
		if d := complete(tpl); d.Allow || d.Reason != reason.NonCanonicalURI {
			t.Errorf("%q: %s, want noncanonical_uri", tpl, d.Explain())
		}
	}
	// As a plain URI (resources/read) a template is not canonical: '{' is
	// not URI text, and no server expands it.
	d := p.Decide(Request{Src: agent("a"), Dst: tool("files"), Action: ActionResource, Method: "resources/read", Resource: "file:///public/{name}"})
	if d.Allow || d.Reason != reason.NonCanonicalURI {
		t.Errorf("template read as a URI: %s, want noncanonical_uri", d.Explain())
	}
}

func TestVisibilityHidesNonCanonicalResourcesAndTemplates(t *testing.T) {
	v := mustCompile(t, excludeDoc).Visible(agent("a"), tool("files"))
	tests := []struct {
		name string
		got  bool
		want bool
	}{
		{"canonical", v.Resource("file:///public/readme.txt"), true},
		{"upper-case scheme", v.Resource("FILE:///public/readme.txt"), false},
		{"dot segment", v.Resource("file:///public/./readme.txt"), false},
		{"excluded in other case", v.Resource("file:///public/SECRET.txt"), false},
		{"template", v.ResourceTemplate("file:///public/{name}"), true},
		{"template in other case", v.ResourceTemplate("file:///public/SECRET{n}"), false},
		{"non-canonical template", v.ResourceTemplate("file:///public//{name}"), false},
		{"unbalanced template", v.ResourceTemplate("file:///public/{name"), false},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("%s: visible = %v, want %v", tt.name, tt.got, tt.want)
		}
	}
}

func TestCompileRefusesNonCanonicalResourceGlobs(t *testing.T) {
	tests := []struct {
		glob, msg string
	}{
		{"FILE:///public/*", `write it as "file:///public/*"`},
		{"!file:///public/./secret*", `write it as "file:///public/secret*"`},
		{"file:///public//*", `write it as "file:///public/*"`},
		{"https://Docs.example.com/*", `write it as "https://docs.example.com/*"`},
		{"https://docs.example.com:443/*", `write it as "https://docs.example.com/*"`},
		{"https://docs.example.com", `write it as "https://docs.example.com/"`},
		{"file:///caf%c3%a9/*", `write it as "file:///caf%C3%A9/*"`},
		{"file:///public/secr%65t*", `write it as "file:///public/secret*"`},
		{"file://localhost/x/*", `write it as "file:///x/*"`},
		{"!file:/public/secret*", `write it as "file:///public/secret*"`},
		{"https:docs.example.com/*", "host"},
		{"file:///public/../secret/*", "always refused"},
		{"file:///public%2F*", "always refused"},
		{"*/./secret*", `write it as "*/secret*"`},
		{"https://user@*.example.com/*", "host"},
		{"https://*.EXAMPLE.com/*", "host"},
		{"FOO*://x/*", "lower case"},
	}
	for _, tt := range tests {
		doc := `{"grants": [{"src": ["*"], "dst": ["*"], "resources": ["*", "` + tt.glob + `"]}]}`
		_, err := Compile([]byte(doc), "1")
		if !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "grants[0].resources[1]") || !strings.Contains(err.Error(), tt.msg) {
			t.Errorf("%q: err = %v, want ErrInvalid at grants[0].resources[1] saying %q", tt.glob, err, tt.msg)
		}
	}
	for _, ok := range []string{"*", "*secret*", "file:///public/*", "!file:///public/secret*", "*://host/x", "https://*.example.com/*",
		"http://127.0.0.1:*/x", "https://example.com*", "demo://resource/dynamic/text/*", "db://payments/public/*", "file:///srv/shared/?.txt"} {
		doc := `{"grants": [{"src": ["*"], "dst": ["*"], "resources": ["*", "` + ok + `"]}]}`
		if _, err := Compile([]byte(doc), "1"); err != nil {
			t.Errorf("%q refused: %v", ok, err)
		}
	}
}

func TestResourceExclusionsIgnoreCaseButInclusionsDoNot(t *testing.T) {
	p := mustCompile(t, `{"grants": [{"src": ["agent:a"], "dst": ["tool:files"], "resources": ["file:///public/*", "!file:///public/caf%C3%A9*"]}]}`)
	read := func(uri string) bool {
		return p.Decide(Request{Src: agent("a"), Dst: tool("files"), Action: ActionResource, Method: "resources/read", Resource: uri}).Allow
	}
	for _, uri := range []string{"file:///public/caf%C3%A9", "file:///public/CAF%C3%89", "file:///public/Caf%C3%A9.txt"} {
		if read(uri) {
			t.Errorf("%q allowed past the exclusion", uri)
		}
	}
	if !read("file:///public/cafe") {
		t.Error("file:///public/cafe denied")
	}
	if read("file:///PUBLIC/x") {
		t.Error("an include matched case-insensitively")
	}
}

// TestResourceExclusionsHoldForFormsAServerReadsAsTheSame: an exclusion
// without a wildcard still holds when the client adds or drops a trailing
// slash, or adds a query or a fragment, which a file server resolving the
// URL's path ignores.
func TestResourceExclusionsHoldForFormsAServerReadsAsTheSame(t *testing.T) {
	p := mustCompile(t, `{"grants": [{"src": ["agent:a"], "dst": ["tool:files"],
	  "resources": ["file:///public/*", "!file:///public/secret", "!file:///public/keys/", "!file:///public/db/*"]}]}`)
	read := func(uri string) Decision {
		return p.Decide(Request{Src: agent("a"), Dst: tool("files"), Action: ActionResource, Method: "resources/read", Resource: uri})
	}
	for _, uri := range []string{
		"file:///public/secret", "file:///public/secret/", "file:///public/secret?x=1", "file:///public/secret#top",
		"file:///public/secret/?x", "file:///public/SECRET/", "file:///public/keys", "file:///public/keys/",
		"file:///public/keys?x", "file:///public/db", "file:///public/db/x",
	} {
		if d := read(uri); d.Allow || d.Reason != reason.NotGranted {
			t.Errorf("%q: %s, want not_granted", uri, d.Explain())
		}
	}
	for _, uri := range []string{"file:///public/secrets", "file:///public/secret.txt", "file:///public/keys.txt", "file:///public/dbx", "file:///public/x?secret"} {
		if d := read(uri); !d.Allow {
			t.Errorf("%q: %s, want allowed", uri, d.Explain())
		}
	}
}
