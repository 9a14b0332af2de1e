package audit

import (
	"bytes"
	"encoding/json"
	"reflect"
	"strings"
	"testing"
	"time"
)

// referenceCanonical is the definition appendCanonical must match.
func referenceCanonical(t testing.TB, e Event) []byte {
	e.Seq = 0
	e.Time, e.First = e.Time.UTC(), e.First.UTC()
	b, err := json.Marshal(&e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// fillEvent sets every field of an Event to a non-zero value built from s,
// so a field added to Event but not to appendCanonical makes the
// comparison fail.
func fillEvent(t testing.TB, s string, n int64) Event {
	var e Event
	v := reflect.ValueOf(&e).Elem()
	for i := 0; i < v.NumField(); i++ {
		f := v.Field(i)
		switch f.Kind() {
		case reflect.String:
			f.SetString(s + v.Type().Field(i).Name)
		case reflect.Int, reflect.Int64:
			f.SetInt(n + int64(i))
		case reflect.Pointer:
			f.Set(reflect.New(f.Type().Elem()))
			u := f.Elem()
			for j := 0; j < u.NumField(); j++ {
				switch uf := u.Field(j); uf.Kind() {
				case reflect.String:
					uf.SetString(s + u.Type().Field(j).Name)
				default:
					uf.SetInt(n + int64(j))
				}
			}
		case reflect.Struct:
			if f.Type() != reflect.TypeOf(time.Time{}) {
				t.Fatalf("field %s has a type this test does not know; update appendCanonical and this test", v.Type().Field(i).Name)
			}
			f.Set(reflect.ValueOf(time.Unix(1700000000, n).In(time.FixedZone("Z1", 3600))))
		default:
			t.Fatalf("field %s has a type this test does not know; update appendCanonical and this test", v.Type().Field(i).Name)
		}
	}
	return e
}

func TestAppendCanonicalMatchesEncodingJSON(t *testing.T) {
	tricky := []string{
		"plain",
		`quote " backslash \ slash /`,
		"<script>&amp;</script>",
		"ctl \x00\x01\x08\x0c\n\r\t\x1f\x7f",
		"unicode ünï 日本 \u2028 \u2029 😀",
		"bad utf8 \xff\xfe end \xe2\x82",
	}
	for _, s := range tricky {
		for _, n := range []int64{0, 1, -5, 123456789} {
			e := fillEvent(t, s, n)
			got, err := appendCanonical(nil, &e)
			if err != nil {
				t.Fatal(err)
			}
			if want := referenceCanonical(t, e); !bytes.Equal(got, want) {
				t.Fatalf("mismatch for %q:\n got %s\nwant %s", s, got, want)
			}
		}
	}
	// Sparse events exercise omitempty.
	for i := range 20 {
		e := testEvent(i)
		if i%2 == 0 {
			e.Usage = &Usage{TotalTokens: int64(i)}
		}
		e.LatencyUS = 0
		if i%3 == 0 {
			e.TTFBUS, e.Status = int64(i+1), 200+i
		}
		got, _ := appendCanonical(nil, &e)
		if want := referenceCanonical(t, e); !bytes.Equal(got, want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
	}
}

func FuzzAppendCanonicalMatchesEncodingJSON(f *testing.F) {
	f.Add("agent", "<&>\u2028", int64(5), int64(1700000000123456789), int64(0))
	f.Add("", "\xff", int64(0), int64(0), int64(0))
	f.Add("agent", "aggregate", int64(7), int64(1700000000123456789), int64(-60_000_000_001))
	f.Fuzz(func(t *testing.T, a, b string, n, ns, firstDelta int64) {
		e := testEvent(1)
		e.Src, e.Detail, e.Tool = a, b, strings.ToUpper(a)+b
		e.LatencyUS = n
		e.Time = time.Unix(0, ns)
		if firstDelta != 0 {
			// An aggregate: Count and First follow Time.
			e.Count, e.First = n, time.Unix(0, ns+firstDelta)
		}
		got, err := appendCanonical(nil, &e)
		if err != nil {
			t.Skip()
		}
		if want := referenceCanonical(t, e); !bytes.Equal(got, want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
	})
}

func TestAppendCanonicalCoversModelHTTPFields(t *testing.T) {
	e := testEvent(3)
	base, err := appendCanonical(nil, &e)
	if err != nil {
		t.Fatal(err)
	}
	for _, set := range []func(*Event){
		func(e *Event) { e.TTFBUS = 1234 },
		func(e *Event) { e.Status = 429 },
	} {
		c := e
		set(&c)
		got, err := appendCanonical(nil, &c)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Equal(got, base) {
			t.Fatalf("canonical encoding ignores a field: %s", got)
		}
		if want := referenceCanonical(t, c); !bytes.Equal(got, want) {
			t.Fatalf("mismatch:\n got %s\nwant %s", got, want)
		}
	}
}
