package main

import (
	"bytes"
	"encoding/json"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/producer"
)

// caseFiles writes a planted case as scan reads it: the text values one per
// line, and the gzip ones (a CloudWatch Logs payload as Firehose delivers
// it) as the members of a .gz file.
func caseFiles(t *testing.T, c *cloudtrailgen.Case) []string {
	var text, gz bytes.Buffer
	for _, v := range c.Values {
		if bytes.HasPrefix(v, []byte{0x1f, 0x8b}) {
			gz.Write(v)
			continue
		}
		text.Write(v)
		text.WriteByte('\n')
	}
	if gz.Len() == 0 {
		t.Fatal("the case holds no gzip value: the .gz file would test nothing")
	}
	return []string{writeFile(t, "case.ndjson", text.Bytes()), writeFile(t, "case-firehose.gz", gz.Bytes())}
}

// TestScanContext runs scan --context over a planted case and checks the
// context document against the generator's ground truth.
func TestScanContext(t *testing.T) {
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 11, Noise: 2000})
	files := caseFiles(t, c)
	for _, tc := range []struct {
		name     string
		args     []string
		lookback time.Duration
		cut      bool
	}{
		{"defaults", nil, 24 * time.Hour, false},
		{"48h, before the files start", []string{"--context-lookback", "48h"}, 48 * time.Hour, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			args := append(append([]string{"scan", "--context"}, tc.args...), files...)
			code, stdout, stderr := runCmd(t, "", args...)
			if code != 0 {
				t.Fatalf("exit %d: %s", code, stderr)
			}
			lines := strings.Split(strings.TrimSpace(stdout), "\n")
			if len(lines) != 2 {
				t.Fatalf("%d lines, want the alert and its context:\n%s\n%s", len(lines), stdout, stderr)
			}
			var alert producer.ECSAlert
			var ctx producer.ECSContext
			if err := json.Unmarshal([]byte(lines[0]), &alert); err != nil || alert.Event.Kind != "alert" {
				t.Fatalf("first line is not an alert (%v): %s", err, lines[0])
			}
			if err := json.Unmarshal([]byte(lines[1]), &ctx); err != nil || ctx.Event.Kind != "enrichment" {
				t.Fatalf("second line is not a context document (%v): %s", err, lines[1])
			}
			if alert.Event.ID != c.QuarantineEventID || ctx.QuarantineWatch.AlertID != alert.QuarantineWatch.AlertID ||
				ctx.QuarantineWatch.AlertID != producer.AlertID(matcher.ElasticQuarantineRule.ID, c.QuarantineEventID) {
				t.Errorf("alert %s (id %s), context for %s", alert.Event.ID, alert.QuarantineWatch.AlertID, ctx.QuarantineWatch.AlertID)
			}
			if ctx.User.Name != cloudtrailgen.CaseUserName || ctx.Cloud.Account == nil || ctx.Cloud.Account.ID != cloudtrailgen.CaseAccount {
				t.Errorf("user %q, cloud %+v", ctx.User.Name, ctx.Cloud)
			}
			start := c.QuarantineTime.Add(-tc.lookback)
			w := ctx.QuarantineWatch.Window
			if w.Start != start.Format(time.RFC3339) || w.End != c.QuarantineTime.Format(time.RFC3339) || w.Cut != tc.cut ||
				w.DataStart != c.DataStart.Format(time.RFC3339) || tc.cut != (w.CutReason != "") {
				t.Errorf("window %+v; want %v to %v, data from %v, cut %v", w, start, c.QuarantineTime, c.DataStart, tc.cut)
			}
			checkContext(t, ctx.QuarantineWatch.Summary, c.Truth(start))
			if !strings.Contains(stderr, "scan: 1 context documents\n") {
				t.Errorf("stderr does not count the context document:\n%s", stderr)
			}
			t.Logf("%s", lines[1])
		})
	}
}

