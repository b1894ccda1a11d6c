package producer

import (
	"bytes"
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
)

func contextFinding() matcher.Finding {
	return matcher.Finding{Rule: matcher.ElasticQuarantineRule, Event: matcher.Event{
		EventID: "e7bb4b23-66e1-4656-b607-f575fde3b790", EventTime: "2023-11-21T23:23:52Z", EventName: "AttachUserPolicy",
		RecipientAccountID: "123456789012", TargetKind: matcher.TargetUser, TargetName: "test-user",
	}}
}

func contextSummary() lookback.Summary {
	at := time.Date(2023, 11, 21, 22, 0, 0, 0, time.UTC)
	return lookback.Summary{
		Events: 2, AsActor: 1, AsTarget: 1,
		Actions:      []lookback.ActionCount{{Source: "iam.amazonaws.com", Name: "CreateAccessKey", Count: 1}, {Source: "sts.amazonaws.com", Name: "GetCallerIdentity", Count: 1}},
		SourceIPs:    []lookback.Seen{{Value: "203.0.113.7", First: at, Last: at, Count: 1}, {Value: "AWS Internal", First: at, Last: at, Count: 1}},
		UserAgents:   []lookback.Seen{{Value: "aws-cli/2.15.0", First: at, Last: at, Count: 2}},
		Regions:      []lookback.Count{{Value: "us-east-1", Count: 2}},
		AccessKeyIDs: []string{"AKIAIOSFODNN7EXAMPLE"},
		Errors:       []lookback.Count{{Value: "AccessDenied", Count: 1}},
		Notable:      []lookback.Notable{{EventID: "x", Source: "iam.amazonaws.com", Name: "CreateAccessKey", Outcome: "success", Time: at, Why: lookback.NotableCalls[0]}},
	}
}

// TestContextConformsToECS holds the context document to ECS 8.11 (every
// field outside quarantine_watch.* an ECS field of a compatible type,
// event.kind an allowed value) and checks it is the same bytes each time.
func TestContextConformsToECS(t *testing.T) {
	ecs := loadECSChecker(t)
	end := time.Date(2023, 11, 21, 23, 23, 52, 0, time.UTC)
	for _, tc := range []struct {
		data time.Time
		cut  bool
	}{
		{end.Add(-30 * time.Hour), false},
		{end.Add(-time.Hour), true},
		{time.Time{}, true}, // unknown
	} {
		w := ContextWindow{Lookback: 24 * time.Hour, Start: end.Add(-24 * time.Hour), End: end, DataStart: tc.data}
		c, err := NewECSContext(contextFinding(), contextSummary(), w)
		if err != nil {
			t.Fatal(err)
		}
		doc, err := EncodeContext(c)
		if err != nil {
			t.Fatal(err)
		}
		if vs := ecs.check(doc); len(vs) > 0 {
			t.Errorf("not ECS:\n%s\n%s", strings.Join(vs, "\n"), doc)
		}
		again, _ := NewECSContext(contextFinding(), contextSummary(), w)
		if doc2, _ := EncodeContext(again); !bytes.Equal(doc, doc2) {
			t.Errorf("two encodings differ:\n%s\n%s", doc, doc2)
		}
		want := AlertID(matcher.ElasticQuarantineRule.ID, "e7bb4b23-66e1-4656-b607-f575fde3b790")
		if c.QuarantineWatch.AlertID != want || c.Event.Kind != "enrichment" {
			t.Errorf("alert id %s, kind %s; want %s, enrichment", c.QuarantineWatch.AlertID, c.Event.Kind, want)
		}
		if c.QuarantineWatch.Window.Cut != tc.cut {
			t.Errorf("data from %v, window from %v: cut %v, want %v", w.DataStart, w.Start, c.QuarantineWatch.Window.Cut, tc.cut)
		}
	}
	f := contextFinding()
	f.Event.TargetKind = matcher.TargetRole
	if _, err := NewECSContext(f, contextSummary(), ContextWindow{}); err != ErrNoTargetUser {
		t.Errorf("a finding on a role: %v, want ErrNoTargetUser", err)
	}
}

