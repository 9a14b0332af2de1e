package audit

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"
	"unicode/utf8"
)

// MaxEventSize bounds the canonical encoding of one event. Larger events are
// rejected by Validate, by the spool and by the store.
const MaxEventSize = 64 << 10

// maxIntegritySize bounds an integrity event, which may carry a rejected
// event of up to MaxEventSize in its Detail (JSON inside a JSON string
// at most doubles in size). Nodes cannot ship integrity events, so what a
// node sends stays bounded by MaxEventSize.
const maxIntegritySize = 3 * MaxEventSize

// maxFieldLen bounds each identifying field (ids, names, methods); only
// Detail may use the rest of MaxEventSize.
const maxFieldLen = 4 << 10

// HashSize is the size of a chain hash.
const HashSize = sha256.Size

// Hash is one link of the store's hash chain.
type Hash [HashSize]byte

// Canonical returns the canonical encoding of e: encoding/json of the Event
// with Seq cleared and Time and First in UTC (RFC 3339 with nanoseconds, "Z"). These
// are the bytes the hash chain covers, the spool stores and the store keeps.
// Decoding them with DecodeEvent and encoding again gives the same bytes.
func Canonical(e *Event) ([]byte, error) {
	b, err := appendCanonical(make([]byte, 0, 512), e)
	if err != nil {
		return nil, fmt.Errorf("audit: encode event %.40q: %w", e.ID, err)
	}
	return b, nil
}

// DecodeEvent parses one encoded event strictly: unknown fields are errors
// and the result must pass Validate. The returned event's Time is in UTC.
func DecodeEvent(b []byte) (Event, error) {
	var e Event
	if err := decodeStrict(b, &e); err != nil {
		return Event{}, fmt.Errorf("audit: decode event: %w: %w", ErrInvalidEvent, err)
	}
	e.Time, e.First = e.Time.UTC(), e.First.UTC()
	if err := e.Validate(); err != nil {
		return Event{}, err
	}
	return e, nil
}

// decodeStrict decodes one JSON value from b into v: unknown fields and
// trailing data are errors.
func decodeStrict(b []byte, v any) error {
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return errors.New("trailing data")
	}
	return nil
}

// minTime and maxTime bound event times to what int64 nanoseconds since the
// Unix epoch can hold, the store's representation.
var (
	minTime = time.Unix(0, math.MinInt64).UTC()
	maxTime = time.Unix(0, math.MaxInt64).UTC()
)

// Validate reports whether e is an event agentmesh may store: known version
// and kind, a 32-character lower-case hex id, a time, valid UTF-8, bounded
// sizes. Seq is ignored (the store assigns it). The coordinator rejects a
// batch containing an event that fails Validate; the spool refuses to queue
// one, so a bad event can never block shipping.
func (e *Event) Validate() error {
	_, err := AppendValid(nil, e)
	return err
}

// AppendValid validates e (see Validate) and appends its canonical
// encoding to dst: what the spool writes into a record and the store keeps
// as a row's body, encoded once.
func AppendValid(dst []byte, e *Event) ([]byte, error) {
	if p := e.problem(); p != "" {
		return nil, fmt.Errorf("audit: event %.40q: %w: %s", e.ID, ErrInvalidEvent, p)
	}
	start := len(dst)
	b, err := appendCanonical(dst, e)
	if err != nil {
		return nil, fmt.Errorf("audit: event %s: %w: %w", e.ID, ErrInvalidEvent, err)
	}
	limit := MaxEventSize
	if e.Kind == KindIntegrity {
		limit = maxIntegritySize
	}
	if n := len(b) - start; n > limit {
		return nil, fmt.Errorf("audit: event %s: %w: %d bytes encoded, limit %d", e.ID, ErrInvalidEvent, n, limit)
	}
	return b, nil
}

