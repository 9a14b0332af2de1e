package mesh

import (
	"time"

	"github.com/agentmesh/agentmesh/internal/alert"
)

// AlertSignatureHeader is the header of a coordinator's webhook delivery
// that VerifyAlert checks.
const AlertSignatureHeader = alert.SignatureHeader

// VerifyAlert checks a webhook delivery from a coordinator's alerts
// (README, "Alerts"): header is the Agentmesh-Signature header's value,
// body the request body exactly as received, secret the receiver's secret
// as the coordinator's alerts file names it, now the receiver's clock. It
// returns nil when the body is signed with secret and its timestamp is
// within tolerance of now (zero: five minutes), so a replayed delivery is
// refused once it is older than that. Refuse the delivery on any error;
// drop an alert whose id was seen before (retries resend it).
func VerifyAlert(secret []byte, header string, body []byte, now time.Time, tolerance time.Duration) error {
	return alert.Verify(secret, header, body, now, tolerance)
}