func checkContext(t *testing.T, got producer.ECSSummary, want cloudtrailgen.CaseTruth) {
	t.Helper()
	if got.Events != want.Events || got.AsActor != want.AsActor || got.AsTarget != want.AsTarget {
		t.Errorf("events %d (%d, %d), want %d (%d, %d)", got.Events, got.AsActor, got.AsTarget, want.Events, want.AsActor, want.AsTarget)
	}
	actions := map[string]int{}
	for _, a := range got.Actions {
		actions[a.Provider+" "+a.Action] = a.Count
	}
	if !maps.Equal(actions, want.Actions) {
		t.Errorf("actions %v, want %v", actions, want.Actions)
	}
	for _, s := range []struct {
		name string
		got  []producer.ECSSeen
		want map[string]cloudtrailgen.SeenTruth
	}{{"source IPs", got.SourceIPs, want.SourceIPs}, {"user agents", got.UserAgents, want.UserAgents}} {
		m := map[string]cloudtrailgen.SeenTruth{}
		for _, v := range s.got {
			first, _ := time.Parse(time.RFC3339, v.FirstSeen)
			last, _ := time.Parse(time.RFC3339, v.LastSeen)
			m[v.Value] = cloudtrailgen.SeenTruth{Count: v.Count, First: first, Last: last}
		}
		if !maps.EqualFunc(m, s.want, func(a, b cloudtrailgen.SeenTruth) bool {
			return a.Count == b.Count && a.First.Equal(b.First) && a.Last.Equal(b.Last)
		}) {
			t.Errorf("%s %v, want %v", s.name, m, s.want)
		}
	}
	counts := func(cs []producer.ECSCount) map[string]int {
		m := map[string]int{}
		for _, c := range cs {
			m[c.Value] = c.Count
		}
		return m
	}
	if r := counts(got.Regions); !maps.Equal(r, want.Regions) {
		t.Errorf("regions %v, want %v", r, want.Regions)
	}
	if e := counts(got.Errors); !maps.Equal(e, want.Errors) {
		t.Errorf("errors %v, want %v", e, want.Errors)
	}
	if !slices.Equal(got.AccessKeyIDs, want.AccessKeyIDs) {
		t.Errorf("keys %v, want %v", got.AccessKeyIDs, want.AccessKeyIDs)
	}
	var notable []string
	for _, n := range got.Notable {
		notable = append(notable, n.ID)
	}
	slices.Sort(notable)
	if !slices.Equal(notable, want.Notable) {
		t.Errorf("notable %v, want %v", notable, want.Notable)
	}
}

func TestScanContextRefusals(t *testing.T) {
	f := writeFile(t, "x.json", []byte(`{}`))
	for _, args := range [][]string{
		{"scan", "--context", "-"},
		{"scan", "--context", "--alert-format", "ocsf", f},
		{"scan", "--context", "--context-lookback", "0s", f},
	} {
		if code, _, stderr := runCmd(t, "", args...); code == 0 || stderr == "" {
			t.Errorf("%v: exit %d, stderr %q; want a refusal", args, code, stderr)
		}
	}
}

// TestScanContextAttachFailed: a quarantine that failed (attach-failed,
// with --rules all) gets its context document too; a finding of another
// rule (detached) does not.
func TestScanContextAttachFailed(t *testing.T) {
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 5, Noise: 500})
	failed := false
	for i, v := range c.Values {
		if bytes.Contains(v, []byte(c.QuarantineEventID)) {
			c.Values[i] = bytes.Replace(v, []byte(`{`), []byte(`{"errorCode":"AccessDenied","errorMessage":"blocked by an SCP",`), 1)
			failed = true
		}
	}
	if !failed {
		t.Fatal("the quarantine record is not in the case")
	}
	detach := `{"eventVersion":"1.09","eventTime":"2024-11-02T12:30:00Z","eventSource":"iam.amazonaws.com","eventName":"DetachUserPolicy","recipientAccountId":"123456789012","eventID":"00000000-0000-4000-8000-00000000d7ac","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::123456789012:user/ops-admin"},"requestParameters":{"userName":"ledger-sync","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"}}`
	files := append(caseFiles(t, c), writeFile(t, "detach.json", []byte(detach)))
	code, stdout, stderr := runCmd(t, "", append([]string{"scan", "--context", "--rules", "all"}, files...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	var kinds []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		var doc struct {
			Event struct{ Kind string }
			Rule  struct{ ID string }
		}
		if err := json.Unmarshal([]byte(line), &doc); err != nil {
			t.Fatal(err)
		}
		kinds = append(kinds, doc.Event.Kind+" "+doc.Rule.ID)
	}
	want := []string{"alert " + matcher.QuarantineAttachFailedRule.ID, "enrichment ", "alert " + matcher.QuarantineDetachedRule.ID}
	if !slices.Equal(kinds, want) {
		t.Errorf("documents %v, want %v", kinds, want)
	}
}
