package matcher

import (
	"bytes"
	"strings"
	"testing"
)

func TestMayMatch(t *testing.T) {
	for _, c := range []struct {
		name string
		text string
		want bool
	}{
		{"plain record", `{"eventName":"DescribeInstances","requestParameters":{"a":"b"}}`, false},
		{"marker", `{"p":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"}`, true},
		{"marker at the very start", `AWSCompromisedKeyQuarantine`, true},
		{"half a marker", `{"p":"AWSCompromisedKey","q":"Quarantine"}`, false},
		{"Q elsewhere", `{"p":"Quota","q":"AWSCompromisedKeyQ"}`, false},
		{"escape of '='", `{"u":"a\u003db"}`, false},
		{"escape of '&' and of non-ASCII", `{"u":"a\u0026b\u00e9"}`, false},
		{"escape of a marker letter", `{"p":"AWSCompromisedKey\u0051uarantine"}`, true},
		{"escape of a lowercase hex letter", `{"p":"\u0061"}`, true},
		{"escape of a backslash", `{"m":"\u005cu0051"}`, true},
		{"escape of u", `{"m":"\\\u00750051"}`, true},
		{"escaped escape of a marker letter", `{"m":"\\u0051"}`, true},
		{"escape not followed by hex", `{"m":"\\u\u0030051"}`, true},
		{"escape cut short", `{"m":"\u00`, true},
		{"base64 of gzip", `{"awslogs":{"data":"H4sIAAAAAAAA"}}`, true},
		{"base64 of gzip, escaped", `{"awslogs":{"data":"\u00484sIAAAAAAAA"}}`, true},
	} {
		p := newPrefilter([][]byte{[]byte(quarantineMarker)}, nil)
		if got := p.mayMatchSlow([]byte(c.text)); got != c.want {
			t.Errorf("%s: mayMatchSlow(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
		if got := p.mayMatch([]byte(c.text)); got != c.want {
			t.Errorf("%s: mayMatch(%s) = %v, want %v", c.name, c.text, got, c.want)
		}
	}
}

// FuzzPrefilter holds the one-pass prefilter (AVX2 where the CPU has it) to
// the searches one after the other, for the default rule and for all rules.
func FuzzPrefilter(f *testing.F) {
	for _, s := range []string{
		`{"p":"AWSCompromisedKeyQuarantineV2"}`, `x\u0051`, `\u003d`, `H4sI`, `QuQuQu\\\\H4H4`, `AWSCompromisedKeyQuarantin`,
		`\u00`, `AWSExposedCredentialPolicy_DO_NOT_REMOVE`, strings.Repeat("a", 31) + "AWSCompromisedKeyQuarantine",
		"xZeroTrustBoundary-Jx", `\u005aeroTrustQuarantine-Jx`, strings.Repeat("d", 40) + "Q-Jx",
		strings.Repeat("b", 63) + `\u0041`, strings.Repeat("c", 30) + "H4sI",
	} {
		f.Add([]byte(s))
	}
	one := newPrefilter([][]byte{[]byte(quarantineMarker)}, nil)
	all := newPrefilter([][]byte{[]byte(quarantineMarker), []byte(legacyMarker)}, nil)
	// Three markers need two groups of anchors, two passes.
	three := newPrefilter([][]byte{[]byte(quarantineMarker), []byte(legacyMarker), []byte("ZeroTrustBoundary-Jx")}, nil)
	if len(three.groups) != 2 {
		f.Fatalf("three markers: %d groups of anchors, want 2", len(three.groups))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, p := range []*prefilter{&one, &all, &three} {
			if got, want := p.mayMatch(b), p.mayMatchSlow(b); got != want {
				t.Fatalf("mayMatch(%q) = %v, the searches one by one say %v", b, got, want)
			}
		}
	})
}

// TestIndexPairAgainstScalar puts each pair at every position of buffers of
// every length around the 32-byte blocks, including the last byte.
func TestIndexPairAgainstScalar(t *testing.T) {
	p := newPrefilter([][]byte{[]byte(quarantineMarker), []byte(legacyMarker)}, nil)
	pairs := &p.groups[0]
	scalar := func(b []byte) int {
		for i := 0; i+1 < len(b); i++ {
			for k := range pairs.first {
				if b[i] == pairs.first[k] && b[i+1] == pairs.second[k] {
					return i
				}
			}
		}
		return -1
	}
	for n := 0; n <= 130; n++ {
		b := bytes.Repeat([]byte{'.'}, n)
		if got := indexPair(b, pairs); got != -1 {
			t.Fatalf("len %d: found %d in nothing", n, got)
		}
		for k := range pairs.first {
			for at := 0; at+1 < n; at++ {
				c := bytes.Repeat([]byte{'.'}, n)
				c[at], c[at+1] = pairs.first[k], pairs.second[k]
				if got, want := indexPair(c, pairs), scalar(c); got != want || got != at {
					t.Fatalf("len %d, pair %d at %d: indexPair %d, scalar %d", n, k, at, got, want)
				}
			}
			// Half a pair on the last byte is no pair.
			if n > 0 {
				c := bytes.Repeat([]byte{'.'}, n)
				c[n-1] = pairs.first[k]
				if got := indexPair(c, pairs); got != -1 {
					t.Fatalf("len %d: half pair at the end found at %d", n, got)
				}
			}
		}
	}
}

func BenchmarkPrefilter(b *testing.B) {
	rec := []byte(`{"eventVersion":"1.08","userIdentity":{"type":"AssumedRole","principalId":"AROAQH3EXAMPLE:user","arn":"arn:aws:sts::123456789012:assumed-role/Admin/user","accountId":"123456789012","accessKeyId":"ASIAQHEXAMPLEKEY"},"eventTime":"2024-11-01T00:00:00Z","eventSource":"ec2.amazonaws.com","eventName":"DescribeInstances","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15.0 Python/3.11.6 Linux/6.1 exe/x86_64 HTTP/1.1","requestParameters":{"instancesSet":{},"filterSet":{"items":[{"name":"tag:Name","valueSet":{"items":[{"value":"web\u003dprod"}]}}]}},"responseElements":null,"requestID":"3f1c2f9e-7d3a-4c39-9d0b-2d1b2f0c9e11","eventID":"9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","eventCategory":"Management"}`)
	p := newPrefilter([][]byte{[]byte(quarantineMarker)}, nil)
	// The look-back's identity filter on the same record, for a user name
	// and for the name with four keys.
	name, err := NewIdentityFilter([]string{"ledger-sync"})
	if err != nil {
		b.Fatal(err)
	}
	keys, err := NewIdentityFilter([]string{"ledger-sync", "AKIA0LEDGERSYNC00001", "AKIA0LEDGERSYNC00002", "ASIA0LEDGERSYNC00003", "AKIA0LEDGERSYNC00004"})
	if err != nil {
		b.Fatal(err)
	}
	for _, c := range []struct {
		name string
		fn   func([]byte) bool
	}{
		{"one-pass", p.mayMatch}, {"search-by-search", p.mayMatchSlow}, {"bound", func(b []byte) bool { return bytes.IndexByte(b, 0xff) >= 0 }},
		{"identity-name", name.MayContain}, {"identity-name+4keys", keys.MayContain},
	} {
		b.Run(c.name, func(b *testing.B) {
			b.SetBytes(int64(len(rec)))
			for b.Loop() {
				if c.fn(rec) {
					b.Fatal("record passed the prefilter")
				}
			}
		})
	}
}
