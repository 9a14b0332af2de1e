package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strconv"
	"unicode/utf8"

	"github.com/tailscale/hujson"
)

// Limits on a policy document. They keep a hostile or broken document from
// exhausting the coordinator or a gateway that compiles it.
const (
	// MaxDocumentBytes caps the size of a policy document.
	MaxDocumentBytes = 4 << 20
	// MaxGrants caps the number of grants.
	MaxGrants = 100_000
	// MaxGroups caps the number of groups.
	MaxGroups = 10_000
	// MaxTests caps the number of tests.
	MaxTests = 10_000
	// MaxDepth caps the nesting of arrays and objects in the document
	// (checked before parsing, because the HuJSON parser recurses).
	MaxDepth = 32
	// MaxWhenBytes caps the length of one when expression.
	MaxWhenBytes = 4096
)

// The document as read, before compilation. Every value keeps the byte
// offset it came from, so later errors can name a line and column.
type (
	str struct {
		s   string
		off int
	}
	strList struct {
		off   int
		items []str
	}
	rawGroup struct {
		name    str
		members strList
	}
	rawGrant struct {
		off      int
		src, dst strList
		// lists holds tools, resources, prompts and models, indexed by
		// itemKind; nil when the field is absent.
		lists [numItemKinds]*strList
		when  *str
		// approval and approvalTimeout hold the call for a person's
		// approval (approvals.go); nil when absent.
		approval, approvalTimeout *str
		// obo is the on_behalf_of list (delegation.go); nil when absent.
		obo *strList
	}
	rawTest struct {
		off              int
		src, dst         str
		srcTags, dstTags *strList
		// srcUser is the person who owns src (src_user), or nil.
		srcUser     *str
		args        map[string]any
		allow, deny []str
		// hashes are the tool definition hashes the test's dst
		// advertises (tool_hashes), or nil (see testPins).
		hashes map[string]str
		// obo is the person the test's requests are made for
		// (on_behalf_of: "user:EMAIL"), or nil.
		obo *str
	}
	rawDoc struct {
		groups []rawGroup
		grants []rawGrant
		tests  []rawTest
		limits []rawLimit
		// annotations are the trusted tool classes (annotations.go).
		annotations []rawAnnotation
		pins        []rawServerPins
		// auditArgs is the audit_args section (auditargs.go), or nil.
		auditArgs *rawAuditArgs
		// owners is the node_owners section (owners.go), or nil.
		owners *rawOwners
	}
)

// itemKind names the four lists of a grant.
type itemKind int

const (
	itemTool itemKind = iota
	itemResource
	itemPrompt
	itemModel
	itemPath
	numItemKinds
)

var itemFields = [numItemKinds]string{"tools", "resources", "prompts", "models", "paths"}

// decoder walks a parsed HuJSON tree strictly: known keys only, no duplicate
// keys, the right JSON type for every field. It collects errors rather than
// stopping at the first, up to maxErrors.
type decoder struct {
	doc  []byte
	errs []error
}

const maxErrors = 20

func (d *decoder) fail(off int, path string, kind error, format string, args ...any) {
	if len(d.errs) >= maxErrors {
		return
	}
	e := &Error{Path: path, Msg: fmt.Sprintf(format, args...), Kind: kind}
	if off >= 0 && off <= len(d.doc) {
		e.Line, e.Column = lineColumn(d.doc, off)
	}
	d.errs = append(d.errs, e)
}

// lineColumn maps a byte offset to a 1-based line and byte column.
func lineColumn(b []byte, off int) (line, col int) {
	line = 1 + bytes.Count(b[:off], []byte("\n"))
	col = 1 + off - (bytes.LastIndexByte(b[:off], '\n') + 1)
	return line, col
}

// checkDepth refuses documents nested deeper than MaxDepth. It understands
// just enough HuJSON (strings and comments) to count brackets correctly.
func checkDepth(b []byte) (off int, ok bool) {
	depth := 0
	for i := 0; i < len(b); i++ {
		switch b[i] {
		case '"':
			for i++; i < len(b) && b[i] != '"'; i++ {
				if b[i] == '\\' {
					i++
				}
			}
		case '/':
			if i+1 < len(b) && b[i+1] == '/' {
				for i < len(b) && b[i] != '\n' {
					i++
				}
			} else if i+1 < len(b) && b[i+1] == '*' {
				end := bytes.Index(b[i+2:], []byte("*/"))
				if end < 0 {
					return 0, true // the parser reports the unterminated comment
				}
				i += 2 + end + 1
			}
		case '[', '{':
			depth++
			if depth > MaxDepth {
				return i, false
			}
		case ']', '}':
			depth--
		}
	}
	return 0, true
}

