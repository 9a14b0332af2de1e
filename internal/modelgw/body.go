package modelgw

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/agentmesh/agentmesh/internal/mcpwire"
	"github.com/agentmesh/agentmesh/internal/policy"
)

var errBody = errors.New("body must be one JSON object with unique keys and a string \"model\"")

// decodeModelBody decodes a model request body strictly: first mcpwire's
// byte-level validation at every depth (grammar, UTF-8, nesting, no
// duplicate or case-variant keys: `when` may look at nested fields such as
// args.stream_options.include_usage), then exactly one JSON object, no key
// repeated (case-insensitively: upstreams disagree on which of two case
// variants wins), numbers kept as json.Number, and "model" a non-empty
// string.
func decodeModelBody(b []byte) (model string, fields map[string]any, err error) {
	if err := mcpwire.Validate(b, mcpwire.Limits{MaxBytes: len(b) + 1}); err != nil {
		return "", nil, fmt.Errorf("%w: %w", errBody, err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil || tok != json.Delim('{') {
		return "", nil, errBody
	}
	fields = make(map[string]any)
	seen := make(map[string]bool)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return "", nil, errBody
		}
		key, ok := tok.(string)
		if !ok {
			return "", nil, errBody
		}
		fold := strings.ToLower(key)
		if seen[fold] {
			return "", nil, fmt.Errorf("%w: duplicate key %q", errBody, key)
		}
		seen[fold] = true
		var v any
		if err := dec.Decode(&v); err != nil {
			return "", nil, errBody
		}
		fields[key] = v
	}
	if _, err := dec.Token(); err != nil {
		return "", nil, errBody
	}
	if _, err := dec.Token(); err != io.EOF {
		return "", nil, fmt.Errorf("%w: data after the object", errBody)
	}
	if k, bad := bodyKeys.Find(fields); bad {
		return "", nil, fmt.Errorf("%w: key %q differs only in case from a field the gateway reads", errBody, k)
	}
	model, ok := fields["model"].(string)
	if !ok || model == "" {
		return "", nil, fmt.Errorf("%w: missing model", errBody)
	}
	return model, fields, nil
}

// bodyKeys are the fields the gateway itself reads in a body. A lone key
// that differs from one of them only in case ("Model", "Stream",
// "stream_options": {"Include_Usage": ...}) is refused: the gateway would
// not see it while an upstream that binds keys case-insensitively would
// (see policy.ArgKeys; the keys a policy's when reads are refused by the
// policy itself, reason case_variant_key).
var bodyKeys = policy.NewArgKeys("model", "stream", "stream_options.include_usage")

// wantsStreamWithoutUsage reports whether a chat or text completion body
// asks for a stream without stream_options.include_usage: its tokens would
// never be reported, so a token limit could not count them.
func wantsStreamWithoutUsage(path string, fields map[string]any) bool {
	if path != "/v1/chat/completions" && path != "/v1/completions" {
		return false // the Responses API reports usage in response.completed
	}
	if stream, _ := fields["stream"].(bool); !stream {
		return false
	}
	opts, _ := fields["stream_options"].(map[string]any)
	include, _ := opts["include_usage"].(bool)
	return !include
}
