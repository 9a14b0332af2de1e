package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"strconv"
	"strings"

	"github.com/tailscale/hujson"
)

// MaxLimits caps the number of entries in a document's limits.
const MaxLimits = 10_000

// maxLimitValue caps rpm and tokens_per_day, so counters cannot overflow.
const maxLimitValue = 1 << 53

// rawLimit is one entry of the top-level "limits" array, as read.
type rawLimit struct {
	off          int
	src, dst     strList
	models       *strList
	rpm, tokens  int64
	hasRPM, hasT bool
}

// limit is a compiled limit.
type limit struct {
	key      string
	index    int
	src, dst map[nodeKey]bool
	models   *globList // nil: every model
	rpm      int64
	tokens   int64
}

// Limit is one rate limit that applies to a model request. Counters are kept
// per source identity and Key: every member of a group named in src has a
// counter of its own.
type Limit struct {
	// Key identifies the limit across policy versions: a digest of its src,
	// dst and models lists, so editing its numbers keeps its counters and
	// reordering the document does not reset them.
	Key string
	// Index is the limit's position in the document's limits.
	Index int
	// RPM is the number of requests allowed per minute (a fixed window
	// starting on the minute); zero means no request limit.
	RPM int64
	// TokensPerDay is the number of tokens (the response's total_tokens)
	// allowed per UTC day; zero means no token limit.
	TokensPerDay int64
}

// limit decodes one entry of "limits":
//
//	{"src": ["group:interns"], "dst": ["model:gpt"], "models": ["gpt-4*"],
//	 "rpm": 60, "tokens_per_day": 100000}
func (d *decoder) limit(v *hujson.Value, path string) (rawLimit, bool) {
	l := rawLimit{off: v.StartOffset}
	var hasSrc, hasDst bool
	n := len(d.errs)
	d.object(v, path, func(name string, fv *hujson.Value) bool {
		fp := path + "." + name
		switch name {
		case "src":
			l.src, hasSrc = d.stringList(fv, fp)
		case "dst":
			l.dst, hasDst = d.stringList(fv, fp)
		case "models":
			if m, ok := d.stringList(fv, fp); ok {
				l.models = &m
			}
		case "rpm":
			l.rpm, l.hasRPM = d.count(fv, fp)
		case "tokens_per_day":
			l.tokens, l.hasT = d.count(fv, fp)
		default:
			return false
		}
		return true
	})
	if len(d.errs) > n {
		return l, false
	}
	if !hasSrc || !hasDst {
		d.fail(v.StartOffset, path, ErrInvalid, `a limit needs "src" and "dst"`)
	} else if len(l.src.items) == 0 || len(l.dst.items) == 0 {
		d.fail(v.StartOffset, path, ErrInvalid, `"src" and "dst" must list at least one selector`)
	}
	if !l.hasRPM && !l.hasT {
		d.fail(v.StartOffset, path, ErrInvalid, `a limit needs "rpm", "tokens_per_day" or both`)
	}
	return l, len(d.errs) == n
}

// count decodes a positive integer.
func (d *decoder) count(v *hujson.Value, path string) (int64, bool) {
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '0' {
		d.fail(v.StartOffset, path, ErrInvalid, "want a positive integer, got %s", kindName(v))
		return 0, false
	}
	n, err := strconv.ParseInt(string(lit), 10, 64)
	if err != nil || n <= 0 || n > maxLimitValue {
		d.fail(v.StartOffset, path, ErrInvalid, "want a positive integer up to %d, got %s", int64(maxLimitValue), lit)
		return 0, false
	}
	return n, true
}

// checkPaths validates a grant's paths: each entry is "METHOD /path-glob"
// with METHOD an upper-case HTTP method or "*" (after an optional '!').
func (c *compiler) checkPaths(l strList, path string) {
	for i, s := range l.items {
		e := strings.TrimPrefix(s.s, "!")
		method, p, ok := strings.Cut(e, " ")
		good := ok && strings.HasPrefix(p, "/") && method != ""
		if good && method != "*" {
			for _, r := range method {
				if r < 'A' || r > 'Z' {
					good = false
					break
				}
			}
		}
		if !good {
			c.d.fail(s.off, path+"["+strconv.Itoa(i)+"]", ErrInvalid, "path %q: want \"METHOD /path\", such as \"GET /v1/models\" or \"POST /v1/audio/*\"", s.s)
		}
	}
}

func (c *compiler) compileLimits(p *Policy, raw []rawLimit) {
	for i := range raw {
		rl := &raw[i]
		path := "limits[" + strconv.Itoa(i) + "]"
		l := limit{index: i, rpm: rl.rpm, tokens: rl.tokens}
		l.src = keySet(c.expandList(rl.src, path+".src"))
		l.dst = keySet(c.expandList(rl.dst, path+".dst"))
		h := sha256.New()
		for _, part := range [][]str{rl.src.items, rl.dst.items} {
			for _, s := range part {
				h.Write([]byte(s.s))
				h.Write([]byte{0})
			}
			h.Write([]byte{1})
		}
		if rl.models != nil {
			l.models = c.globList(*rl.models, itemModel, path+".models")
			for _, s := range rl.models.items {
				h.Write([]byte(s.s))
				h.Write([]byte{0})
			}
		}
		l.key = hex.EncodeToString(h.Sum(nil)[:12])
		p.limits = append(p.limits, l)
	}
}

func keySet(keys []nodeKey) map[nodeKey]bool {
	m := make(map[nodeKey]bool, len(keys))
	for _, k := range keys {
		m[k] = true
	}
	return m
}

// matchNode reports whether one of n's keys is in set.
func matchNode(set map[nodeKey]bool, n *Node, k keyKind) bool {
	for i := 0; ; i++ {
		key, ok := keyAt(n, k, i)
		if !ok {
			return false
		}
		if set[key] {
			return true
		}
	}
}

// Limits returns the limits that apply to a request from src to dst for
// model ("" for a request that names no model: only limits without a models
// list apply). A nil Policy, or invalid nodes, have none.
func (p *Policy) Limits(src, dst Node, model string) []Limit {
	if p == nil || len(p.limits) == 0 {
		return nil
	}
	sk, ok1 := validNode(&src)
	dk, ok2 := validNode(&dst)
	if !ok1 || !ok2 {
		return nil
	}
	var out []Limit
	for i := range p.limits {
		l := &p.limits[i]
		if l.models != nil && (model == "" || !l.models.match(model)) {
			continue
		}
		if !matchNode(l.dst, &dst, dk) || !matchNode(l.src, &src, sk) {
			continue
		}
		out = append(out, Limit{Key: l.key, Index: l.index, RPM: l.rpm, TokensPerDay: l.tokens})
	}
	return out
}
