package modelgw

import (
	"bytes"
	"encoding/json"
	"testing"
)

// FuzzDecodeModelBody checks the model body decoder against what an
// upstream written with encoding/json reads: whatever decodeModelBody
// accepts, encoding/json accepts too, and a struct that binds keys
// case-insensitively (as such an upstream does) reads the same model,
// stream and stream_options.include_usage as the gateway decided on.
func FuzzDecodeModelBody(f *testing.F) {
	for _, s := range []string{
		`{"model":"gpt-4o","messages":[{"role":"user","content":"hi"}],"max_tokens":10}`,
		`{"model":"gpt-4o","stream":true,"stream_options":{"include_usage":true}}`,
		`{"model":"gpt-4o","Stream":true}`,
		`{"model":"gpt-4o","stream_options":{"Include_Usage":false}}`,
		`{"MODEL":"gpt-4o"}`,
		`{"model":"a","model":"b"}`,
		`{"model":"a","Model":"b"}`,
		`{"model":"a","\u212aey":1,"\u017ftream":true}`,
		`{"model":"gpt-4o","max_tokens":1e400}`,
		`{"model":"gpt-4o"} {}`,
		`{"model":"\ud800"}`,
		"{\"model\":\"\xff\"}",
		`[{"model":"gpt-4o"}]`,
		`{"model":1}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		model, fields, err := decodeModelBody(b)
		if err != nil {
			return
		}
		var generic map[string]any
		dec := json.NewDecoder(bytes.NewReader(b))
		dec.UseNumber()
		if err := dec.Decode(&generic); err != nil {
			t.Fatalf("encoding/json rejects accepted body %q: %v", b, err)
		}
		if generic["model"] != model || len(generic) != len(fields) {
			t.Fatalf("%q: model %q, %d fields; encoding/json reads %v, %d fields", b, model, len(fields), generic["model"], len(generic))
		}
		var bound struct {
			Model         string `json:"model"`
			Stream        *bool  `json:"stream"`
			StreamOptions *struct {
				IncludeUsage *bool `json:"include_usage"`
			} `json:"stream_options"`
		}
		if json.Unmarshal(b, &bound) != nil {
			return // a field of another type: the upstream refuses the body
		}
		if bound.Model != model {
			t.Fatalf("%q: the gateway decided on model %q, a case-insensitive upstream reads %q", b, model, bound.Model)
		}
		if stream, ok := fields["stream"].(bool); bound.Stream != nil && (!ok || stream != *bound.Stream) {
			t.Fatalf("%q: stream %v (%v), a case-insensitive upstream reads %v", b, stream, ok, *bound.Stream)
		}
		opts, _ := fields["stream_options"].(map[string]any)
		if include, ok := opts["include_usage"].(bool); bound.StreamOptions != nil && bound.StreamOptions.IncludeUsage != nil &&
			(!ok || include != *bound.StreamOptions.IncludeUsage) {
			t.Fatalf("%q: include_usage %v (%v), a case-insensitive upstream reads %v", b, include, ok, *bound.StreamOptions.IncludeUsage)
		}
	})
}