// problem describes what is wrong with e, apart from its encoded size, or
// returns "".
func (e *Event) problem() string {
	if e.V != SchemaVersion {
		return fmt.Sprintf("version %d, want %d", e.V, SchemaVersion)
	}
	if !validID(e.ID) {
		return "id must be 32 lower-case hex characters"
	}
	if !slices.Contains(Kinds, e.Kind) {
		return fmt.Sprintf("unknown kind %.40q", e.Kind)
	}
	if e.Time.IsZero() {
		return "time not set"
	}
	if e.Time.Before(minTime) || e.Time.After(maxTime) {
		return "time out of range"
	}
	switch e.Decision {
	case "", Allow, Deny:
	default:
		return fmt.Sprintf("decision %.40q is neither allow nor deny", e.Decision)
	}
	if e.LatencyUS < 0 {
		return "negative latency"
	}
	switch {
	case e.Count < 0:
		return "negative count"
	case e.Count > 0 && e.First.IsZero():
		return "count without first"
	case e.Count == 0 && !e.First.IsZero():
		return "first without count"
	case !e.First.IsZero() && (e.First.Before(minTime) || e.First.After(e.Time)):
		return "first out of range or after time"
	}
	if u := e.Usage; u != nil && (u.PromptTokens < 0 || u.CompletionTokens < 0 || u.TotalTokens < 0) {
		return "negative token usage"
	}
	for _, f := range []struct{ name, v string }{
		{"src", e.Src}, {"src_addr", e.SrcAddr}, {"dst", e.Dst}, {"method", e.Method},
		{"tool", e.Tool}, {"resource", e.Resource}, {"prompt", e.Prompt}, {"model", e.Model},
		{"action", e.Action}, {"target", e.Target}, {"reason", string(e.Reason)}, {"rule", e.Rule},
		{"policy_version", e.PolicyVersion}, {"session", e.Session}, {"outcome", string(e.Outcome)},
		{"args_sha256", e.ArgsSHA256}, {"user", e.User},
	} {
		if len(f.v) > maxFieldLen {
			return fmt.Sprintf("%s longer than %d bytes", f.name, maxFieldLen)
		}
		if !utf8.ValidString(f.v) {
			return f.name + " is not valid UTF-8"
		}
	}
	if !utf8.ValidString(e.Detail) {
		return "detail is not valid UTF-8"
	}
	if e.Basis != nil {
		if p := e.Basis.problem(); p != "" {
			return p
		}
	}
	if e.OnBehalfOf != nil {
		if p := e.OnBehalfOf.problem(); p != "" {
			return p
		}
	}
	if e.Shadow != nil {
		return e.Shadow.problem()
	}
	return ""
}

// validID reports whether id looks like NewID's output.
func validID(id string) bool {
	if len(id) != 32 {
		return false
	}
	for i := 0; i < len(id); i++ {
		c := id[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

// Domain-separation prefixes, so a chain hash can never be confused with a
// signed checkpoint or prune point and vice versa.
const (
	chainPrefix      = "agentmesh audit chain v1\x00"
	checkpointPrefix = "agentmesh audit checkpoint v1\x00"
	prunePrefix      = "agentmesh audit prune v1\x00"
)

// ChainHash computes the hash of the event at seq whose canonical encoding
// is canonical, given the previous link: SHA-256(prefix || prev ||
// uint64be(seq) || canonical).
func ChainHash(prev Hash, seq int64, canonical []byte) Hash {
	h := sha256.New()
	h.Write([]byte(chainPrefix))
	h.Write(prev[:])
	var s [8]byte
	binary.BigEndian.PutUint64(s[:], uint64(seq))
	h.Write(s[:])
	h.Write(canonical)
	var out Hash
	h.Sum(out[:0])
	return out
}

// CheckpointMessage is what a checkpoint signs: the chain position seq,
// its hash head and the time of signing (Unix nanoseconds). A receipt
// without a batch signs the same message.
func CheckpointMessage(seq int64, head Hash, at int64) []byte {
	return signedMessage(checkpointPrefix, seq, head, at)
}

// PruneMessage is what a prune point signs: the chain position the
// store's verification restarts from and the cut-off time asked for.
func PruneMessage(seq int64, head Hash, before int64) []byte {
	return signedMessage(prunePrefix, seq, head, before)
}

func signedMessage(prefix string, seq int64, head Hash, t int64) []byte {
	b := make([]byte, 0, len(prefix)+8+HashSize+8)
	b = append(b, prefix...)
	b = binary.BigEndian.AppendUint64(b, uint64(seq))
	b = append(b, head[:]...)
	b = binary.BigEndian.AppendUint64(b, uint64(t))
	return b
}
