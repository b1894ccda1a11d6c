package producer

import (
	"crypto/sha256"
	"encoding/hex"
	"strings"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// alertIDDomain separates our hashes from any other SHA-256 of the same
// strings and versions the derivation: a new derivation gets a new domain,
// it never changes this one, because SIEMs deduplicate on the id.
const alertIDDomain = "quarantine-watch/alert-id/v1"

// AlertID returns the alert id for the finding of rule ruleID on the
// CloudTrail event with eventID. It is the lowercase hex SHA-256 (64
// characters) of
//
//	"quarantine-watch/alert-id/v1" NUL ruleID NUL "event-id" NUL eventID
//
// The id is stable forever: the same rule and event give the same id on
// any replica, after any restart and on any replay, so a SIEM (and a Kafka
// compacted topic, since it is the record key) deduplicates redelivered
// alerts. A hash rather than a UUIDv5 keeps the derivation one line of
// standard library in any language; rule ids never contain NUL, so the
// encoding is unambiguous. Callers holding an Event should use
// EventAlertID, which also covers events without an eventID.
func AlertID(ruleID, eventID string) string {
	return alertID(ruleID, "event-id", eventID)
}

// EventAlertID returns the alert id for rule ruleID's finding on e:
// AlertID(ruleID, e.EventID) when the event has an eventID, else (some old
// records lack one) the same hash with "original-sha256" in place of
// "event-id" and the lowercase hex SHA-256 of e.Original in place of the
// eventID. The fallback is as stable as the bytes: the same record
// delivered twice gets one id, but the same event reached through a
// different delivery shape (a raw record and its ECS form, whose Original
// differ) gets two.
func EventAlertID(ruleID string, e *matcher.Event) string {
	if e.EventID != "" {
		return AlertID(ruleID, e.EventID)
	}
	sum := sha256.Sum256(e.Original)
	return alertID(ruleID, "original-sha256", hex.EncodeToString(sum[:]))
}

func alertID(ruleID, kind, value string) string {
	h := sha256.New()
	for _, s := range [...]string{alertIDDomain, "\x00", ruleID, "\x00", kind, "\x00", value} {
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}

// FindingAlertID returns the alert id of f: EventAlertID for the finding
// of a rule, and, for a post-quarantine finding, the same hash extended
// with the watch it was found for,
//
//	... NUL "watch" NUL account NUL lowercase user name
//
// because one event can be a finding of the same post-quarantine rule for
// two watches (a watched user making another watched user a key is the
// first's activity and an act on the second): two alerts, which one id
// would make a SIEM deduplicate into one. Names are lowercased as IAM
// compares them, so the id does not depend on how the event spells it.
func FindingAlertID(f *matcher.Finding) string {
	id := EventAlertID(f.Rule.ID, &f.Event)
	if f.Watch == nil {
		return id
	}
	h := sha256.New()
	for _, s := range [...]string{alertIDDomain, "\x00", f.Rule.ID, "\x00", "alert-id", "\x00", id,
		"\x00", "watch", "\x00", f.Watch.Account, "\x00", strings.ToLower(f.Watch.UserName)} {
		h.Write([]byte(s))
	}
	return hex.EncodeToString(h.Sum(nil))
}
