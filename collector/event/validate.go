package event

import (
	"fmt"
	"time"
)

// Reason is the stable code of a validation failure. The collector writes it,
// followed by ": " and a detail, into the Tenantguard-Reason DLQ header.
type Reason string

// Reasons an event is dead-lettered.
const (
	ReasonTooLarge        Reason = "too_large"
	ReasonInvalidJSON     Reason = "invalid_json"
	ReasonWrongType       Reason = "wrong_type"
	ReasonMissingField    Reason = "missing_field"
	ReasonBadID           Reason = "bad_id"
	ReasonBadTenantID     Reason = "bad_tenant_id"
	ReasonUnknownKind     Reason = "unknown_kind"
	ReasonBadTime         Reason = "bad_time"
	ReasonTimeInFuture    Reason = "time_in_future"
	ReasonTooLate         Reason = "too_late"
	ReasonBadQuantity     Reason = "bad_quantity"
	ReasonBadAttrs        Reason = "bad_attrs"
	ReasonBadField        Reason = "bad_field"
	ReasonSubjectMismatch Reason = "subject_mismatch"
	ReasonIDMismatch      Reason = "id_mismatch"
)

// ValidationError says why an event was rejected.
type ValidationError struct {
	Reason Reason
	Field  string // JSON field, empty when the event as a whole is bad
	Detail string
}

func (e *ValidationError) Error() string {
	if e.Field != "" {
		return fmt.Sprintf("%s: %s: %s", e.Reason, e.Field, e.Detail)
	}
	return fmt.Sprintf("%s: %s", e.Reason, e.Detail)
}

func invalid(r Reason, field, format string, args ...any) *ValidationError {
	return &ValidationError{Reason: r, Field: field, Detail: fmt.Sprintf(format, args...)}
}

// Rules are the deployment-specific parts of validation.
type Rules struct {
	// CustomKinds are accepted besides BuiltinKinds. Each must match KindPattern.
	CustomKinds []string
	// Lateness is how old an event may be. Default DefaultLateness (7 days).
	Lateness time.Duration
	// Now returns the current time; nil means time.Now.
	Now func() time.Time
}

// Validator checks decoded events against Rules. It is safe for concurrent use.
type Validator struct {
	kinds    map[string]string // name -> canonical string, to share memory
	lateness time.Duration
	now      func() time.Time
}

// NewValidator builds a Validator; it fails on a malformed custom kind.
func NewValidator(r Rules) (*Validator, error) {
	v := &Validator{kinds: make(map[string]string), lateness: r.Lateness, now: r.Now}
	if v.lateness <= 0 {
		v.lateness = DefaultLateness
	}
	if v.now == nil {
		v.now = time.Now
	}
	for _, k := range BuiltinKinds {
		v.kinds[k] = k
	}
	for _, k := range r.CustomKinds {
		if !ValidKindName(k) {
			return nil, fmt.Errorf("custom kind %q must match %s", k, KindPattern)
		}
		v.kinds[k] = k
	}
	return v, nil
}

// KnownKind reports whether k is a built-in or configured kind.
func (v *Validator) KnownKind(k string) bool { _, ok := v.kinds[k]; return ok }

// Kinds returns every accepted kind.
func (v *Validator) Kinds() []string {
	out := make([]string, 0, len(v.kinds))
	for k := range v.kinds {
		out = append(out, k)
	}
	return out
}

// Validate checks e against every rule of wire format v1. When subject is
// not empty its tenant and kind tokens must equal the body's.
func (v *Validator) Validate(e *Event, subject string) *ValidationError {
	switch {
	case e.ID == "":
		return invalid(ReasonMissingField, "id", "required")
	case e.TenantID == "":
		return invalid(ReasonMissingField, "tenant_id", "required")
	case e.Kind == "":
		return invalid(ReasonMissingField, "kind", "required")
	case e.Time.IsZero():
		return invalid(ReasonMissingField, "time", "required")
	}
	if len(e.ID) > MaxIDLen {
		return invalid(ReasonBadID, "id", "must be 1 to %d bytes, got %d", MaxIDLen, len(e.ID))
	}
	if !ValidTenantID(e.TenantID) {
		return invalid(ReasonBadTenantID, "tenant_id", "must match %s", TenantPattern)
	}
	if k, ok := v.kinds[e.Kind]; ok {
		e.Kind = k
	} else {
		return invalid(ReasonUnknownKind, "kind", "%q is neither built in nor declared in config", e.Kind)
	}
	// Written as !(in range) so that NaN fails too.
	if !(e.Quantity >= 0 && e.Quantity <= MaxQuantity) {
		return invalid(ReasonBadQuantity, "quantity", "must be from 0 to %d", int64(MaxQuantity))
	}
	if !(e.LatencyMs >= 0 && e.LatencyMs <= MaxLatencyMs) {
		return invalid(ReasonBadField, "latency_ms", "must be from 0 to %.0f", MaxLatencyMs)
	}
	if e.StatusCode < 0 || e.StatusCode > 999 {
		return invalid(ReasonBadField, "status_code", "must be 0 to 999")
	}
	if len(e.Attrs) > MaxAttrs {
		return invalid(ReasonBadAttrs, "attrs", "at most %d keys, got %d", MaxAttrs, len(e.Attrs))
	}
	now := v.now()
	if e.Time.After(now.Add(MaxFuture)) {
		return invalid(ReasonTimeInFuture, "time", "%s is more than %s ahead of now", e.Time.Format(time.RFC3339), MaxFuture)
	}
	if e.Time.Before(now.Add(-v.lateness)) {
		return invalid(ReasonTooLate, "time", "%s is older than the lateness limit %s", e.Time.Format(time.RFC3339), v.lateness)
	}
	if subject != "" {
		tenant, kind, err := ParseSubject(subject)
		if err != nil {
			return invalid(ReasonSubjectMismatch, "", "%v", err)
		}
		if tenant != e.TenantID || kind != e.Kind {
			return invalid(ReasonSubjectMismatch, "", "subject tokens %s.%s differ from body %s.%s", tenant, kind, e.TenantID, e.Kind)
		}
	}
	return nil
}

// CheckMsgID reports a Nats-Msg-Id header that differs from the body's id.
// An empty header passes: the message then lacks JetStream's dedup, which
// the collector makes up for.
func CheckMsgID(header string, e *Event) *ValidationError {
	if header == "" || header == e.ID {
		return nil
	}
	return invalid(ReasonIDMismatch, "id", "Nats-Msg-Id header %q differs from the body's id %q", clip(header), clip(e.ID))
}

func clip(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}

// Parse decodes data and validates the event it holds. It is the one call
// the collector makes per message.
func (v *Validator) Parse(data []byte, subject string, e *Event) *ValidationError {
	if len(data) > MaxSize {
		return invalid(ReasonTooLarge, "", "event is %d bytes, limit %d", len(data), MaxSize)
	}
	if err := Decode(data, e); err != nil {
		return err
	}
	return v.Validate(e, subject)
}
