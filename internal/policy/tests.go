package policy

import (
	"fmt"
	"strings"

	"github.com/agentmesh/agentmesh/internal/identity"
)

// runTests runs a document's tests block against p and returns one error
// per failing expectation (or malformed test), each wrapping ErrTestFailed
// or ErrInvalid.
func (p *Policy) runTests(tests []rawTest, doc []byte) []error {
	d := decoder{doc: doc}
	for i := range tests {
		t := &tests[i]
		path := fmt.Sprintf("tests[%d]", i)
		src, ok1 := d.testNode(t.src, t.srcTags, path+".src")
		dst, ok2 := d.testNode(t.dst, t.dstTags, path+".dst")
		if ok1 && t.srcUser != nil {
			// src_user: the person who joined src with --sso (its
			// registered owner), as a gateway's netmap names it.
			if u := t.srcUser; !validLogin(u.s) || identity.LowerLogin(u.s) != u.s || src.User != "" {
				d.fail(u.off, path+".src_user", ErrInvalid, "src_user %q: want a lower-case login, such as alice@example.com, with a src of kind:NAME", u.s)
				ok1 = false
			} else {
				src.User = u.s
			}
		}
		del, ok3 := d.testDelegation(t.obo, src, path+".on_behalf_of")
		if !ok1 || !ok2 || !ok3 {
			continue
		}
		for _, exp := range []struct {
			allow bool
			list  []str
			field string
		}{{true, t.allow, "allow"}, {false, t.deny, "deny"}} {
			for j, e := range exp.list {
				ep := fmt.Sprintf("%s.%s[%d]", path, exp.field, j)
				r, err := testRequest(e.s)
				if err != nil {
					d.fail(e.off, ep, ErrInvalid, "%v", err)
					continue
				}
				r.Src, r.Dst, r.Args, r.Delegation = src, dst, t.args, del
				got := p.Decide(r)
				if r.Action == ActionTool {
					got = p.testPins(dst, t.hashes, got, r.Tool)
				}
				if got.Allow == exp.allow {
					continue
				}
				verdict := "deny"
				if got.Allow {
					verdict = "allow"
				}
				msg := fmt.Sprintf("test %d (%s -> %s): expected %s %q, got %s: %s", i, t.src.s, t.dst.s, exp.field, e.s, verdict, got.Reason)
				if got.Grant >= 0 {
					line, col := lineColumn(doc, p.grants[got.Grant].off)
					msg += fmt.Sprintf(" by grants[%d] at %d:%d", got.Grant, line, col)
				}
				if w := got.When.String(); w != "" {
					msg += " (when " + w + ")"
				}
				d.fail(e.off, ep, ErrTestFailed, "%s", msg)
			}
		}
	}
	return d.errs
}

// testDelegation is the delegation a test's on_behalf_of names: the
// person's, to the test's src directly (depth 1); nil without one.
func (d *decoder) testDelegation(s *str, src Node, path string) (*Delegation, bool) {
	if s == nil {
		return nil, true
	}
	email, ok := strings.CutPrefix(s.s, "user:")
	if u, err := identity.ParseUser(email); !ok || err != nil || string(u) != email {
		d.fail(s.off, path, ErrInvalid, "%q: want user:EMAIL, a person's e-mail address in lower case", s.s)
		return nil, false
	}
	return &Delegation{User: email, Chain: []string{s.s, string(src.Kind) + ":" + string(src.Name)}, Depth: 1}, true
}

// testNode parses a test's "src" or "dst": a selector naming one node,
// or user:LOGIN, a person's tailnet device (an agent known only by its
// owner's login, as WhoIs identifies it).
func (d *decoder) testNode(s str, tags *strList, path string) (Node, bool) {
	kind, name, ok := strings.Cut(s.s, ":")
	if ok && kind == identity.KindUser {
		if !validLogin(name) || identity.LowerLogin(name) != name {
			d.fail(s.off, path, ErrInvalid, "%q: want user:LOGIN in lower case, such as user:alice@example.com", s.s)
			return Node{}, false
		}
		node := Node{Kind: identity.KindAgent, User: name}
		if tags != nil {
			d.fail(tags.off, path+"_tags", ErrInvalid, "a person's device has no tags")
			return Node{}, false
		}
		return node, true
	}
	k, kerr := identity.ParseKind(kind)
	n, nerr := identity.ParseName(name)
	if !ok || kerr != nil || nerr != nil || k == identity.KindAdmin {
		d.fail(s.off, path, ErrInvalid, "%q: a test names one node, as agent:NAME, tool:NAME or model:NAME, or a person's device as user:LOGIN", s.s)
		return Node{}, false
	}
	node := Node{Name: n, Kind: k}
	if tags != nil {
		list := make([]string, len(tags.items))
		for i, t := range tags.items {
			list[i] = t.s
		}
		parsed, err := identity.ParseTags(list)
		if err != nil {
			d.fail(tags.off, path+"_tags", ErrInvalid, "%v", err)
			return Node{}, false
		}
		node.Tags = parsed
	}
	return node, true
}

// testRequest parses an expectation such as "tools/call query",
// "resources/read URI", "resources/subscribe URI", "prompts/get NAME",
// "model NAME", "path METHOD /PATH" or "connect".
func testRequest(s string) (Request, error) {
	if s == "connect" {
		return Request{Action: ActionConnect, Method: "connect"}, nil
	}
	method, arg, ok := strings.Cut(s, " ")
	if !ok || arg == "" {
		return Request{}, fmt.Errorf("expectation %q: want \"tools/call NAME\", \"resources/read URI\", \"resources/subscribe URI\", \"prompts/get NAME\", \"model NAME\" or \"connect\"", s)
	}
	r := Request{Method: method}
	switch method {
	case "tools/call":
		r.Action, r.Tool = ActionTool, arg
	case "resources/read", "resources/subscribe":
		r.Action, r.Resource = ActionResource, arg
	case "prompts/get":
		r.Action, r.Prompt = ActionPrompt, arg
	case "model":
		r.Action, r.Model = ActionModel, arg
	case "path":
		// "path POST /v1/audio/speech": an HTTP request to a model node.
		hm, hp, ok := strings.Cut(arg, " ")
		if !ok || hm == "" || !strings.HasPrefix(hp, "/") {
			return Request{}, fmt.Errorf("expectation %q: want \"path METHOD /PATH\"", s)
		}
		r.Action, r.HTTPMethod, r.Path, r.Method = ActionPath, hm, hp, hp
	default:
		return Request{}, fmt.Errorf("expectation %q: unknown method %q (want tools/call, resources/read, resources/subscribe, prompts/get, model, path or connect)", s, method)
	}
	return r, nil
}
