package mcpwire

import (
	"encoding/json"
	"errors"
	"fmt"
)

// listItemKey returns the member that names an item of the list field.
func listItemKey(field string) (string, bool) {
	switch field {
	case "tools", "prompts":
		return "name", true
	case "resources":
		return "uri", true
	case "resourceTemplates":
		return "uriTemplate", true
	case "tasks":
		return "taskId", true
	}
	return "", false
}

// FilterList rewrites a list result (tools/list, prompts/list, resources/list,
// resources/templates/list, tasks/list): field is "tools", "prompts",
// "resources", "resourceTemplates" or "tasks"; each item's key ("name" for
// tools/prompts, "uri" for resources, "uriTemplate" for templates, "taskId"
// for tasks) is passed to keep; items for which
// keep is false are removed; every other field of the result and of kept
// items is preserved byte-for-byte (nextCursor, _meta, ...). Items that are
// not objects, lack the key, hold it as anything but a non-empty string
// without control characters, or have duplicate or case-variant keys of
// their own are removed (fail closed). Also returns the kept names, in order.
//
// The result must be strictly valid JSON (the rules of Decode, at
// DefaultMaxDepth, without a size limit: Decode already bounded the message
// holding it) and an object with field as an array; anything else is an
// error. When every item is kept, out is result itself; otherwise it is a
// new slice in which kept items are separated by single commas.
func FilterList(result json.RawMessage, field string, keep func(name string) bool) (out json.RawMessage, kept []string, err error) {
	return filterList(result, field, keep, false)
}

// FilterResult is FilterList applied to m.Result. When m came from Decode
// and m.Result was not replaced, the strict validation FilterList starts
// with has already been done and is skipped, which halves the cost.
func (m *Message) FilterResult(field string, keep func(name string) bool) (out json.RawMessage, kept []string, err error) {
	if len(m.Result) == 0 {
		return nil, nil, fmt.Errorf("filter list: %w: message has no result", ErrInvalidResult)
	}
	return filterList(m.Result, field, keep, sameSlice(m.Result, m.result))
}

// filterList validates result, walks its members to filter the list field,
// then splices the kept items back in. The order is the contract: the walk
// trusts the grammar that validation established (it skips values without
// re-scanning them), and nothing is spliced unless the whole result passed.
func filterList(result json.RawMessage, field string, keep func(name string) bool, validated bool) (out json.RawMessage, kept []string, err error) {
	const op = "filter list"
	itemKey, ok := listItemKey(field)
	if !ok {
		return nil, nil, fmt.Errorf("%s: unknown list field %q", op, field)
	}
	if keep == nil {
		return nil, nil, fmt.Errorf("%s: nil keep function", op)
	}
	strict := true
	if !validated { // else Decode checked every byte, keys included
		if strict, err = validateResult(result); err != nil {
			return nil, nil, fmt.Errorf("%s: %w", op, err)
		}
	}
	start := skipWS(result, 0)
	obj := trimValue(result)
	if obj[0] != '{' {
		return nil, nil, fmt.Errorf("%s: %w: result is not an object", op, ErrInvalidResult)
	}
	l, err := filterMembers(obj, field, itemKey, strict, keep)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", op, err)
	}
	if len(l.items) == l.total {
		return result, l.names, nil
	}
	return l.splice(result, start), l.names, nil
}

// validateResult checks result strictly. strict reports whether its keys
// passed too. The common case is a result that is strictly valid
// throughout; if the only problem is a key clash, it may sit inside an
// item, which is then dropped rather than failing the whole list: the
// grammar is re-checked without key checks, and strict is false so that
// filterMembers checks keys member by member.
func validateResult(result json.RawMessage) (strict bool, err error) {
	err = Validate(result, Limits{MaxBytes: max(len(result), 1)})
	if err == nil {
		return true, nil
	}
	if !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrCaseVariantKey) {
		return false, err
	}
	s := getScanner(result, DefaultMaxDepth, false)
	err = s.validate()
	putScanner(s)
	return false, err
}

// filteredList is the list member of a result after filtering.
type filteredList struct {
	start, end int      // the array in the result object: at '[', after ']'
	total      int      // items in the array
	items      [][]byte // the kept items, in order
	names      []string // their names
}

