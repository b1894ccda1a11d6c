package matcher

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// awslogsData is an awslogs wrapper around data as it is written (JSON
// string contents, escapes and all).
func awslogsData(data string) []byte {
	return []byte(`{"awslogs":{"data":"` + data + `"}}`)
}

// b64String is the base64 of gzip of a CloudWatch Logs payload holding the
// quarantine attachment.
func quarantineB64(t testing.TB) string {
	return string(b64(gz(cloudWatchPayload(quarantine(t)))))
}

// nonCanonicalPad flips the unused low bits of base64 text's last quantum
// before its padding, which RFC 4648 section 3.5 lets a decoder refuse.
func nonCanonicalPad(t testing.TB, s string) string {
	t.Helper()
	i := strings.IndexByte(s, '=')
	if i < 1 {
		t.Fatalf("no padding in %.20q...", s)
	}
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	c := strings.IndexByte(alphabet, s[i-1])
	return s[:i-1] + string(alphabet[c|1]) + s[i:]
}

type leniencyCase struct {
	name  string
	value []byte
	want  []refFinding
	// err is what the value fails with when it is decoded (Config.Validate);
	// with the defaults the prefilter may screen it, but never a finding.
	err error
}

// leniencyCases holds one input per leniency of a decoder the matcher uses
// (the inventory in prefilter.go): what the decoders accept must be exactly
// what the prefilter's argument covers, so that the defaults and
// Config.Validate always report the same findings.
func leniencyCases(t testing.TB) []leniencyCase {
	q := quarantine(t)
	data := quarantineB64(t)
	payloadGz := gz(cloudWatchPayload(q))
	split := func(at int, sep string) string { return data[:at] + sep + data[at:] }
	withRecords := func(payload string) []byte {
		return []byte(`{"awslogs":{"data":"` + string(b64(gz([]byte(payload)))) + `"}}`)
	}
	twoMembers := append(gz(q[:len(q)/2]), gz(q[len(q)/2:])...)
	reserved := bytes.Clone(gz(q))
	reserved[3] |= 0x20
	return []leniencyCase{
		// base64 (RFC 4648): Go's decoder skips CR and LF anywhere, so
		// "H4sI" need not be literal; the prefilter assumed it is.
		{name: "base64 LF inside H4sI (escaped)", value: awslogsData(split(2, `\n`)), err: ErrBadCompression},
		{name: "base64 CRLF inside H4sI (escaped)", value: awslogsData(split(1, `\r\n`)), err: ErrBadCompression},
		{name: "base64 LF inside H4sI (\\u escape)", value: awslogsData(split(2, `\u000a`)), err: ErrBadCompression},
		{name: "base64 LF after H4sI", value: awslogsData(split(40, `\n`)), err: ErrBadCompression},
		{name: "base64 LF inside the value's base64", value: []byte(split(40, "\n")), err: ErrBadCompression},
		{name: "base64 CRLF at the end of the data", value: awslogsData(data + `\r\n`), err: ErrBadCompression},
		{name: "base64 non-zero pad bits", value: awslogsData(nonCanonicalPad(t, data)), err: ErrBadCompression},
		{name: "base64 URL alphabet", value: awslogsData(strings.NewReplacer("+", "-", "/", "_").Replace(data)), err: ErrBadCompression},
		{name: "base64 without padding", value: awslogsData(strings.TrimRight(data, "=")), err: ErrBadCompression},
		{name: "base64 space inside", value: awslogsData(split(40, " ")), err: ErrBadCompression},
		{name: "base64 escaped slash is a slash", value: awslogsData(strings.ReplaceAll(data, "/", `\/`)), want: one(0)},
		{name: "base64 value with JSON whitespace around it", value: []byte(" \r\n" + data + "\n"), want: one(0)},

		// gzip (RFC 1952).
		{name: "gzip two members", value: twoMembers, want: one(0)},
		{name: "gzip reserved flag bit", value: reserved, err: ErrBadCompression},
		{name: "gzip trailing garbage", value: append(gz(q), "garbage!!!!!!"...), err: ErrBadCompression},
		{name: "gzip trailing zeros", value: append(gz(q), make([]byte, 16)...), err: ErrBadCompression},
		{name: "gzip truncated trailer", value: payloadGz[:len(payloadGz)-2], err: ErrBadCompression},

		// JSON (RFC 8259).
		{name: "JSON byte order mark", value: append([]byte("\xef\xbb\xbf"), q...), err: ErrMalformedJSON},
		{name: "JSON byte order mark inside gzip", value: gz(append([]byte("\xef\xbb\xbf"), q...)), err: ErrMalformedJSON},
		{name: "JSON two documents", value: append(bytes.Clone(q), q...), err: ErrMalformedJSON},
		{name: "JSON whitespace around the record", value: []byte("\t\r\n " + string(q) + " \n"), want: one(0)},
		{name: "JSON lone surrogate escape", value: quarantine(t, `"userName":"test-user"`, `"userName":"\ud800test-user"`), want: one(0)},

		// Shapes: the awslogs wrapper as AWS writes it takes a fast path;
		// it must decide exactly as the decoder does for any spelling.
		{name: "awslogs payload with Records and logEvents", value: withRecords(`{"messageType":"DATA_MESSAGE","logEvents":[],"Records":[` + string(q) + `]}`)},
		{name: "awslogs payload with Records and logEvents, spaced", value: bytes.Replace(withRecords(`{"messageType":"DATA_MESSAGE","logEvents":[],"Records":[`+string(q)+`]}`), []byte(`{"awslogs"`), []byte(`{ "awslogs"`), 1)},
		{name: "awslogs control message with Records", value: withRecords(`{"messageType":"CONTROL_MESSAGE","logEvents":[],"Records":[` + string(q) + `]}`)},
		{name: "awslogs payload that is a record", value: withRecords(string(q)), err: ErrUnknownShape},
		{name: "awslogs data with a control byte", value: awslogsData(split(40, "\t")), err: ErrMalformedJSON},
	}
}

