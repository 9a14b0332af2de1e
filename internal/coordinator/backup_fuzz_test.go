package coordinator

import (
	"bytes"
	"compress/gzip"
	"testing"
)

// countSink counts what copyTo hands it and checks that each row has as
// many values as its table has columns.
type countSink struct {
	t       *testing.T
	columns int
	rows    int64
}

func (s *countSink) table(name string, columns, types []string) error {
	s.columns = len(columns)
	return nil
}

func (s *countSink) row(values []any) error {
	if len(values) != s.columns {
		s.t.Fatalf("a row of %d values for %d columns", len(values), s.columns)
	}
	for _, v := range values {
		switch v.(type) {
		case nil, int64, string, []byte:
		default:
			s.t.Fatalf("a %T value; a sink takes nil, int64, string or []byte", v)
		}
	}
	s.rows++
	return nil
}

func (s *countSink) endTable(string, int64) error { return nil }

// FuzzBackupReader feeds restore's reader a backup's lines (gzip'd here,
// so that the fuzzer works on the JSON): whatever they are, it returns an
// error or a row count equal to the rows it delivered, of the right
// width and types, and never panics.
func FuzzBackupReader(f *testing.F) {
	f.Add([]byte(`{"format":"agentmesh-backup","version":1,"dialect":"sqlite","schema":{"registry":2}}
{"table":"meta","columns":["k","v","n","b"],"types":["text","text","int","bytes"]}
["trust_domain","test.mesh",9223372036854775807,"AAEC"]
[null,"x",-1,null]
{"end":"meta","rows":2}
{"end":"","rows":2}
`))
	f.Add([]byte(`{"format":"agentmesh-backup","version":1,"dialect":"postgresql"}
{"end":"","rows":0}
`))
	f.Fuzz(func(t *testing.T, lines []byte) {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write(lines)
		zw.Close()
		br, err := openBackup(&buf)
		if err != nil {
			return
		}
		sink := &countSink{t: t}
		n, err := br.copyTo(sink)
		if err == nil && n != sink.rows {
			t.Fatalf("copyTo says %d rows and delivered %d", n, sink.rows)
		}
	})
}

func TestBackupReaderReadsTypedValuesExactly(t *testing.T) {
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write([]byte(`{"format":"agentmesh-backup","version":1,"dialect":"sqlite","schema":{"registry":2}}
{"table":"meta","columns":["k","n","b"],"types":["text","int","bytes"]}
["a",9223372036854775807,"AAEC"]
[null,-9223372036854775808,null]
{"end":"meta","rows":2}
{"end":"","rows":2}
`))
	zw.Close()
	br, err := openBackup(&buf)
	if err != nil {
		t.Fatal(err)
	}
	var got [][]any
	sink := &recordSink{rows: &got}
	if n, err := br.copyTo(sink); err != nil || n != 2 {
		t.Fatalf("copyTo: %d rows, %v", n, err)
	}
	if got[0][0] != "a" || got[0][1] != int64(9223372036854775807) || !bytes.Equal(got[0][2].([]byte), []byte{0, 1, 2}) ||
		got[1][0] != nil || got[1][1] != int64(-9223372036854775808) || got[1][2] != nil {
		t.Fatalf("rows read back as %#v", got)
	}
}

type recordSink struct{ rows *[][]any }

func (s *recordSink) table(string, []string, []string) error { return nil }
func (s *recordSink) row(v []any) error                      { *s.rows = append(*s.rows, v); return nil }
func (s *recordSink) endTable(string, int64) error           { return nil }
