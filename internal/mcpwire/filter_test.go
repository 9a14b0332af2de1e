package mcpwire

import (
	"errors"
	"reflect"
	"strings"
	"testing"
)

func keepSet(names ...string) func(string) bool {
	return func(n string) bool {
		for _, m := range names {
			if n == m {
				return true
			}
		}
		return false
	}
}

func TestFilterListKeepsAllowedItemsAndEverythingElse(t *testing.T) {
	tests := []struct {
		name     string
		field    string
		in       string
		keep     func(string) bool
		want     string
		wantKept []string
	}{
		{
			name:  "tools with cursor and meta",
			field: "tools",
			in: `{"tools":[{"name":"query","description":"Run SQL","inputSchema":{"type":"object"}},` +
				`{"name":"drop_table","inputSchema":{"type":"object"}},{"name":"list_tables", "annotations" : {"readOnlyHint":true}}],` +
				` "nextCursor" : "abc==", "_meta":{"x":[1, 2]}}`,
			keep: keepSet("query", "list_tables"),
			want: `{"tools":[{"name":"query","description":"Run SQL","inputSchema":{"type":"object"}},{"name":"list_tables", "annotations" : {"readOnlyHint":true}}],` +
				` "nextCursor" : "abc==", "_meta":{"x":[1, 2]}}`,
			wantKept: []string{"query", "list_tables"},
		},
		{
			name:     "everything kept returns input",
			field:    "tools",
			in:       `{ "tools" : [ {"name":"a"} , {"name":"b"} ] }`,
			keep:     keepSet("a", "b"),
			want:     `{ "tools" : [ {"name":"a"} , {"name":"b"} ] }`,
			wantKept: []string{"a", "b"},
		},
		{
			name:  "nothing kept",
			field: "prompts",
			in:    `{"prompts":[{"name":"a"},{"name":"b"}],"nextCursor":"c"}`,
			keep:  keepSet(),
			want:  `{"prompts":[],"nextCursor":"c"}`,
		},
		{
			name:     "empty list",
			field:    "tools",
			in:       `{"tools":[]}`,
			keep:     keepSet("a"),
			want:     `{"tools":[]}`,
			wantKept: nil,
		},
		{
			name:     "resources by uri",
			field:    "resources",
			in:       `{"resources":[{"uri":"db://public/a","name":"a"},{"uri":"db://private/b","name":"public"}]}`,
			keep:     func(u string) bool { return strings.HasPrefix(u, "db://public/") },
			want:     `{"resources":[{"uri":"db://public/a","name":"a"}]}`,
			wantKept: []string{"db://public/a"},
		},
		{
			name:     "templates by uriTemplate",
			field:    "resourceTemplates",
			in:       `{"resourceTemplates":[{"uriTemplate":"file:///{p}","name":"f"},{"uriTemplate":"db://{t}","name":"d"}],"nextCursor":"n"}`,
			keep:     keepSet("db://{t}"),
			want:     `{"resourceTemplates":[{"uriTemplate":"db://{t}","name":"d"}],"nextCursor":"n"}`,
			wantKept: []string{"db://{t}"},
		},
		{
			name:     "escaped names are unescaped for keep",
			field:    "tools",
			in:       `{"tools":[{"n\u0061me":"dr\u006fp"},{"name":"query"}]}`,
			keep:     keepSet("drop"),
			want:     `{"tools":[{"n\u0061me":"dr\u006fp"}]}`,
			wantKept: []string{"drop"},
		},
		{
			name:     "items without the key are removed",
			field:    "tools",
			in:       `{"tools":[{"title":"x"},{"Name":"query"},{"name":1},{"name":""},{"name":"a\u0000"},"query",null,{"name":"ok"}]}`,
			keep:     func(string) bool { return true },
			want:     `{"tools":[{"name":"ok"}]}`,
			wantKept: []string{"ok"},
		},
		{
			name:     "items with duplicate or case-variant keys are removed",
			field:    "tools",
			in:       `{"tools":[{"name":"query","name":"drop"},{"name":"query","NAME":"drop"},{"name":"q","inputSchema":{"a":1,"A":2}},{"name":"query"}],"nextCursor":"c"}`,
			keep:     func(string) bool { return true },
			want:     `{"tools":[{"name":"query"}],"nextCursor":"c"}`,
			wantKept: []string{"query"},
		},
		{
			name:     "whitespace around result",
			field:    "tools",
			in:       " \n{\"tools\":[{\"name\":\"a\"},{\"name\":\"b\"}]}\n",
			keep:     keepSet("b"),
			want:     " \n{\"tools\":[{\"name\":\"b\"}]}\n",
			wantKept: []string{"b"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, kept, err := FilterList([]byte(tt.in), tt.field, tt.keep)
			if err != nil {
				t.Fatalf("FilterList: %v", err)
			}
			if string(out) != tt.want {
				t.Errorf("out =\n%s\nwant\n%s", out, tt.want)
			}
			if !reflect.DeepEqual(kept, tt.wantKept) {
				t.Errorf("kept = %q, want %q", kept, tt.wantKept)
			}
			if err := Validate(out, Limits{}); err != nil {
				t.Errorf("output is not strictly valid: %v", err)
			}
		})
	}
}