// TestLeniencies: for one input per decoder leniency, the defaults (with the
// prefilter) and Config.Validate report the same findings, and a decoded
// value fails with the class the inventory says.
func TestLeniencies(t *testing.T) {
	fast := mustNew(t, Config{})
	strict := mustNew(t, Config{Validate: true})
	for _, c := range leniencyCases(t) {
		t.Run(c.name, func(t *testing.T) {
			def := fast.NewScanner().Match(c.value, nil)
			val := strict.NewScanner().Match(c.value, nil)
			if d, v := findingsOf(def), findingsOf(val); !slices.Equal(d, v) {
				t.Errorf("the defaults find %v, Config.Validate finds %v", d, v)
			}
			if got := findingsOf(def); !slices.Equal(got, c.want) {
				t.Errorf("defaults: findings %v, want %v (error %v)", got, c.want, def.Err)
			}
			if got := findingsOf(val); !slices.Equal(got, c.want) {
				t.Errorf("validating: findings %v, want %v (error %v)", got, c.want, val.Err)
			}
			ref, malformed := reference(c.value, strict)
			if !slices.Equal(ref, c.want) || malformed != (c.err != nil) {
				t.Errorf("reference: findings %v, malformed %v", ref, malformed)
			}
			switch {
			case c.err == nil && (def.Err != nil || val.Err != nil):
				t.Errorf("errors %v / %v, want none", def.Err, val.Err)
			case c.err != nil && !errors.Is(val.Err, c.err):
				t.Errorf("validating: error %v, want %v", val.Err, c.err)
			case c.err != nil && def.Err != nil && !errors.Is(def.Err, c.err):
				t.Errorf("defaults: error %v, want %v or none", def.Err, c.err)
			}
		})
	}
}
