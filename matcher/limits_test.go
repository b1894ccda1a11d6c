package matcher

import (
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

// TestLimits: a JSON document past a limit (depth, members, elements, each
// counted in the document alone) is refused with ErrTooComplex, with the
// defaults as with Config.Validate; one at the limit is evaluated. The
// reference evaluator refuses the same values.
func TestLimits(t *testing.T) {
	q := quarantine(t)
	nested := func(levels int) []byte {
		// requestParameters is level 2: the record is level 1.
		return quarantine(t, `{"userName":"test-user","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"}`,
			strings.Repeat(`{"a":`, levels-2)+`{"userName":"test-user","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"}`+strings.Repeat("}", levels-2))
	}
	members := func(n int) []byte { // a record of n members in all
		var b strings.Builder
		for i := range n - countMembers(t, q) {
			fmt.Fprintf(&b, `"x%d":0,`, i)
		}
		return quarantine(t, `"eventVersion"`, b.String()+`"eventVersion"`)
	}
	elements := func(n int) []byte { // n elements in all (the record has none)
		return quarantine(t, `"responseElements":null`, `"responseElements":[`+strings.TrimSuffix(strings.Repeat("0,", n), ",")+`]`)
	}
	cfg := Config{MaxDepth: 64, MaxMembers: 200, MaxElements: 100}
	for _, c := range []struct {
		name  string
		value []byte
		want  []refFinding
		err   error
	}{
		{"depth at the limit", nested(64), one(0), nil},
		{"depth past the limit", nested(65), nil, ErrTooComplex},
		{"members at the limit", members(200), one(0), nil},
		{"members past the limit", members(201), nil, ErrTooComplex},
		{"elements at the limit", elements(100), one(0), nil},
		{"elements past the limit", elements(101), nil, ErrTooComplex},
		// Each document is counted alone: a batch of records carried as
		// strings holds more than one record may.
		{"every log event at the limit", gz(cloudWatchPayload(members(200), members(200), members(200))), []refFinding{
			{ElasticQuarantineRule.ID, quarantineEventID, 0, ""}, {ElasticQuarantineRule.ID, quarantineEventID, 1, ""}, {ElasticQuarantineRule.ID, quarantineEventID, 2, ""}}, nil},
		{"one log event past the limit", gz(cloudWatchPayload(members(200), members(201), members(200))), []refFinding{
			{ElasticQuarantineRule.ID, quarantineEventID, 0, ""}, {ElasticQuarantineRule.ID, quarantineEventID, 2, ""}}, ErrTooComplex},
		{"the batch past the limit", s3Object(members(150), members(150)), nil, ErrTooComplex},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, validate := range []bool{false, true} {
				cfg := cfg
				cfg.Validate = validate
				m := mustNew(t, cfg)
				res := m.NewScanner().Match(c.value, nil)
				if got := findingsOf(res); !slices.Equal(got, c.want) {
					t.Errorf("validate %v: findings %v, want %v", validate, got, c.want)
				}
				if c.err == nil && res.Err != nil || c.err != nil && !errors.Is(res.Err, c.err) {
					t.Errorf("validate %v: error %v, want %v", validate, res.Err, c.err)
				}
				if ref, malformed := reference(c.value, m); !slices.Equal(ref, c.want) || malformed != (c.err != nil) {
					t.Errorf("reference: %v (malformed %v), want %v", ref, malformed, c.want)
				}
			}
		})
	}
	if _, err := New(Config{MaxDepth: jsonMaxDepth + 1}); err == nil {
		t.Error("a depth past encoding/json's was accepted")
	}
	if _, err := New(Config{MaxDecodedBytes: 2 << 30}); err == nil {
		t.Error("a decoded limit past 32-bit offsets was accepted")
	}
}

// countMembers counts the object members of a JSON text with the indexer.
func countMembers(t testing.TB, b []byte) int {
	var x indexer
	if _, _, errAt := x.index(b); errAt >= 0 {
		t.Fatalf("invalid JSON at %d", errAt)
	}
	return x.nMembers
}
