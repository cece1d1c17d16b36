package event

import (
	"strings"
	"time"
)

// Correction actions.
const (
	// ActionVoid removes a stored event from billing, rollups and spend.
	ActionVoid = "void"
	// ActionAmend replaces a stored event's quantity (and so its cost).
	ActionAmend = "amend"
)

// Status of one correction after the daemon handled it.
const (
	CorrectionApplied   = "applied"   // stored now
	CorrectionDuplicate = "duplicate" // a correction with this id was stored before: nothing changed
	CorrectionRefused   = "refused"   // invalid: nothing changed; Reason says why
)

// Reasons a correction is refused, besides the field reasons it shares with
// events (missing_field, bad_id, bad_tenant_id, bad_quantity, bad_field,
// too_late, subject_mismatch).
const (
	ReasonUnknownEvent  Reason = "unknown_event"  // no event with this id for this tenant
	ReasonAlreadyVoided Reason = "already_voided" // the event is voided: no second void, no amendment
	ReasonNoChange      Reason = "no_change"      // an amendment to the quantity the event already has
)

// Limits of a correction.
const (
	MaxReasonLen = 1024 // bytes of Correction.Reason
	MaxByLen     = 256  // bytes of Correction.By
	// MaxCorrectionsPerRequest bounds one request message, which stays
	// well under NATS's default 1 MiB payload limit.
	MaxCorrectionsPerRequest = 200
	// MaxCorrectionRequestSize bounds the encoded request.
	MaxCorrectionRequestSize = 512 << 10
)

// NATS names of corrections.
const (
	// CorrectionsStream holds correction requests until the daemon applied
	// them (work-queue retention). Subjects tenantguard.corrections.<tenant_id>.
	CorrectionsStream   = "TENANTGUARD_CORRECTIONS"
	CorrectionsSubjects = "tenantguard.corrections.>"
	correctionsPrefix   = "tenantguard.corrections."
	// HeaderReply names the subject the daemon publishes the
	// CorrectionReply to, once the request is handled.
	HeaderReply = "Tenantguard-Reply"
)

// Correction voids or amends one stored event. The original row stays in
// the events table for audit; billing, rollups and spend net the
// correction out.
type Correction struct {
	// ID is the correction's idempotency key: a correction whose id was
	// applied before is reported as a duplicate and changes nothing.
	ID string `json:"id"`
	// TenantID and EventID name the original event.
	TenantID string `json:"tenant_id"`
	EventID  string `json:"event_id"`
	// EventTime, when set, is the original's time (to the second), which
	// narrows the lookup to one second of the tenant's events. Otherwise
	// the event is looked up across the lateness window, or all time when
	// Force is set.
	EventTime time.Time `json:"event_time,omitzero"`
	// Action is ActionVoid or ActionAmend.
	Action string `json:"action"`
	// Quantity is the amended quantity (ActionAmend only).
	Quantity *float64 `json:"quantity,omitempty"`
	// Reason and By say why and who: both required, kept for audit.
	Reason string `json:"reason"`
	By     string `json:"by"`
	// Force allows correcting an event older than the lateness window,
	// whose billing period may be closed.
	Force bool `json:"force,omitempty"`
}

// CorrectionRequest is the body of a message on
// tenantguard.corrections.<tenant_id>: corrections of that tenant, applied
// in order.
type CorrectionRequest struct {
	Corrections []Correction `json:"corrections"`
}

// CorrectionResult is the outcome of one correction.
type CorrectionResult struct {
	ID      string `json:"id"`
	EventID string `json:"event_id"`
	Status  string `json:"status"`
	// Reason is the stable code of a refusal; Error explains it.
	Reason Reason `json:"reason,omitempty"`
	Error  string `json:"error,omitempty"`
}

// CorrectionReply answers a CorrectionRequest: one result per correction,
// in order, or Error when the request as a whole could not be read.
type CorrectionReply struct {
	Results []CorrectionResult `json:"results"`
	Error   string             `json:"error,omitempty"`
}

