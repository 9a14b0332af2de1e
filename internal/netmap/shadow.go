package netmap

import "strconv"

// ShadowVersion is the version string a shadow policy of version v is
// compiled with, and so the one its decisions carry in audit events:
// "shadow-V", never confused with an active policy's version.
func ShadowVersion(v int64) string { return "shadow-" + strconv.FormatInt(v, 10) }
