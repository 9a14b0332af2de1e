package audit

import "encoding/json"

// Conflict is one event of a shipped batch whose (dst, id) the coordinator
// had already stored with different content. It is part of the
// coordinator's answer to a batch (the shipping node checks that it names
// an event it sent) and of the store's account of an ingest.
type Conflict struct {
	// Index is the event's position in the batch.
	Index int `json:"index"`
	// ID is its event id.
	ID string `json:"id"`
	// StoredSeq is the seq of the event stored first under the same
	// (dst, id); Seq is the integrity event that keeps the new content.
	StoredSeq int64 `json:"stored_seq"`
	Seq       int64 `json:"seq"`
}

// ConflictDetail is the Detail of an id_conflict integrity event (JSON):
// both contents' hashes and the rejected content itself, so nothing that
// arrived is lost and the two can be compared.
type ConflictDetail struct {
	ID             string          `json:"id"`
	Dst            string          `json:"dst"`
	StoredSeq      int64           `json:"stored_seq"`
	StoredSHA256   string          `json:"stored_sha256"`
	RejectedSHA256 string          `json:"rejected_sha256"`
	Rejected       json.RawMessage `json:"rejected"`
}
