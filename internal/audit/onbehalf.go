package audit

import (
	"strconv"
	"unicode/utf8"
)

// OnBehalfOf records, on an event of a request made with a delegation
// (package delegation), for whom the caller acted: the person, the whole
// chain from the person to the caller, and the delegation's ID. It is part
// of the event, so the hash chain covers it; replay reads the delegation a
// request was decided with from it.
type OnBehalfOf struct {
	// User is the person at the root of the chain (an e-mail address).
	User string `json:"user"`
	// Chain lists the parties: "user:EMAIL", then each agent's SPIFFE ID
	// down to the caller.
	Chain []string `json:"chain"`
	// Delegation is the ID of the delegation the caller presented.
	Delegation string `json:"delegation"`
}

// maxChain bounds OnBehalfOf.Chain: a person and up to eight agents (the
// delegation package allows fewer).
const maxChain = 9

func appendOnBehalfOf(dst []byte, o *OnBehalfOf) []byte {
	dst = append(dst, `,"on_behalf_of":{"user":`...)
	dst = appendJSONString(dst, o.User)
	dst = append(dst, `,"chain":`...)
	dst = appendStrings(dst, o.Chain)
	dst = append(dst, `,"delegation":`...)
	dst = appendJSONString(dst, o.Delegation)
	return append(dst, '}')
}

func (o *OnBehalfOf) problem() string {
	if o.User == "" || o.Delegation == "" || len(o.Chain) < 2 {
		return "on_behalf_of without user, delegation or a chain of two parties"
	}
	if len(o.Chain) > maxChain {
		return "on_behalf_of chain longer than " + strconv.Itoa(maxChain)
	}
	for _, s := range append([]string{o.User, o.Delegation}, o.Chain...) {
		if len(s) > maxFieldLen || !utf8.ValidString(s) {
			return "on_behalf_of holds a field that is too long or not valid UTF-8"
		}
	}
	return ""
}
