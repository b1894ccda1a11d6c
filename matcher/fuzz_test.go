package matcher

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"testing"
)

// FuzzMatcher checks the fast path against the reference evaluator: the same
// findings on every input, never a panic, and the same verdict on malformed
// input wherever the prefilter let the value through (with Config.Validate,
// everywhere).
func FuzzMatcher(f *testing.F) {
	samples, err := filepath.Glob(filepath.Join(samplesDir, "*.json"))
	if err != nil || len(samples) == 0 {
		f.Fatalf("no samples in %s: %v", samplesDir, err)
	}
	for _, path := range samples {
		b, err := os.ReadFile(path)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	for _, c := range matchCases(f) {
		if len(c.value) < 64<<10 {
			f.Add(c.value)
		}
	}
	for _, c := range companionCases(f) {
		f.Add(c.value)
	}
	// One input per decoder leniency in prefilter.go's inventory.
	for _, c := range leniencyCases(f) {
		f.Add(c.value)
	}
	// The public corpus: every record as it is, Elastic's ECS output of
	// its pipeline tests as dotted documents, and awslib's gzip S3 object.
	for _, r := range loadCorpus(f) {
		f.Add(r.raw)
		if r.elastic != nil {
			ecs, _ := json.Marshal(r.elastic)
			f.Add(ecs)
		}
	}
	f.Add(corpusS3Object(f))
	f.Add(quarantine(f, "AWSCompromisedKeyQuarantineV2", `\u005aeroTrustBoundary-Jx`))
	f.Add(agentEvent(quarantine(f, "AWSCompromisedKeyQuarantineV2", `DenyAll-\u005aq`)))
	// The default rule alone (its own prefilter), and every rule with one
	// the tests declare (two groups of prefilter anchors). Limits are small
	// so that a mutated gzip bomb costs milliseconds, not seconds.
	limits := Config{MaxValueBytes: 256 << 10, MaxDecodedBytes: 1 << 20}
	withRules := func(rules []*Rule, validate bool) Config {
		c := limits
		c.Rules, c.Validate = rules, validate
		return c
	}
	fastDefault := mustNew(f, withRules(nil, false))
	every := append(slices.Clone(AllRules), zeroTrustRule)
	fast := mustNew(f, withRules(every, false))
	strict := mustNew(f, withRules(every, true))
	defaultScanner, fastScanner, strictScanner := fastDefault.NewScanner(), fast.NewScanner(), strict.NewScanner()
	f.Fuzz(func(t *testing.T, value []byte) {
		want, malformed := reference(value, fast)

		wantDefault, _ := reference(value, fastDefault)
		if got := findingsOf(defaultScanner.Match(value, nil)); !slices.Equal(got, wantDefault) {
			t.Fatalf("default rule: fast path findings %v, reference %v", got, wantDefault)
		}

		res := fastScanner.Match(value, nil)
		if errors.Is(res.Err, ErrInternal) {
			t.Fatalf("matcher panicked: %v", res.Err)
		}
		if got := findingsOf(res); !slices.Equal(got, want) {
			t.Fatalf("fast path findings %v, reference %v", got, want)
		}
		if res.Err != nil && !malformed {
			t.Fatalf("fast path error %v on input the reference accepts", res.Err)
		}
		if !fastScanner.screened && (res.Err != nil) != malformed {
			t.Fatalf("decoded input: fast path error %v, reference malformed %v", res.Err, malformed)
		}
		if ie, ok := res.Err.(*InputError); res.Err != nil && (!ok || ie.Class() == "unknown") {
			t.Fatalf("error without a class: %v", res.Err)
		}

		res = strictScanner.Match(value, nil)
		if got := findingsOf(res); !slices.Equal(got, want) {
			t.Fatalf("validating findings %v, reference %v", got, want)
		}
		if (res.Err != nil) != malformed {
			t.Fatalf("validating error %v, reference malformed %v", res.Err, malformed)
		}
	})
}