func TestFilterListRejectsMalformedResults(t *testing.T) {
	all := func(string) bool { return true }
	tests := []struct {
		name  string
		field string
		in    string
		want  error
	}{
		{"not JSON", "tools", `{"tools":[}`, ErrSyntax},
		{"trailing data", "tools", `{"tools":[]} []`, ErrSyntax},
		{"invalid UTF-8", "tools", "{\"tools\":[{\"name\":\"\xff\"}]}", ErrInvalidUTF8},
		{"too deep", "tools", `{"tools":[{"name":"a","x":` + nest(70) + `}]}`, ErrTooDeep},
		{"not an object", "tools", `[{"name":"a"}]`, ErrInvalidResult},
		{"field missing", "tools", `{"prompts":[]}`, ErrInvalidResult},
		{"field case variant only", "tools", `{"Tools":[{"name":"a"}]}`, ErrInvalidResult},
		{"field not array", "tools", `{"tools":{"name":"a"}}`, ErrInvalidResult},
		{"field null", "tools", `{"tools":null}`, ErrInvalidResult},
		{"duplicate field", "tools", `{"tools":[],"tools":[{"name":"drop"}]}`, ErrDuplicateKey},
		{"case-variant field", "tools", `{"tools":[],"TOOLS":[{"name":"drop"}]}`, ErrCaseVariantKey},
		{"case-variant field with item clash", "tools", `{"tools":[{"name":"a","Name":"b"}],"TOOLS":[]}`, ErrCaseVariantKey},
		{"duplicate inside other member", "tools", `{"tools":[{"name":"a","Name":"b"}],"_meta":{"a":1,"a":2}}`, ErrDuplicateKey},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, kept, err := FilterList([]byte(tt.in), tt.field, all)
			if !errors.Is(err, tt.want) || out != nil || kept != nil {
				t.Errorf("FilterList = %q, %q, %v; want error %v", out, kept, err, tt.want)
			}
		})
	}
}

func TestFilterListRejectsBadArguments(t *testing.T) {
	if _, _, err := FilterList([]byte(`{"tools":[]}`), "widgets", keepSet()); err == nil {
		t.Error("FilterList accepted an unknown field")
	}
	if _, _, err := FilterList([]byte(`{"tools":[]}`), "tools", nil); err == nil {
		t.Error("FilterList accepted a nil keep function")
	}
}

func TestFilterListOfDecodedResponse(t *testing.T) {
	in := `{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"query"},{"name":"drop_table"}],"nextCursor":"x"}}`
	m := decodeOne(t, in)
	out, kept, err := FilterList(m.Result, "tools", keepSet("query"))
	if err != nil {
		t.Fatal(err)
	}
	if string(out) != `{"tools":[{"name":"query"}],"nextCursor":"x"}` || !reflect.DeepEqual(kept, []string{"query"}) {
		t.Errorf("FilterList = %s, %q", out, kept)
	}
}

func TestFilterResultMatchesFilterList(t *testing.T) {
	in := `{"jsonrpc":"2.0","id":3,"result":{"tools":[{"name":"query"},{"name":"drop_table"}],"nextCursor":"x"}}`
	m := decodeOne(t, in)
	want, wantKept, err := FilterList(m.Result, "tools", keepSet("query"))
	if err != nil {
		t.Fatal(err)
	}
	got, kept, err := m.FilterResult("tools", keepSet("query"))
	if err != nil || string(got) != string(want) || !reflect.DeepEqual(kept, wantKept) {
		t.Errorf("FilterResult = %s, %q, %v; want %s, %q", got, kept, err, want, wantKept)
	}
}

func TestFilterResultRevalidatesReplacedResult(t *testing.T) {
	m := decodeOne(t, `{"jsonrpc":"2.0","id":3,"result":{"tools":[]}}`)
	m.Result = []byte(`{"tools":[],"tools":[{"name":"drop"}]}`)
	if _, _, err := m.FilterResult("tools", keepSet("drop")); !errors.Is(err, ErrDuplicateKey) {
		t.Errorf("FilterResult error = %v, want ErrDuplicateKey", err)
	}
	req := decodeOne(t, `{"jsonrpc":"2.0","id":3,"method":"tools/list"}`)
	if _, _, err := req.FilterResult("tools", keepSet()); !errors.Is(err, ErrInvalidResult) {
		t.Errorf("FilterResult on a request = %v, want ErrInvalidResult", err)
	}
}
