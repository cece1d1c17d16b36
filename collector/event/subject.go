package event

import (
	"fmt"
	"strconv"
	"strings"
)

// NATS names of the contract.
const (
	UsageStream   = "TENANTGUARD_USAGE"
	DLQStream     = "TENANTGUARD_DLQ"
	UsageSubjects = "tenantguard.usage.>"
	DLQSubjects   = "tenantguard.dlq.>"
	usagePrefix   = "tenantguard.usage."
	dlqPrefix     = "tenantguard.dlq."
	alertsPrefix  = "tenantguard.alerts."
	HeaderMsgID   = "Nats-Msg-Id"
	HeaderReason  = "Tenantguard-Reason"
	HeaderSubject = "Tenantguard-Subject"
	// HeaderOriginalMsgID carries a dead letter's original Nats-Msg-Id.
	HeaderOriginalMsgID = "Tenantguard-Msg-Id"
	DecisionsBucket     = "tenantguard_decisions"
	LimitersBucket      = "tenantguard_limiters"
)

// Subject returns the usage subject of an event: tenantguard.usage.<tenant>.<kind>.
func Subject(tenant, kind string) string {
	return usagePrefix + tenant + "." + kind
}

// PostgresAlertSubject carries the Postgres auditor's alerts, which concern
// a database, not a tenant. "_postgres" can never be a tenant id.
const PostgresAlertSubject = alertsPrefix + "_postgres"

// AlertSubject returns tenantguard.alerts.<tenant>.
func AlertSubject(tenant string) string { return alertsPrefix + tenant }

// DLQSubject returns the dead-letter subject for a message that arrived on
// subject. The original subject may hold any tokens, so it is not reused;
// the reason code is the last token.
func DLQSubject(reason Reason) string { return dlqPrefix + string(reason) }

// ParseSubject splits a usage subject into its tenant and kind tokens.
func ParseSubject(subject string) (tenant, kind string, err error) {
	rest, ok := strings.CutPrefix(subject, usagePrefix)
	if !ok {
		return "", "", fmt.Errorf("subject %q is not under %s", subject, usagePrefix)
	}
	tenant, kind, ok = strings.Cut(rest, ".")
	if !ok || tenant == "" || kind == "" || strings.Contains(kind, ".") {
		return "", "", fmt.Errorf("subject %q must be %s<tenant_id>.<kind>", subject, usagePrefix)
	}
	return tenant, kind, nil
}

// DLQMsgID is the Nats-Msg-Id of the dead letter of the message at seq in
// stream: unique per original, so no publisher can collide with it.
func DLQMsgID(stream string, seq uint64) string { return stream + ":" + strconv.FormatUint(seq, 10) }
