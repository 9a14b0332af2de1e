package tracing

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"strings"

	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"
)

// Bounds on what a peer's trace context may make us parse and forward.
// W3C Trace Context asks vendors to propagate at least 512 characters of
// tracestate; a longer one is dropped whole (the traceparent stays).
// A version-00 traceparent is 55 characters; later versions may append
// fields, so a little more is accepted.
const (
	MaxTraceParentLen = 128
	MaxTraceStateLen  = 512
)

// The params._meta keys of W3C Trace Context (SEP-414: unprefixed, an
// exception to _meta's DNS-prefix rule, with the W3C header's value
// format). Baggage, the third key SEP-414 names, is neither read nor sent.
const (
	MetaKeyTraceParent = "traceparent"
	MetaKeyTraceState  = "tracestate"
)

// prop is the W3C Trace Context propagator: strict parsing of traceparent
// (a malformed one yields no parent), tracestate parsed with its own
// limits (32 members) and dropped when invalid.
var prop = propagation.TraceContext{}

// boundedCarrier drops values over the bounds before the propagator sees
// them.
type boundedCarrier struct{ tp, ts string }

func (c boundedCarrier) Get(key string) string {
	switch key {
	case MetaKeyTraceParent:
		if len(c.tp) <= MaxTraceParentLen {
			return c.tp
		}
	case MetaKeyTraceState:
		if len(c.ts) <= MaxTraceStateLen {
			return c.ts
		}
	}
	return ""
}

func (boundedCarrier) Set(string, string) {}
func (boundedCarrier) Keys() []string     { return []string{MetaKeyTraceParent, MetaKeyTraceState} }

// ExtractValues returns ctx with the remote span context that traceparent
// and tracestate describe, and whether there was a valid one. An invalid
// or oversized traceparent leaves ctx as it was; an invalid or oversized
// tracestate is dropped.
func ExtractValues(ctx context.Context, traceparent, tracestate string) (context.Context, bool) {
	if traceparent == "" {
		return ctx, false
	}
	out := prop.Extract(ctx, boundedCarrier{tp: traceparent, ts: tracestate})
	if !trace.SpanContextFromContext(out).IsValid() {
		return ctx, false
	}
	return out, true
}

// Extract is ExtractValues for the traceparent and tracestate headers of h
// (the first of each).
func Extract(ctx context.Context, h http.Header) (context.Context, bool) {
	return ExtractValues(ctx, h.Get("Traceparent"), h.Get("Tracestate"))
}

// Inject sets the traceparent and tracestate headers of h from the span in
// ctx, replacing any there; it sets nothing when ctx has no valid span.
func Inject(ctx context.Context, h http.Header) {
	h.Del("Traceparent")
	h.Del("Tracestate")
	prop.Inject(ctx, propagation.HeaderCarrier(h))
}

// InjectMeta returns the JSON-RPC request or notification msg with the
// trace context of the span in ctx in params._meta (traceparent, and
// tracestate when there is one), replacing what the sender put under those
// keys or under keys that differ from them only in case. It returns msg
// itself and false when ctx has no valid span or msg is not a JSON object
// with a method whose params (if any) and _meta (if any) are objects.
// Values other than these keys are kept byte for byte, except for
// insignificant whitespace; member order may change.
//
// Only messages of MCP 2026-07-28 and later carry trace context in _meta:
// callers check the version.
func InjectMeta(ctx context.Context, msg []byte) ([]byte, bool) {
	c := propagation.MapCarrier{}
	prop.Inject(ctx, c)
	tp := c[MetaKeyTraceParent]
	if tp == "" {
		return msg, false
	}
	var top map[string]json.RawMessage
	if err := json.Unmarshal(msg, &top); err != nil || top == nil || len(top["method"]) == 0 {
		return msg, false
	}
	params, ok := object(top["params"])
	if !ok {
		return msg, false
	}
	meta, ok := object(params["_meta"])
	if !ok {
		return msg, false
	}
	for k := range meta {
		if strings.EqualFold(k, MetaKeyTraceParent) || strings.EqualFold(k, MetaKeyTraceState) {
			delete(meta, k)
		}
	}
	meta[MetaKeyTraceParent] = quote(tp)
	if ts := c[MetaKeyTraceState]; ts != "" {
		meta[MetaKeyTraceState] = quote(ts)
	}
	var err error
	if params["_meta"], err = encode(meta); err != nil {
		return msg, false
	}
	if top["params"], err = encode(params); err != nil {
		return msg, false
	}
	out, err := encode(top)
	if err != nil {
		return msg, false
	}
	return out, true
}

// object decodes raw as a JSON object; absent or null is an empty one.
func object(raw json.RawMessage) (map[string]json.RawMessage, bool) {
	if len(raw) == 0 || string(raw) == "null" {
		return map[string]json.RawMessage{}, true
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, false
	}
	return m, true
}

// quote encodes s (a traceparent or tracestate: visible ASCII) as a JSON
// string.
func quote(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}

// encode marshals v without HTML escaping, so that strings the sender
// wrote keep their bytes.
func encode(v any) (json.RawMessage, error) {
	var buf bytes.Buffer
	e := json.NewEncoder(&buf)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}
