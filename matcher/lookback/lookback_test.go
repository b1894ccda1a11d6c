package lookback_test

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"maps"
	"slices"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/matcher"
	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
)

// summarizeFiltered is the look-back as package scan runs it: passes of the
// identity filter over every value, the candidates to the summarizer.
func summarizeFiltered(t *testing.T, values [][]byte, cfg lookback.Config) (lookback.Summary, int) {
	t.Helper()
	s, err := lookback.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	m, err := matcher.New(matcher.Config{})
	if err != nil {
		t.Fatal(err)
	}
	sc := m.NewScanner()
	passes := 0
	err = lookback.Collect(s, func(f *matcher.IdentityFilter) error {
		passes++
		var cands []matcher.Candidate
		for i, v := range values {
			var err error
			cands, err = sc.Select(v, f, cands)
			if err != nil {
				t.Errorf("value %d: %v", i, err)
			}
			for _, c := range cands {
				if err := s.Add(c.Text, c.Shape); err != nil {
					t.Errorf("value %d: %v", i, err)
				}
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return s.Summary(), passes
}

// summarizeEverything offers the summarizer every event of every value,
// found by a decoder of the test's own (encoding/json, compress/gzip): no
// filter at all. The summary must be the same as through the filter.
func summarizeEverything(t *testing.T, values [][]byte, cfg lookback.Config) lookback.Summary {
	t.Helper()
	s, err := lookback.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i, v := range values {
		for _, rec := range everyRecord(t, v) {
			if err := s.Add(rec, matcher.ShapeRecord); err != nil {
				t.Errorf("value %d: %v", i, err)
			}
		}
	}
	return s.Summary()
}

// everyRecord returns the CloudTrail records of a value of the shapes the
// generator writes, as JSON text; ECS documents give their event.original.
func everyRecord(t *testing.T, v []byte) [][]byte {
	if bytes.HasPrefix(v, []byte{0x1f, 0x8b}) {
		zr, err := gzip.NewReader(bytes.NewReader(v))
		if err != nil {
			t.Fatal(err)
		}
		if v, err = io.ReadAll(zr); err != nil {
			t.Fatal(err)
		}
	}
	var top map[string]any
	if err := json.Unmarshal(v, &top); err != nil {
		// base64 of gzip, or the awslogs wrapper: the generator's noise
		// only, which never holds the user (the keys and name are in no
		// pool); the filter's tests cover these shapes.
		return nil
	}
	var out [][]byte
	asJSON := func(x any) []byte { b, _ := json.Marshal(x); return b }
	switch {
	case top["Records"] != nil:
		for _, r := range top["Records"].([]any) {
			out = append(out, asJSON(r))
		}
	case top["awslogs"] != nil:
	case top["logEvents"] != nil:
		for _, e := range top["logEvents"].([]any) {
			msg, _ := e.(map[string]any)["message"].(string)
			if msg != "" && msg[0] == '{' {
				out = append(out, []byte(msg))
			}
		}
	case top["detail"] != nil:
		out = append(out, asJSON(top["detail"]))
	case top["eventName"] != nil:
		out = append(out, v)
	case top["event.action"] != nil || top["event"] != nil && top["message"] == nil:
		ev, _ := top["event"].(map[string]any)
		if o, ok := ev["original"].(string); ok {
			out = append(out, []byte(o))
		} else if o, ok := top["event.original"].(string); ok {
			out = append(out, []byte(o))
		}
	case top["message"] != nil:
		out = append(out, []byte(top["message"].(string)))
	}
	return out
}

func TestPlantedCase(t *testing.T) {
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 7, Noise: 3000})
	for _, tc := range []struct {
		name     string
		lookback time.Duration
	}{
		{"default 24h", lookback.DefaultLookback},
		{"48h, before the files start", 48 * time.Hour},
		{"1h", time.Hour},
		{"3h25m: a key taught before the window, used in it", 3*time.Hour + 25*time.Minute},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := lookback.Config{
				Subject:  lookback.Subject{Account: cloudtrailgen.CaseAccount, UserName: cloudtrailgen.CaseUserName},
				End:      c.QuarantineTime,
				Lookback: tc.lookback,
				Exclude:  c.QuarantineEventID,
			}
			got, passes := summarizeFiltered(t, c.Values, cfg)
			want := c.Truth(c.QuarantineTime.Add(-tc.lookback))
			checkTruth(t, got, want)
			if want.Events == 0 {
				t.Fatal("the case plants nothing in this window: the test checks nothing")
			}
			t.Logf("%d passes, %d events, keys %v", passes, got.Events, got.AccessKeyIDs)
			if all := summarizeEverything(t, c.Values, cfg); !equalSummaries(all, got) {
				t.Errorf("summary through the filter differs from the summary of every event:\nfiltered %+v\nall      %+v", got, all)
			}
		})
	}
}

