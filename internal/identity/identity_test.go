package identity

import (
	"crypto/x509"
	"errors"
	"net/url"
	"testing"
)

func TestParseAcceptsOnlyCanonicalIDs(t *testing.T) {
	good := []string{
		"spiffe://mesh.local/agent/fraud-detector",
		"spiffe://example.org/tool/payments-db",
		"spiffe://m/model/llm_1",
		"spiffe://a.b.c/admin/admin",
	}
	for _, s := range good {
		id, err := Parse(s)
		if err != nil {
			t.Errorf("Parse(%q) = %v", s, err)
			continue
		}
		if id.String() != s {
			t.Errorf("Parse(%q).String() = %q", s, id.String())
		}
		if id.URL().String() != s {
			t.Errorf("Parse(%q).URL() = %q", s, id.URL())
		}
	}
	bad := []string{
		"",
		"spiffe://mesh.local/agent",
		"spiffe://mesh.local/agent/x/y",
		"spiffe://Mesh.local/agent/x",
		"spiffe://mesh.local/Agent/x",
		"spiffe://mesh.local/agent/X",
		"spiffe://mesh.local/robot/x",
		"spiffe://mesh.local:443/agent/x",
		"spiffe://mesh.local/agent/x?q=1",
		"spiffe://mesh.local/agent/%78",
		"spiffe://mesh.local/agent/..",
		"spiffe://mesh.local//x",
		"spiffe://mesh..local/agent/x",
		"spiffe://.mesh/agent/x",
		"https://mesh.local/agent/x",
		"spiffe://user@mesh.local/agent/x",
		"spiffe://mesh.local/agent/-x",
	}
	for _, s := range bad {
		if _, err := Parse(s); !errors.Is(err, ErrBadID) {
			t.Errorf("Parse(%q) error = %v, want ErrBadID", s, err)
		}
	}
}

func TestZeroIDIsInvalid(t *testing.T) {
	var id ID
	if !id.IsZero() || id.String() != "" {
		t.Fatalf("zero ID: IsZero=%v String=%q", id.IsZero(), id.String())
	}
	if _, err := New("", "", ""); err == nil {
		t.Fatal("New with empty parts succeeded")
	}
}

func TestNameAndTagRules(t *testing.T) {
	for _, s := range []string{"a", "payments-db", "llm_1", "x9"} {
		if _, err := ParseName(s); err != nil {
			t.Errorf("ParseName(%q) = %v", s, err)
		}
	}
	long := make([]byte, 64)
	for i := range long {
		long[i] = 'a'
	}
	for _, s := range []string{"", "A", "-a", "a b", "a/b", "a.b", "é", string(long)} {
		if _, err := ParseName(s); !errors.Is(err, ErrBadName) {
			t.Errorf("ParseName(%q) error = %v, want ErrBadName", s, err)
		}
	}
	tags, err := SplitTags("tag:a, tag:b")
	if err != nil || len(tags) != 2 || tags[1] != "tag:b" {
		t.Fatalf("SplitTags = %v, %v", tags, err)
	}
	for _, s := range []string{"a", "tag:", "tag:A", "group:x", "tag:a,tag:a"} {
		if _, err := SplitTags(s); !errors.Is(err, ErrBadTag) {
			t.Errorf("SplitTags(%q) error = %v, want ErrBadTag", s, err)
		}
	}
	if tags, err := SplitTags(""); err != nil || tags == nil || len(tags) != 0 {
		t.Errorf("SplitTags(\"\") = %v, %v; want empty non-nil", tags, err)
	}
}

func TestFromCertificateWantsExactlyOneURI(t *testing.T) {
	u1, _ := url.Parse("spiffe://mesh/agent/a")
	u2, _ := url.Parse("spiffe://mesh/agent/b")
	if id, err := FromCertificate(&x509.Certificate{URIs: []*url.URL{u1}}); err != nil || id.Name != "a" {
		t.Fatalf("one URI: %v %v", id, err)
	}
	for _, uris := range [][]*url.URL{nil, {u1, u2}} {
		if _, err := FromCertificate(&x509.Certificate{URIs: uris}); !errors.Is(err, ErrBadID) {
			t.Errorf("%d URIs: error = %v, want ErrBadID", len(uris), err)
		}
	}
	if _, err := FromCertificate(nil); err == nil {
		t.Error("nil certificate accepted")
	}
}

func TestKindWithArticleReadsAsEnglish(t *testing.T) {
	want := map[Kind]string{KindAgent: "an agent", KindAdmin: "an admin", KindTool: "a tool", KindModel: "a model"}
	for _, k := range Kinds {
		if got := k.WithArticle(); got != want[k] {
			t.Errorf("%s.WithArticle() = %q, want %q", k, got, want[k])
		}
	}
}

func TestParseSelectorWantsKindColonName(t *testing.T) {
	if k, n, err := ParseSelector("agent:auditor"); err != nil || k != KindAgent || n != "auditor" {
		t.Fatalf("agent:auditor: %q %q %v", k, n, err)
	}
	for _, s := range []string{"auditor", "tag:x", "agent:", "agent:Bad Name", ":x", ""} {
		if _, _, err := ParseSelector(s); err == nil {
			t.Errorf("%q parsed", s)
		}
	}
}
