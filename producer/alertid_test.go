package producer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// TestAlertIDGolden pins the derivation: SIEMs deduplicate on the id, so a
// change here re-alerts every past finding. Never update these values;
// add a new derivation instead.
func TestAlertIDGolden(t *testing.T) {
	tests := []struct {
		name, ruleID, eventID, want string
	}{
		{"sample 02", ruleID, "e7bb4b23-66e1-4656-b607-f575fde3b790", "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd"},
		{"empty", "", "", sha256Hex("quarantine-watch/alert-id/v1\x00\x00event-id\x00")},
		// Computed independently of AlertID, from the documented formula.
		{"formula", "r", "e", sha256Hex("quarantine-watch/alert-id/v1\x00r\x00event-id\x00e")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := AlertID(tt.ruleID, tt.eventID); got != tt.want {
				t.Errorf("AlertID(%q, %q) = %s, want %s", tt.ruleID, tt.eventID, got, tt.want)
			}
		})
	}
}

func TestAlertIDUnique(t *testing.T) {
	rules := []string{ruleID, "9f5d4a3c-0000-4000-8000-000000000001"}
	events := []matcher.Event{
		sampleEvent(t, quarantineV2),
		sampleEvent(t, "01_attach_user_policy_assumedrole_elastic_integrations.json"),
		sampleEvent(t, "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json"),
		sampleEvent(t, "05_s3_object_Records_iam_addusertogroup_awsdocs.json"), // no eventID
		{Original: []byte(`{"eventName":"AttachUserPolicy"}`)},                 // no eventID either
	}
	seen := map[string]string{}
	for _, r := range rules {
		for i := range events {
			id := EventAlertID(r, &events[i])
			if id != EventAlertID(r, &events[i]) {
				t.Fatalf("EventAlertID(%s, event %d) is not deterministic", r, i)
			}
			key := r + "/" + events[i].EventID + "/" + string(events[i].Original)
			if prev, dup := seen[id]; dup {
				t.Errorf("%s and %s share alert id %s", prev, key, id)
			}
			seen[id] = key
		}
	}
	if len(seen) != len(rules)*len(events) {
		t.Errorf("%d distinct ids, want %d", len(seen), len(rules)*len(events))
	}
}

func TestEventAlertIDFallback(t *testing.T) {
	withID := sampleEvent(t, quarantineV2)
	if got, want := EventAlertID(ruleID, &withID), AlertID(ruleID, withID.EventID); got != want {
		t.Errorf("with eventID: %s, want AlertID %s", got, want)
	}

	noID := sampleEvent(t, "05_s3_object_Records_iam_addusertogroup_awsdocs.json")
	if noID.EventID != "" {
		t.Fatal("sample 05 is expected to lack an eventID")
	}
	sum := sha256.Sum256(noID.Original)
	want := sha256Hex("quarantine-watch/alert-id/v1\x00" + ruleID + "\x00original-sha256\x00" + hex.EncodeToString(sum[:]))
	if got := EventAlertID(ruleID, &noID); got != want {
		t.Errorf("fallback = %s, want %s", got, want)
	}
	if EventAlertID(ruleID, &noID) == AlertID(ruleID, "") {
		t.Error("fallback equals the id of an empty eventID: events without one would collide")
	}
	// Only the bytes count, not the other fields the matcher read.
	other := matcher.Event{Original: noID.Original}
	if EventAlertID(ruleID, &other) != EventAlertID(ruleID, &noID) {
		t.Error("fallback depends on more than Original")
	}
	other.Original = append([]byte(nil), noID.Original...)
	other.Original[len(other.Original)-1] = ' '
	if EventAlertID(ruleID, &other) == EventAlertID(ruleID, &noID) {
		t.Error("fallback ignores a changed byte")
	}
}

func sha256Hex(s string) string {
	sum := sha256.Sum256([]byte(s))
	return hex.EncodeToString(sum[:])
}

// TestWatchedFindingsOfOneEventKeepTheirIDs: one event can be a finding of
// the same post-quarantine rule for two watches (watched user alice makes
// watched user bob a key: alice's watch as actor, bob's as target). They
// are two alerts; with one id a SIEM that deduplicates on it keeps one and
// drops the other, and the outputs topic holds what looks like a
// duplicate. Each watch's finding gets its own id, on the record key and
// in both formats, and a finding without a watch keeps AlertID's.
func TestWatchedFindingsOfOneEventKeepTheirIDs(t *testing.T) {
	ev := matcher.Event{EventID: "3c5b5b62-7f4f-4e4e-9b3f-9d7c1c1e0a01", EventName: "CreateAccessKey", EventTime: "2026-11-21T06:00:00Z"}
	rule := matcher.PostQuarantinePersistenceRule
	alice := &matcher.WatchEntry{Account: "123456789012", UserName: "alice"}
	bob := &matcher.WatchEntry{Account: "123456789012", UserName: "bob"}
	src := Source{Topic: "cloudtrail", Partition: 0, Offset: 7}
	detected := time.Date(2026, 11, 21, 6, 0, 1, 0, time.UTC)
	ids := map[string]string{}
	for _, w := range []*matcher.WatchEntry{alice, bob} {
		f := matcher.Finding{Rule: rule, Event: ev, Watch: w}
		key := FindingAlertID(&f)
		if other, ok := ids[key]; ok {
			t.Fatalf("the findings of %s's and %s's watches share the alert id %s", other, w.UserName, key)
		}
		ids[key] = w.UserName
		for _, enc := range []Encoder{ECS{}, OCSF{}} {
			rec, err := EncodeRecord(enc, f, src, detected, "alerts")
			if err != nil {
				t.Fatal(err)
			}
			if string(rec.Key) != key {
				t.Errorf("%s: record key %s, want %s", enc.Format(), rec.Key, key)
			}
			if !bytes.Contains(rec.Value, []byte(key)) {
				t.Errorf("%s: the alert does not carry its id %s", enc.Format(), key)
			}
		}
	}
	plain := matcher.Finding{Rule: matcher.ElasticQuarantineRule, Event: ev}
	if got, want := FindingAlertID(&plain), AlertID(matcher.ElasticQuarantineRule.ID, ev.EventID); got != want {
		t.Errorf("a finding without a watch: %s, want AlertID's %s", got, want)
	}
}
