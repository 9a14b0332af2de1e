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

func filterList(result json.RawMessage, field string, keep func(name string) bool, validated bool) (out json.RawMessage, kept []string, err error) {
	const op = "filter list"
	itemKey, ok := listItemKey(field)
	if !ok {
		return nil, nil, fmt.Errorf("%s: unknown list field %q", op, field)
	}
	if keep == nil {
		return nil, nil, fmt.Errorf("%s: nil keep function", op)
	}

	// The common case is a result that is strictly valid throughout. If the
	// only problem is a key clash, it may sit inside an item, which is then
	// dropped: re-check grammar without key checks and check keys member by
	// member below.
	strict := true
	if validated {
		// Decode checked every byte, keys included.
	} else if err := Validate(result, Limits{MaxBytes: max(len(result), 1)}); err != nil {
		if !errors.Is(err, ErrDuplicateKey) && !errors.Is(err, ErrCaseVariantKey) {
			return nil, nil, fmt.Errorf("%s: %w", op, err)
		}
		s := getScanner(result, DefaultMaxDepth, false)
		err := s.validate()
		putScanner(s)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: %w", op, err)
		}
		strict = false
	}

	start := skipWS(result, 0)
	obj := trimValue(result)
	if obj[0] != '{' {
		return nil, nil, fmt.Errorf("%s: %w: result is not an object", op, ErrInvalidResult)
	}

	var seen map[string][]byte // fold -> key, only when !strict
	if !strict {
		seen = make(map[string][]byte)
	}
	var keptItems [][]byte
	found := false
	arrStart, arrEnd, total := 0, 0, 0 // arrStart at '[', arrEnd after ']', in obj
	it := newObjIter(obj)
	for k, ok := it.nextKey(); ok; k, ok = it.nextKey() {
		if !strict {
			fold := string(appendFold(nil, k))
			if prev, dup := seen[fold]; dup {
				if string(prev) == string(k) {
					return nil, nil, fmt.Errorf("%s: %w: key %q", op, ErrDuplicateKey, clip(k))
				}
				return nil, nil, fmt.Errorf("%s: %w: key %q", op, ErrCaseVariantKey, clip(k))
			}
			seen[fold] = append([]byte(nil), k...)
		}
		if string(k) != field {
			end := skipValue(obj, it.valPos)
			if !strict {
				if err := Validate(obj[it.valPos:end], Limits{MaxBytes: end - it.valPos}); err != nil {
					return nil, nil, fmt.Errorf("%s: %w", op, err)
				}
			}
			it.pos = end
			continue
		}
		found, arrStart = true, it.valPos
		if obj[arrStart] != '[' {
			return nil, nil, fmt.Errorf("%s: %w: %q is not an array", op, ErrInvalidResult, field)
		}
		ai := newArrIter(obj, arrStart)
		for item, ok := ai.next(); ok; item, ok = ai.next() {
			total++
			name, ok := itemName(item, itemKey, strict)
			if !ok || !keep(name) {
				continue
			}
			kept = append(kept, name)
			keptItems = append(keptItems, item)
		}
		arrEnd, it.pos = ai.pos, ai.pos
	}
	if !found {
		return nil, nil, fmt.Errorf("%s: %w: no %q member", op, ErrInvalidResult, field)
	}
	if len(keptItems) == total {
		return result, kept, nil
	}
	arrStart, arrEnd = arrStart+start, arrEnd+start // obj begins at result[start]
	out = make([]byte, 0, len(result))
	out = append(out, result[:arrStart+1]...)
	for i, item := range keptItems {
		if i > 0 {
			out = append(out, ',')
		}
		out = append(out, item...)
	}
	out = append(out, result[arrEnd-1:]...)
	return out, kept, nil
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
