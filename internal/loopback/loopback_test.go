package loopback

import "testing"

func TestHostAndOriginChecks(t *testing.T) {
	hosts := []struct {
		host string
		ok   bool
	}{
		{"127.0.0.1:7801", true},
		{"localhost:7801", true},
		{"LOCALHOST:7801", true},
		{"[::1]:7801", true},
		{"127.0.0.1:7802", false},
		{"127.0.0.1", false},
		{"evil.example:7801", false},
		{"localhost.evil.example:7801", false},
		{"0.0.0.0:7801", false},
		{"[fe80::1%25lo]:7801", false},
		{"", false},
	}
	for _, tt := range hosts {
		if got := HostAllowed(tt.host, "7801"); got != tt.ok {
			t.Errorf("HostAllowed(%q) = %v, want %v", tt.host, got, tt.ok)
		}
	}
	if !HostAllowed("localhost", "80") {
		t.Error("a Host without port is refused on port 80")
	}
	origins := []struct {
		origin string
		ok     bool
	}{
		{"http://localhost:3000", true},
		{"https://127.0.0.1", true},
		{"http://[::1]:8080", true},
		{"null", false},
		{"http://evil.example", false},
		{"file://localhost", false},
		{"http://user@localhost", false},
		{"http://127.0.0.1.evil.example", false},
	}
	for _, tt := range origins {
		if got := OriginAllowed(tt.origin); got != tt.ok {
			t.Errorf("OriginAllowed(%q) = %v, want %v", tt.origin, got, tt.ok)
		}
	}
}