func checkTruth(t *testing.T, got lookback.Summary, want cloudtrailgen.CaseTruth) {
	t.Helper()
	if got.Events != want.Events || got.AsActor != want.AsActor || got.AsTarget != want.AsTarget {
		t.Errorf("events %d (actor %d, target %d), want %d (%d, %d)", got.Events, got.AsActor, got.AsTarget, want.Events, want.AsActor, want.AsTarget)
	}
	actions := map[string]int{}
	for _, a := range got.Actions {
		actions[a.Source+" "+a.Name] = a.Count
	}
	if !maps.Equal(actions, want.Actions) {
		t.Errorf("actions %v, want %v", actions, want.Actions)
	}
	for _, s := range []struct {
		name string
		got  []lookback.Seen
		want map[string]cloudtrailgen.SeenTruth
	}{{"source IPs", got.SourceIPs, want.SourceIPs}, {"user agents", got.UserAgents, want.UserAgents}} {
		m := map[string]cloudtrailgen.SeenTruth{}
		for _, v := range s.got {
			m[v.Value] = cloudtrailgen.SeenTruth{Count: v.Count, First: v.First, Last: v.Last}
		}
		if !maps.EqualFunc(m, s.want, func(a, b cloudtrailgen.SeenTruth) bool {
			return a.Count == b.Count && a.First.Equal(b.First) && a.Last.Equal(b.Last)
		}) {
			t.Errorf("%s %v, want %v", s.name, m, s.want)
		}
	}
	counts := func(cs []lookback.Count) map[string]int {
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
		notable = append(notable, n.EventID)
	}
	slices.Sort(notable)
	if !slices.Equal(notable, want.Notable) {
		t.Errorf("notable %v, want %v", notable, want.Notable)
	}
	if got.Undated+got.UnreadECS+got.Malformed != 0 {
		t.Errorf("left out: %d undated, %d unread ECS, %d malformed; want none", got.Undated, got.UnreadECS, got.Malformed)
	}
}

func equalSummaries(a, b lookback.Summary) bool {
	ja, _ := json.Marshal(a)
	jb, _ := json.Marshal(b)
	return bytes.Equal(ja, jb)
}

// TestOrderAndDuplicates: the same events in another order, some twice,
// give the same summary byte for byte (the context document is keyed by
// the alert id and must not depend on delivery order).
func TestOrderAndDuplicates(t *testing.T) {
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 3, Noise: 200})
	cfg := lookback.Config{
		Subject: lookback.Subject{Account: cloudtrailgen.CaseAccount, UserName: cloudtrailgen.CaseUserName},
		End:     c.QuarantineTime, Lookback: lookback.DefaultLookback, Exclude: c.QuarantineEventID,
	}
	want := summarizeEverything(t, c.Values, cfg)
	var recs [][]byte
	for _, v := range c.Values {
		recs = append(recs, everyRecord(t, v)...)
	}
	s, err := lookback.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(recs) - 1; i >= 0; i-- {
		for range 1 + i%2 {
			if err := s.Add(recs[i], matcher.ShapeRecord); err != nil {
				t.Fatal(err)
			}
		}
	}
	if got := s.Summary(); !equalSummaries(got, want) {
		t.Errorf("reversed, with duplicates:\n%+v\nwant\n%+v", got, want)
	}
}

// TestLeftOut: what cannot be placed or read is counted, not dropped.
func TestLeftOut(t *testing.T) {
	cfg := lookback.Config{Subject: lookback.Subject{Account: "111122223333", UserName: "alice"},
		End: time.Date(2024, 1, 2, 0, 0, 0, 0, time.UTC), Lookback: time.Hour}
	s, err := lookback.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	undated := `{"eventID":"1","eventName":"ListBuckets","userIdentity":{"type":"IAMUser","arn":"arn:aws:iam::111122223333:user/alice"}}`
	ecsNoOriginal := `{"event":{"action":"ListBuckets"},"user":{"name":"alice"}}`
	ecsOriginal := `{"event":{"action":"ListBuckets","original":"{\"eventID\":\"2\",\"eventTime\":\"2024-01-01T23:30:00Z\",\"eventSource\":\"s3.amazonaws.com\",\"eventName\":\"ListBuckets\",\"userIdentity\":{\"type\":\"IAMUser\",\"arn\":\"arn:aws:iam::111122223333:user/Alice\",\"accessKeyId\":\"AKIAAAAAAAAAAAAAAAAA\"}}"}}`
	for _, c := range []struct {
		text  string
		shape matcher.Shape
		err   bool
	}{
		{undated, matcher.ShapeRecord, false},
		{ecsNoOriginal, matcher.ShapeECS, false},
		{ecsOriginal, matcher.ShapeECS, false},
		{`{"eventID":`, matcher.ShapeRecord, true},
	} {
		if err := s.Add([]byte(c.text), c.shape); (err != nil) != c.err {
			t.Errorf("Add(%s): error %v, want error %v", c.text, err, c.err)
		}
	}
	got := s.Summary()
	if got.Undated != 1 || got.UnreadECS != 1 || got.Malformed != 1 || got.Events != 1 || !slices.Equal(got.AccessKeyIDs, []string{"AKIAAAAAAAAAAAAAAAAA"}) {
		t.Errorf("got %+v; want 1 undated, 1 unread ECS, 1 malformed, 1 event (the ECS document's original, ARN in another case), its key", got)
	}
}