// decodeDocument parses and decodes doc.
func decodeDocument(doc []byte) (*rawDoc, []error) {
	d := &decoder{doc: doc}
	if len(doc) > MaxDocumentBytes {
		d.fail(-1, "", ErrInvalid, "document is %d bytes, more than the limit of %d", len(doc), MaxDocumentBytes)
		return nil, d.errs
	}
	if !utf8.Valid(doc) {
		d.fail(utf8Offset(doc), "", ErrSyntax, "invalid UTF-8")
		return nil, d.errs
	}
	if off, ok := checkDepth(doc); !ok {
		d.fail(off, "", ErrInvalid, "nested more than %d levels deep", MaxDepth)
		return nil, d.errs
	}
	root, err := hujson.Parse(doc)
	if err != nil {
		e := &Error{Msg: err.Error(), Kind: ErrSyntax}
		var line, col int
		if _, serr := fmt.Sscanf(err.Error(), "hujson: line %d, column %d:", &line, &col); serr == nil {
			e.Line, e.Column = line, col
			if _, rest, ok := bytes.Cut([]byte(err.Error()), []byte(": ")); ok {
				if _, msg, ok := bytes.Cut(rest, []byte(": ")); ok {
					e.Msg = string(msg)
				}
			}
		}
		return nil, []error{e}
	}
	var raw rawDoc
	d.object(&root, "", func(name string, v *hujson.Value) bool {
		switch name {
		case "groups":
			d.object(v, "groups", func(gname string, gv *hujson.Value) bool {
				if len(raw.groups) == MaxGroups {
					d.fail(gv.StartOffset, "groups", ErrInvalid, "more than %d groups", MaxGroups)
					return true
				}
				members, ok := d.stringList(gv, "groups."+gname)
				if ok {
					raw.groups = append(raw.groups, rawGroup{name: str{gname, memberOffset(v, gname)}, members: members})
				}
				return true
			})
		case "grants":
			d.array(v, "grants", func(i int, gv *hujson.Value) {
				if i == MaxGrants {
					d.fail(gv.StartOffset, "grants", ErrInvalid, "more than %d grants", MaxGrants)
				}
				if i >= MaxGrants {
					return
				}
				if g, ok := d.grant(gv, fmt.Sprintf("grants[%d]", i)); ok {
					raw.grants = append(raw.grants, g)
				}
			})
		case "limits":
			d.array(v, "limits", func(i int, lv *hujson.Value) {
				if i == MaxLimits {
					d.fail(lv.StartOffset, "limits", ErrInvalid, "more than %d limits", MaxLimits)
				}
				if i >= MaxLimits {
					return
				}
				if l, ok := d.limit(lv, fmt.Sprintf("limits[%d]", i)); ok {
					raw.limits = append(raw.limits, l)
				}
			})
		case "annotations":
			raw.annotations = d.annotations(v)
		case "tool_pins":
			raw.pins = d.toolPins(v)
		case "audit_args":
			raw.auditArgs = d.auditArgs(v)
		case "node_owners":
			raw.owners = d.nodeOwners(v)
		case "tests":
			d.array(v, "tests", func(i int, tv *hujson.Value) {
				if i == MaxTests {
					d.fail(tv.StartOffset, "tests", ErrInvalid, "more than %d tests", MaxTests)
				}
				if i >= MaxTests {
					return
				}
				if t, ok := d.test(tv, fmt.Sprintf("tests[%d]", i)); ok {
					raw.tests = append(raw.tests, t)
				}
			})
		default:
			return false
		}
		return true
	})
	if len(d.errs) > 0 {
		return nil, d.errs
	}
	return &raw, nil
}