// filterMembers walks the members of the result object obj and filters
// the array under field. Unless strict, the result's keys were not checked
// as a whole: each member key is checked against the others, and each
// other member's value is validated here (an item's own keys are checked
// by itemName, which drops the item instead). A key clash is found only
// when its second key is reached, so keep may have been called for items
// of a result that then fails.
func filterMembers(obj []byte, field, itemKey string, strict bool, keep func(name string) bool) (l filteredList, err error) {
	var keys memberKeys
	if !strict {
		keys = make(memberKeys)
	}
	found := false
	it := newObjIter(obj)
	for k, ok := it.nextKey(); ok; k, ok = it.nextKey() {
		if !strict {
			if err := keys.add(k); err != nil {
				return l, err
			}
		}
		if string(k) != field {
			end := skipValue(obj, it.valPos)
			if !strict {
				if err := Validate(obj[it.valPos:end], Limits{MaxBytes: end - it.valPos}); err != nil {
					return l, err
				}
			}
			it.pos = end
			continue
		}
		found, l.start = true, it.valPos
		if obj[l.start] != '[' {
			return l, fmt.Errorf("%w: %q is not an array", ErrInvalidResult, field)
		}
		l.filterItems(obj, itemKey, strict, keep)
		it.pos = l.end
	}
	if !found {
		return l, fmt.Errorf("%w: no %q member", ErrInvalidResult, field)
	}
	return l, nil
}

// filterItems passes the name of each item of the array at obj[l.start] to
// keep, in order, records the items kept and sets l.end. Items without a
// valid name are dropped without asking keep (fail closed).
func (l *filteredList) filterItems(obj []byte, itemKey string, strict bool, keep func(name string) bool) {
	ai := newArrIter(obj, l.start)
	for item, ok := ai.next(); ok; item, ok = ai.next() {
		l.total++
		name, ok := itemName(item, itemKey, strict)
		if !ok || !keep(name) {
			continue
		}
		l.names = append(l.names, name)
		l.items = append(l.items, item)
	}
	l.end = ai.pos
}

// splice returns a copy of result with the array's items replaced by the
// kept ones, separated by single commas; every other byte is kept. The
// result object (where l's offsets point) begins at result[start].
func (l *filteredList) splice(result json.RawMessage, start int) json.RawMessage {
	arrStart, arrEnd := l.start+start, l.end+start
	out := make([]byte, 0, len(result))
	out = append(out, result[:arrStart+1]...)
	for i, item := range l.items {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, item...)
	}
	return append(out, result[arrEnd-1:]...)
}

// memberKeys finds duplicate and case-variant keys among the members of
// one object, for a result whose keys were not checked as a whole: it maps
// each key's case fold to the key as first seen.
type memberKeys map[string][]byte

func (s memberKeys) add(k []byte) error {
	fold := string(appendFold(nil, k))
	if prev, dup := s[fold]; dup {
		if string(prev) == string(k) {
			return fmt.Errorf("%w: key %q", ErrDuplicateKey, clip(k))
		}
		return fmt.Errorf("%w: key %q", ErrCaseVariantKey, clip(k))
	}
	s[fold] = append([]byte(nil), k...)
	return nil
}

// itemName returns the name of a list item, or false when the item must be
// dropped. When strict is false the item's keys have not been checked yet.
func itemName(item []byte, key string, strict bool) (string, bool) {
	if item[0] != '{' {
		return "", false
	}
	if !strict && Validate(item, Limits{MaxBytes: len(item)}) != nil {
		return "", false
	}
	it := newObjIter(item)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		if string(k) == key {
			name, err := nameValue(key, v)
			return name, err == nil
		}
	}
	return "", false
}

// ResultHas reports whether m is a success response whose result is an
// object holding field (spelled exactly) with an array value: the shape of
// a list result ("tools", "prompts", "resources", "resourceTemplates",
// "tasks"). A key that differs from field only in case also counts, so that
// a caller filtering the result fails (closed) rather than passing a list a
// case-insensitive client would read.
func (m *Message) ResultHas(field string) bool {
	if m.Kind != KindResponse || len(m.Result) == 0 {
		return false
	}
	r := m.Result
	if !sameSlice(r, m.result) {
		if Validate(r, Limits{MaxBytes: len(r)}) != nil {
			return false
		}
		r = trimValue(r)
	}
	if r[0] != '{' {
		return false
	}
	it := newObjIter(r)
	for k, ok := it.nextKey(); ok; k, ok = it.nextKey() {
		end := skipValue(r, it.valPos)
		if _, err := keyIndex(k, field); err != nil {
			return true // a case variant: filtering it fails, which drops it
		}
		if string(k) == field {
			return r[it.valPos] == '['
		}
		it.pos = end
	}
	return false
}