// CorrectionEffect is what an applied correction changed, as observers of
// stored events (metrics, spend tracking) need it: deltas at the original
// event's time, negative for a void.
type CorrectionEffect struct {
	TenantID string
	Kind     string
	Time     time.Time // the original event's time
	Action   string
	Count    int64   // -1 for a void, 0 for an amendment
	Quantity float64 // new quantity minus old
	Cost     float64 // new cost minus old
}

// ReplyPrefix is where correction outcomes may be sent: NATS inboxes.
const ReplyPrefix = "_INBOX."

// ValidReplySubject reports whether s may carry a correction's outcome: a
// literal subject under _INBOX., so a requester cannot make the daemon
// publish into a stream or the JetStream API.
func ValidReplySubject(s string) bool {
	rest, ok := strings.CutPrefix(s, ReplyPrefix)
	if !ok || rest == "" || len(s) > 256 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		switch c := rest[i]; {
		case c == '*' || c == '>' || c <= ' ' || c == 0x7f:
			return false
		case c == '.' && (i == 0 || i == len(rest)-1 || rest[i-1] == '.'):
			return false
		}
	}
	return true
}

// CorrectionSubject returns tenantguard.corrections.<tenant>.
func CorrectionSubject(tenant string) string { return correctionsPrefix + tenant }

// ParseCorrectionSubject returns the tenant token of a corrections subject.
func ParseCorrectionSubject(subject string) (string, bool) {
	tenant, ok := strings.CutPrefix(subject, correctionsPrefix)
	if !ok || !ValidTenantID(tenant) {
		return "", false
	}
	return tenant, true
}

// ValidateCorrection checks the rules a correction must meet before its
// event is looked up. Fields are checked in order; the first broken rule
// is reported.
func ValidateCorrection(c *Correction) *ValidationError {
	switch {
	case c.ID == "":
		return invalid(ReasonMissingField, "id", "required")
	case c.TenantID == "":
		return invalid(ReasonMissingField, "tenant_id", "required")
	case c.EventID == "":
		return invalid(ReasonMissingField, "event_id", "required")
	case c.Action == "":
		return invalid(ReasonMissingField, "action", "required")
	case c.Reason == "":
		return invalid(ReasonMissingField, "reason", "required: say why the event is corrected")
	case c.By == "":
		return invalid(ReasonMissingField, "by", "required: say who corrects it")
	}
	if len(c.ID) > MaxIDLen {
		return invalid(ReasonBadID, "id", "must be 1 to %d bytes, got %d", MaxIDLen, len(c.ID))
	}
	if !ValidTenantID(c.TenantID) {
		return invalid(ReasonBadTenantID, "tenant_id", "must match %s", TenantPattern)
	}
	if len(c.EventID) > MaxIDLen {
		return invalid(ReasonBadID, "event_id", "must be 1 to %d bytes, got %d", MaxIDLen, len(c.EventID))
	}
	switch c.Action {
	case ActionVoid:
		if c.Quantity != nil {
			return invalid(ReasonBadField, "quantity", "a void takes no quantity")
		}
	case ActionAmend:
		if c.Quantity == nil {
			return invalid(ReasonMissingField, "quantity", "required to amend")
		}
		if q := *c.Quantity; !(q >= 0 && q <= MaxQuantity) {
			return invalid(ReasonBadQuantity, "quantity", "must be from 0 to %d", int64(MaxQuantity))
		}
	default:
		return invalid(ReasonBadField, "action", "%q must be %s or %s", clip(c.Action), ActionVoid, ActionAmend)
	}
	if len(c.Reason) > MaxReasonLen {
		return invalid(ReasonBadField, "reason", "at most %d bytes, got %d", MaxReasonLen, len(c.Reason))
	}
	if len(c.By) > MaxByLen {
		return invalid(ReasonBadField, "by", "at most %d bytes, got %d", MaxByLen, len(c.By))
	}
	if !c.EventTime.IsZero() && (c.EventTime.Year() < 1970 || c.EventTime.Year() > 2105) {
		return invalid(ReasonBadTime, "event_time", "must lie between 1970 and 2105")
	}
	return nil
}