func utf8Offset(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// memberOffset returns the offset of the key name in object v, for errors
// about a group as a whole.
func memberOffset(v *hujson.Value, name string) int {
	if obj, ok := v.Value.(*hujson.Object); ok {
		for i := range obj.Members {
			if lit, ok := obj.Members[i].Name.Value.(hujson.Literal); ok && lit.String() == name {
				return obj.Members[i].Name.StartOffset
			}
		}
	}
	return v.StartOffset
}

func kindName(v *hujson.Value) string {
	switch v.Value.Kind() {
	case 'n':
		return "null"
	case 't', 'f':
		return "a boolean"
	case '"':
		return "a string"
	case '0':
		return "a number"
	case '{':
		return "an object"
	case '[':
		return "an array"
	}
	return "unknown"
}

// object calls field for each member of the object v, in order. field
// returns false for an unknown key, which is an error.
func (d *decoder) object(v *hujson.Value, path string, field func(name string, v *hujson.Value) bool) bool {
	obj, ok := v.Value.(*hujson.Object)
	if !ok {
		d.fail(v.StartOffset, orRoot(path), ErrInvalid, "want an object, got %s", kindName(v))
		return false
	}
	seen := make(map[string]bool, len(obj.Members))
	for i := range obj.Members {
		m := &obj.Members[i]
		name, ok := d.literalString(&m.Name, path)
		if !ok {
			continue
		}
		if seen[name] {
			d.fail(m.Name.StartOffset, join(path, name), ErrInvalid, "duplicate key %q", name)
			continue
		}
		seen[name] = true
		if !field(name, &m.Value) {
			d.fail(m.Name.StartOffset, orRoot(path), ErrInvalid, "unknown key %q", name)
		}
	}
	return true
}

func orRoot(path string) string {
	if path == "" {
		return "(top level)"
	}
	return path
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func (d *decoder) array(v *hujson.Value, path string, elem func(i int, v *hujson.Value)) bool {
	arr, ok := v.Value.(*hujson.Array)
	if !ok {
		d.fail(v.StartOffset, path, ErrInvalid, "want an array, got %s", kindName(v))
		return false
	}
	for i := range arr.Elements {
		elem(i, &arr.Elements[i])
	}
	return true
}

func (d *decoder) literalString(v *hujson.Value, path string) (string, bool) {
	return d.literalStringAt(v, path, -1)
}

// literalStringAt decodes a string literal; idx >= 0 names an element of the
// array at path, and the element's path is only built for an error.
func (d *decoder) literalStringAt(v *hujson.Value, path string, idx int) (string, bool) {
	at := func() string {
		if idx < 0 {
			return path
		}
		return path + "[" + strconv.Itoa(idx) + "]"
	}
	lit, ok := v.Value.(hujson.Literal)
	if !ok || lit.Kind() != '"' {
		d.fail(v.StartOffset, at(), ErrInvalid, "want a string, got %s", kindName(v))
		return "", false
	}
	if bytes.IndexByte(lit, '\\') < 0 {
		// No escapes: the text between the quotes is the string (the parser
		// has already checked it, and the document is valid UTF-8).
		return string(lit[1 : len(lit)-1]), true
	}
	var s string
	if err := json.Unmarshal(lit, &s); err != nil || !utf8.ValidString(s) {
		d.fail(v.StartOffset, at(), ErrSyntax, "invalid string")
		return "", false
	}
	return s, true
}

func (d *decoder) string(v *hujson.Value, path string) (str, bool) {
	s, ok := d.literalString(v, path)
	return str{s, v.StartOffset}, ok
}

func (d *decoder) stringList(v *hujson.Value, path string) (strList, bool) {
	l := strList{off: v.StartOffset}
	n := len(d.errs)
	good := d.array(v, path, func(i int, ev *hujson.Value) {
		s, ok := d.literalStringAt(ev, path, i)
		if ok {
			l.items = append(l.items, str{s, ev.StartOffset})
		}
	})
	return l, good && len(d.errs) == n
}

func (d *decoder) grant(v *hujson.Value, path string) (rawGrant, bool) {
	g := rawGrant{off: v.StartOffset}
	var hasSrc, hasDst bool
	n := len(d.errs)
	d.object(v, path, func(name string, fv *hujson.Value) bool {
		fp := path + "." + name
		switch name {
		case "src":
			g.src, hasSrc = d.stringList(fv, fp)
		case "dst":
			g.dst, hasDst = d.stringList(fv, fp)
		case "tools", "resources", "prompts", "models", "paths":
			for k, f := range itemFields {
				if f == name {
					if l, ok := d.stringList(fv, fp); ok {
						g.lists[k] = &l
					}
				}
			}
		case "when":
			if s, ok := d.string(fv, fp); ok {
				g.when = &s
			}
		case "on_behalf_of":
			if l, ok := d.stringList(fv, fp); ok {
				g.obo = &l
			}
		case "approval", "approval_timeout":
			if s, ok := d.string(fv, fp); ok {
				if name == "approval" {
					g.approval = &s
				} else {
					g.approvalTimeout = &s
				}
			}
		default:
			return false
		}
		return true
	})
	if len(d.errs) > n {
		return g, false
	}
	for _, side := range []struct {
		name string
		has  bool
		l    strList
	}{{"src", hasSrc, g.src}, {"dst", hasDst, g.dst}} {
		switch {
		case !side.has:
			d.fail(v.StartOffset, path, ErrInvalid, "missing %q", side.name)
		case len(side.l.items) == 0:
			d.fail(side.l.off, path+"."+side.name, ErrInvalid, "must list at least one selector")
		}
	}
	return g, len(d.errs) == n
}

func (d *decoder) test(v *hujson.Value, path string) (rawTest, bool) {
	t := rawTest{off: v.StartOffset}
	var hasSrc, hasDst bool
	n := len(d.errs)
	d.object(v, path, func(name string, fv *hujson.Value) bool {
		fp := path + "." + name
		switch name {
		case "src":
			t.src, hasSrc = d.string(fv, fp)
		case "dst":
			t.dst, hasDst = d.string(fv, fp)
		case "src_tags", "dst_tags":
			if l, ok := d.stringList(fv, fp); ok {
				if name == "src_tags" {
					t.srcTags = &l
				} else {
					t.dstTags = &l
				}
			}
		case "src_user":
			if s, ok := d.string(fv, fp); ok {
				t.srcUser = &s
			}
		case "args":
			if _, ok := fv.Value.(*hujson.Object); !ok {
				d.fail(fv.StartOffset, fp, ErrInvalid, "want an object, got %s", kindName(fv))
				break
			}
			if a, ok := d.anyValue(fv, fp); ok {
				t.args = a.(map[string]any)
			}
		case "tool_hashes":
			t.hashes = d.testHashes(fv, fp)
		case "on_behalf_of":
			if s, ok := d.string(fv, fp); ok {
				t.obo = &s
			}
		case "allow", "deny":
			if l, ok := d.stringList(fv, fp); ok {
				if name == "allow" {
					t.allow = l.items
				} else {
					t.deny = l.items
				}
			}
		default:
			return false
		}
		return true
	})
	if len(d.errs) > n {
		return t, false
	}
	if !hasSrc || !hasDst {
		d.fail(v.StartOffset, path, ErrInvalid, `a test needs "src" and "dst"`)
	}
	if len(t.allow) == 0 && len(t.deny) == 0 {
		d.fail(v.StartOffset, path, ErrInvalid, `a test needs at least one "allow" or "deny" entry`)
	}
	return t, len(d.errs) == n
}

// anyValue decodes v as encoding/json would with UseNumber (numbers become
// json.Number), which is how the gateway decodes real arguments.
func (d *decoder) anyValue(v *hujson.Value, path string) (any, bool) {
	switch x := v.Value.(type) {
	case *hujson.Object:
		m := make(map[string]any, len(x.Members))
		ok := true
		d.object(v, path, func(name string, fv *hujson.Value) bool {
			val, good := d.anyValue(fv, join(path, name))
			m[name] = val
			ok = ok && good
			return true
		})
		return m, ok
	case *hujson.Array:
		out := make([]any, 0, len(x.Elements))
		ok := true
		for i := range x.Elements {
			val, good := d.anyValue(&x.Elements[i], path+"["+strconv.Itoa(i)+"]")
			out = append(out, val)
			ok = ok && good
		}
		return out, ok
	case hujson.Literal:
		switch x.Kind() {
		case 'n':
			return nil, true
		case 't', 'f':
			return x.Bool(), true
		case '0':
			return json.Number(string(x)), true
		case '"':
			return d.literalString(v, path)
		}
	}
	d.fail(v.StartOffset, path, ErrSyntax, "invalid value")
	return nil, false
}
