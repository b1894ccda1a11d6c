package matcher

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
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
	// With a watchlist: every IAM user of the corpus and of the planted
	// case, the rules' prefilter with the watch's anchor, on the default
	// rule (one group of anchors) and on every rule (two), and validating.
	list := corpusWatchlist(f)
	watchedDefault, watched, watchedStrict := mustNew(f, withRules(nil, false)), mustNew(f, withRules(every, false)), mustNew(f, withRules(every, true))
	for _, m := range []*Matcher{watchedDefault, watched, watchedStrict} {
		m.SetWatchlist(list)
	}
	for _, c := range cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 1, Noise: 0}).Values {
		f.Add(c)
	}
	watchedScanners := []*Scanner{watchedDefault.NewScanner(), watched.NewScanner(), watchedStrict.NewScanner()}
	f.Fuzz(func(t *testing.T, value []byte) {
		for _, s := range watchedScanners {
			want, malformed := reference(value, s.m)
			res := s.Match(value, nil)
			if errors.Is(res.Err, ErrInternal) {
				t.Fatalf("matcher panicked: %v", res.Err)
			}
			if got := findingsOf(res); !slices.Equal(got, want) {
				t.Fatalf("watched (%d rules, validate %v): fast path findings %v, reference %v", len(s.m.rules), s.m.validate, got, want)
			}
			if !s.screened && (res.Err != nil) != malformed {
				t.Fatalf("watched, decoded input: fast path error %v, reference malformed %v", res.Err, malformed)
			}
		}

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

// corpusWatchlist watches every IAM user the public corpus and the planted
// case name (as an IAMUser identity, a session's issuer or
// requestParameters.userName) from 2000 to 2100, and the planted user in
// the other account of the case only for its first hour after the
// quarantine, so that the fuzzer reaches the decision on real records.
func corpusWatchlist(t testing.TB) *Watchlist {
	type ident struct {
		Type, AccountID, UserName string
		SessionContext            struct {
			SessionIssuer struct{ Type, AccountID, UserName string }
		}
	}
	seen := map[string]bool{}
	var entries []WatchEntry
	add := func(account, user string) {
		key := account + "/" + strings.ToLower(user)
		if user == "" || seen[key] || checkWatchEntry(WatchEntry{Account: account, UserName: user, OpenedAt: time.Unix(1, 0), Until: time.Unix(2, 0)}) != nil {
			return
		}
		seen[key] = true
		entries = append(entries, WatchEntry{Account: account, UserName: user,
			OpenedAt: time.Date(2000, 1, 1, 0, 0, 0, 0, time.UTC), Until: time.Date(2100, 1, 1, 0, 0, 0, 0, time.UTC)})
	}
	for _, r := range loadCorpus(t) {
		var rec struct {
			UserIdentity       ident
			RecipientAccountID string
			RequestParameters  any
		}
		if json.Unmarshal(r.raw, &rec) != nil {
			continue
		}
		if rec.UserIdentity.Type == "IAMUser" {
			add(rec.UserIdentity.AccountID, rec.UserIdentity.UserName)
		}
		if si := rec.UserIdentity.SessionContext.SessionIssuer; si.Type == "IAMUser" {
			add(si.AccountID, si.UserName)
		}
		if p, ok := rec.RequestParameters.(map[string]any); ok {
			if u, ok := p["userName"].(string); ok {
				add(rec.RecipientAccountID, u)
			}
		}
	}
	add(cloudtrailgen.CaseAccount, cloudtrailgen.CaseUserName)
	q := time.Date(2024, 11, 2, 12, 0, 0, 0, time.UTC)
	entries = append(entries, WatchEntry{Account: "444455556666", UserName: cloudtrailgen.CaseUserName, OpenedAt: q, Until: q.Add(time.Hour)})
	if len(entries) < 10 {
		t.Fatalf("%d users in the corpus, want more", len(entries))
	}
	w, err := NewWatchlist(entries)
	if err != nil {
		t.Fatal(err)
	}
	return w
}
