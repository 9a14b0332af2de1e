package mcpwire

import (
	"bytes"
	"fmt"
)

// Multi round-trip requests (MCP 2026-07-28, SEP-2322). A server that needs
// input from the client to finish a tools/call, prompts/get or
// resources/read answers with a result whose resultType is
// "input_required", carrying inputRequests (id → {method, params}) and an
// opaque requestState; the client fulfils the requests and sends the same
// request again with params.inputResponses (id → result) and
// params.requestState echoed.
const (
	// ResultTypeInputRequired is result.resultType of such an answer.
	ResultTypeInputRequired = "input_required"
	// ParamRequestState and ParamInputResponses are the params keys of the
	// retried request.
	ParamRequestState   = "requestState"
	ParamInputResponses = "inputResponses"
)

// InputRetry is what a retried request carries.
type InputRetry struct {
	// State is params.requestState; "" when absent.
	State string
	// Responses holds the members of params.inputResponses, each value as
	// received; nil when absent or null.
	Responses map[string][]byte
}

// InputRetry reads params.requestState (a string, or absent/null) and
// params.inputResponses (an object, or absent/null) of a tools/call,
// prompts/get or resources/read request. Keys that differ from those only
// in case are ErrCaseVariantKey, and a value of another type is
// ErrInvalidParams: the gateway must read the state the upstream would.
func (m *Message) InputRetry() (InputRetry, error) {
	const op = "input retry"
	p, err := m.paramsObject(op, "tools/call", "prompts/get", "resources/read")
	if err != nil {
		return InputRetry{}, err
	}
	var in InputRetry
	it := newObjIter(p)
	for k, v, ok := it.next(); ok; k, v, ok = it.next() {
		i, err := keyIndex(k, ParamRequestState, ParamInputResponses)
		if err != nil {
			return InputRetry{}, fmt.Errorf("%s: %w", op, err)
		}
		switch {
		case i < 0 || v[0] == 'n':
		case i == 0 && v[0] != '"':
			return InputRetry{}, fmt.Errorf("%s: %w", op, invalidParams("requestState must be a string"))
		case i == 0:
			in.State = string(stringBytes(nil, v))
		case v[0] != '{':
			return InputRetry{}, fmt.Errorf("%s: %w", op, invalidParams("inputResponses must be an object"))
		default:
			in.Responses = map[string][]byte{}
			ri := newObjIter(v)
			for rk, rv, ok := ri.next(); ok; rk, rv, ok = ri.next() {
				in.Responses[string(rk)] = rv
			}
		}
	}
	return in, nil
}

// DeclaresElicitation reports whether the per-request client capabilities
// of MCP 2026-07-28 (params._meta["io.modelcontextprotocol/clientCapabilities"])
// declare form-mode elicitation: elicitation is an object that is empty
// (form, as before 2025-11-25 split the modes) or has "form". Keys that
// differ from the ones read only in case are ErrCaseVariantKey.
func (m *Message) DeclaresElicitation() (bool, error) {
	meta, err := m.paramsMeta()
	if err != nil {
		return false, err
	}
	caps, err := member(meta, metaKeyClientCapabilities)
	if err == nil {
		caps, err = member(caps, "elicitation")
	}
	if err != nil {
		return false, fmt.Errorf("client capabilities: _meta: %w", err)
	}
	if len(caps) == 0 || caps[0] != '{' {
		return false, nil
	}
	empty := true
	it := newObjIter(caps)
	for k, _, ok := it.next(); ok; k, _, ok = it.next() {
		empty = false
		i, err := keyIndex(k, "form")
		if err != nil {
			return false, fmt.Errorf("client capabilities: _meta: %w", err)
		}
		if i == 0 {
			return true, nil
		}
	}
	return empty, nil
}

// WithoutInputRetry returns the request msg (one message, as Decode
// validated it) without params.requestState and params.inputResponses,
// every other byte as it was: a retry the gateway answers itself must
// reach the upstream as the request it first held. It returns msg itself
// when params has neither.
func WithoutInputRetry(msg []byte) ([]byte, error) {
	top := skipWS(msg, 0)
	if top >= len(msg) || msg[top] != '{' {
		return nil, fmt.Errorf("input retry: %w", invalidParams("not an object"))
	}
	ps, pe := -1, -1
	eachMember(msg[top:], func(key []byte, _, v, end int) {
		if string(key) == "params" {
			ps, pe = top+v, top+end
		}
	})
	if ps < 0 || msg[ps] != '{' {
		return msg, nil
	}
	params := msg[ps:pe]
	var kept [][]byte
	dropped := false
	eachMember(params, func(key []byte, start, _, end int) {
		if string(key) == ParamRequestState || string(key) == ParamInputResponses {
			dropped = true
		} else {
			kept = append(kept, params[start:end])
		}
	})
	if !dropped {
		return msg, nil
	}
	out := make([]byte, 0, len(msg))
	out = append(out, msg[:ps]...)
	out = append(out, '{')
	out = append(out, bytes.Join(kept, []byte{','})...)
	out = append(out, '}')
	return append(out, msg[pe:]...), nil
}

// eachMember calls f for each member of the validated object obj with its
// unescaped key and the offsets of the member's start (its key's opening
// quote), of its value and of the end of its value.
func eachMember(obj []byte, f func(key []byte, start, val, end int)) {
	for i := 1; ; {
		i = skipWS(obj, i)
		if i >= len(obj) || obj[i] == '}' {
			return
		}
		if obj[i] == ',' {
			i = skipWS(obj, i+1)
		}
		kEnd := skipString(obj, i)
		v := skipWS(obj, skipWS(obj, kEnd)+1)
		end := skipValue(obj, v)
		f(unquote(nil, obj[i:kEnd]), i, v, end)
		i = end
	}
}
