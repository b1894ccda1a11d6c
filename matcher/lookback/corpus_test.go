package lookback_test

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher/lookback"
)

// corpusValues reads the records of a public corpus file
// (../shared/corpus/cloudtrail-public) as record values.
func corpusValues(t *testing.T, name string) [][]byte {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join("..", "..", "..", "shared", "corpus", "cloudtrail-public", name))
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Records []json.RawMessage
		Tests   []struct{ Log json.RawMessage }
	}
	if err := json.Unmarshal(raw, &f); err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, r := range f.Records {
		out = append(out, r)
	}
	for _, tc := range f.Tests {
		out = append(out, tc.Log)
	}
	return out
}

// TestPublicCorpus summarizes real trails. The expected values were read
// off the files by hand (eventIDs, keys), not computed.
func TestPublicCorpus(t *testing.T) {
	for _, c := range []struct {
		name, file string
		subject    lookback.Subject
		end        string
		exclude    string
		events     int
		keys       []string
		notable    []string
		actions    []string
	}{
		{
			// The user mints a federation token; the federated session
			// (another ARN) then calls GetCallerIdentity with the token's
			// key: the user's activity by the key alone.
			name: "Stratus sts-federation-token", file: "stratus/aws.persistence.sts-federation-token.json",
			subject: lookback.Subject{Account: "742491224508", UserName: "stratus-red-team-user-federation-user"},
			end:     "2024-11-30T08:43:18Z", events: 2,
			keys:    []string{"AKIA6V1GNZTT65XQH36M", "ASIASTJKC5GCM7ZE6LUP"},
			notable: []string{"6e882b9d-2af8-4c67-b91f-aeac6a0e5e70"},
			actions: []string{"sts.amazonaws.com GetCallerIdentity 1", "sts.amazonaws.com GetFederationToken 1"},
		},
		{
			// Another principal creates a key for the user.
			name: "Stratus iam-backdoor-user", file: "stratus/aws.persistence.iam-backdoor-user.json",
			subject: lookback.Subject{Account: "946986569305", UserName: "stratus-red-team-backdoor-u-user"},
			end:     "2024-07-31T00:00:00Z", events: 1,
			keys:    []string{"AKIAL80DWDVKKM0UXEER"},
			notable: []string{"c64c4ded-ef03-4e5c-81eb-153b118d72f2"},
			actions: []string{"iam.amazonaws.com CreateAccessKey 1"},
		},
		{
			// Panther's quarantine test: the quarantine is the finding
			// (left out) and the PutUserPolicy on the user comes after it.
			name: "Panther quarantine", file: "panther/aws_iam_compromised_key_quarantine.json",
			subject: lookback.Subject{Account: "123456789012", UserName: "test-user"},
			end:     "2023-11-21T23:23:52Z", exclude: "e7bb4b23-66e1-4656-b607-f575fde3b790",
		},
	} {
		t.Run(c.name, func(t *testing.T) {
			end, err := time.Parse(time.RFC3339, c.end)
			if err != nil {
				t.Fatal(err)
			}
			cfg := lookback.Config{Subject: c.subject, End: end, Lookback: lookback.DefaultLookback, Exclude: c.exclude}
			got, _ := summarizeFiltered(t, corpusValues(t, c.file), cfg)
			var actions, notable []string
			for _, a := range got.Actions {
				actions = append(actions, a.Source+" "+a.Name+" "+itoa(a.Count))
			}
			for _, n := range got.Notable {
				notable = append(notable, n.EventID)
			}
			if got.Events != c.events || !slices.Equal(got.AccessKeyIDs, c.keys) || !slices.Equal(notable, c.notable) || !slices.Equal(actions, c.actions) {
				t.Errorf("events %d, keys %v, notable %v, actions %v; want %d, %v, %v, %v",
					got.Events, got.AccessKeyIDs, notable, actions, c.events, c.keys, c.notable, c.actions)
			}
		})
	}
}

func itoa(n int) string { b, _ := json.Marshal(n); return string(b) }