// TestContextConformsToOCSF holds the OCSF context document to OCSF 1.3.0's
// Detection Finding (the official class definition, as the alerts are
// held to it): an Update (type_uid 200402) of the alert's finding, the
// same finding_info.uid as the alert, the summary in enrichments[], the
// same bytes each time.
func TestContextConformsToOCSF(t *testing.T) {
	ocsf := loadOCSFChecker(t)
	end := time.Date(2023, 11, 21, 23, 23, 52, 0, time.UTC)
	w := ContextWindow{Lookback: 24 * time.Hour, Start: end.Add(-24 * time.Hour), End: end, DataStart: end.Add(-time.Hour)}
	src := Source{Topic: "cloudtrail", Partition: 3, Offset: 1234}
	d, err := NewOCSFContext(contextFinding(), src, contextSummary(), w)
	if err != nil {
		t.Fatal(err)
	}
	doc, err := EncodeOCSFContext(d)
	if err != nil {
		t.Fatal(err)
	}
	if vs := ocsf.check(doc); len(vs) > 0 {
		t.Errorf("not an OCSF 1.3.0 Detection Finding:\n%s\n%s", strings.Join(vs, "\n"), doc)
	}
	alert, err := OCSF{}.Encode(contextFinding(), src, end.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	var got, orig struct {
		ActivityID  int   `json:"activity_id"`
		TypeUID     int64 `json:"type_uid"`
		FindingInfo struct {
			UID string `json:"uid"`
		} `json:"finding_info"`
		Enrichments []struct {
			Name, Value, Type string
			Data              struct {
				AlertID string `json:"alert_id"`
				Window  struct{ Cut bool }
				Summary struct{ Events int }
			}
		}
	}
	if err := json.Unmarshal(doc, &got); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(alert, &orig); err != nil {
		t.Fatal(err)
	}
	want := AlertID(matcher.ElasticQuarantineRule.ID, "e7bb4b23-66e1-4656-b607-f575fde3b790")
	if got.ActivityID != 2 || got.TypeUID != 200402 || got.FindingInfo.UID != want || orig.FindingInfo.UID != want ||
		len(got.Enrichments) != 1 || got.Enrichments[0].Value != "test-user" || got.Enrichments[0].Data.AlertID != want ||
		!got.Enrichments[0].Data.Window.Cut || got.Enrichments[0].Data.Summary.Events != 2 {
		t.Errorf("not the alert's finding updated with its context: %+v (alert's finding_info.uid %s)\n%s", got, orig.FindingInfo.UID, doc)
	}
	again, _ := NewOCSFContext(contextFinding(), src, contextSummary(), w)
	if b, _ := EncodeOCSFContext(again); !bytes.Equal(b, doc) {
		t.Errorf("two documents of the same finding differ:\n%s\n%s", doc, b)
	}
	if bytes.Contains(alert, []byte(`"enrichments"`)) {
		t.Errorf("the alert has enrichments: %s", alert)
	}
}

// TestContextCut: a summary of 5,000 source addresses, one of them seen
// far more than the others, is cut until its document fits 20,000 bytes:
// the frequent address is kept, related.ip follows the list, the counts
// are whole and the cut is listed; the notable calls are left alone while
// another list can be cut.
func TestContextCut(t *testing.T) {
	end := time.Date(2023, 11, 21, 23, 23, 52, 0, time.UTC)
	sum := contextSummary()
	at := end.Add(-time.Hour)
	sum.SourceIPs = nil
	for i := range 5000 {
		n := 1
		if i == 4321 {
			n = 1000
		}
		sum.SourceIPs = append(sum.SourceIPs, lookback.Seen{Value: netip.AddrFrom4([4]byte{10, byte(i >> 16), byte(i >> 8), byte(i)}).String(), First: at, Last: at, Count: n})
	}
	frequent := sum.SourceIPs[4321].Value
	c, err := NewECSContext(contextFinding(), sum, ContextWindow{Lookback: 24 * time.Hour, Start: end.Add(-24 * time.Hour), End: end, DataStart: end.Add(-30 * time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	for {
		doc, err := EncodeContext(c)
		if err != nil {
			t.Fatal(err)
		}
		if len(doc) <= 20000 {
			break
		}
		if !c.Cut() {
			t.Fatalf("cannot cut under 20,000 bytes: %d", len(doc))
		}
	}
	s := c.QuarantineWatch.Summary
	ips := map[string]bool{}
	for _, v := range s.SourceIPs {
		ips[v.Value] = true
	}
	if !ips[frequent] || len(c.Related.IP) != len(s.SourceIPs) || s.Events != 2 || len(s.Notable) != 1 {
		t.Errorf("kept %d addresses (the frequent one: %v), related.ip %d, events %d, notable %d", len(s.SourceIPs), ips[frequent], len(c.Related.IP), s.Events, len(s.Notable))
	}
	for _, ip := range c.Related.IP {
		if !ips[ip] {
			t.Errorf("related.ip %s is not among the kept addresses", ip)
		}
	}
	if len(s.Truncated) != 1 || s.Truncated[0].Field != "source_ips" || s.Truncated[0].Total != 5000 || s.Truncated[0].Kept != len(s.SourceIPs) {
		t.Errorf("truncated %+v", s.Truncated)
	}
}
