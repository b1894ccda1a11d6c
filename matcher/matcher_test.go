package matcher

import (
	"bytes"
	"compress/gzip"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

var samplesDir = filepath.Join("..", "..", "shared", "samples")

func readSample(t testing.TB, name string) []byte {
	t.Helper()
	matches, err := filepath.Glob(filepath.Join(samplesDir, name+"*"))
	if err != nil || len(matches) != 1 {
		t.Fatalf("sample %s: %v %v", name, matches, err)
	}
	b, err := os.ReadFile(matches[0])
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// compact makes a sample one line, as records travel on Kafka.
func compact(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := json.Compact(&buf, b); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	w := gzip.NewWriter(&buf)
	w.Write(b)
	w.Close()
	return buf.Bytes()
}

func b64(b []byte) []byte { return []byte(base64.StdEncoding.EncodeToString(b)) }

func quoteJSON(b []byte) string {
	s, _ := json.Marshal(string(b))
	return string(s)
}

func s3Object(records ...[]byte) []byte {
	return []byte(`{"Records":[` + string(bytes.Join(records, []byte(","))) + `]}`)
}

func eventBridge(rec []byte) []byte {
	return []byte(`{"version":"0","id":"36eb8523-97d0-4518-b33d-ee3579ff19f0","detail-type":"AWS API Call via CloudTrail","source":"aws.iam","account":"123456789012","time":"2023-11-21T23:23:52Z","region":"us-east-1","resources":[],"detail":` + string(rec) + `}`)
}

func cloudWatchPayload(records ...[]byte) []byte {
	var events []string
	for i, r := range records {
		events = append(events, fmt.Sprintf(`{"id":"3195310660696698337880902507980421114328961542429822156%d","timestamp":1432826855000,"message":%s}`, i, quoteJSON(r)))
	}
	return []byte(`{"owner":"123456789012","logGroup":"CloudTrail","logStream":"123456789012_CloudTrail_us-east-1","subscriptionFilters":["Destination"],"messageType":"DATA_MESSAGE","logEvents":[` + strings.Join(events, ",") + `]}`)
}

func awslogs(payload []byte) []byte {
	return []byte(`{"awslogs":{"data":"` + string(b64(gz(payload))) + `"}}`)
}

func agentEvent(rec []byte) []byte {
	return []byte(`{"@timestamp":"2023-11-21T23:24:00.000Z","agent":{"type":"filebeat","version":"8.15.0"},"input":{"type":"aws-s3"},"data_stream":{"dataset":"aws.cloudtrail"},"message":` + quoteJSON(rec) + `}`)
}

func ecsDocument(action, outcome, dataset, params string) []byte {
	return []byte(fmt.Sprintf(`{"@timestamp":"2023-11-21T23:23:52.000Z","event":{"id":"e7bb4b23-66e1-4656-b607-f575fde3b790","action":%q,"outcome":%q,"dataset":%q,"provider":"iam.amazonaws.com","kind":"event"},"cloud":{"account":{"id":"123456789012"},"region":"us-east-1"},"aws":{"cloudtrail":{"request_parameters":%q,"user_identity":{"type":"AssumedRole","arn":"arn:aws:sts::123456789012:assumed-role/a-role/user.name","access_key_id":"FAKE_ACCESS_KEY"}}},"user":{"target":{"name":"test-user"}},"source":{"ip":"1.2.3.4"},"user_agent":{"original":"AWS Internal"}}`,
		action, outcome, dataset, params))
}

// quarantine is sample 02 (a V2 quarantine attachment) on one line, with
// replacements applied in order.
func quarantine(t testing.TB, replace ...string) []byte {
	t.Helper()
	s := string(compact(t, readSample(t, "02_")))
	for i := 0; i+1 < len(replace); i += 2 {
		if !strings.Contains(s, replace[i]) {
			t.Fatalf("quarantine: %q not in sample", replace[i])
		}
		s = strings.Replace(s, replace[i], replace[i+1], 1)
	}
	return []byte(s)
}

const quarantineEventID = "e7bb4b23-66e1-4656-b607-f575fde3b790"

func withEventID(t testing.TB, rec []byte, id string) []byte {
	t.Helper()
	return bytes.Replace(rec, []byte(quarantineEventID), []byte(id), 1)
}

type matchCase struct {
	name  string
	value []byte
	want  []refFinding // nil: no finding
	// err is the sentinel the value must fail with, if any.
	err error
	// validate runs the case with Config.Validate.
	validate bool
}

func one(index int) []refFinding {
	return []refFinding{{ElasticQuarantineRule.ID, quarantineEventID, index, ""}}
}

func matchCases(t testing.TB) []matchCase {
	q := quarantine(t)
	other := compact(t, readSample(t, "01_"))
	failed := quarantine(t, `"eventName":"AttachUserPolicy"`, `"eventName":"AttachUserPolicy","errorCode":"AccessDenied","errorMessage":"User is not authorized to perform: iam:AttachUserPolicy with an explicit deny in a service control policy"`)
	second := withEventID(t, q, "11111111-2222-4333-8444-555555555555")
	deep := []byte(`{"eventName":"AttachUserPolicy","requestParameters":` + strings.Repeat(`{"a":`, 100_000) + `"AWSCompromisedKeyQuarantine"` + strings.Repeat("}", 100_000) + `}`)
	cases := []matchCase{
		// Every sample file as it is.
		{name: "sample 01 attach AdministratorAccess", value: readSample(t, "01_")},
		{name: "sample 02 quarantine V2", value: readSample(t, "02_"), want: one(0)},
		{name: "sample 03 attach role policy", value: readSample(t, "03_")},
		{name: "sample 04 assume role", value: readSample(t, "04_")},
		{name: "sample 05 S3 object add user to group", value: readSample(t, "05_")},
		{name: "sample 06 S3 object failed update trail", value: readSample(t, "06_")},
		{name: "sample 07 EventBridge create bucket", value: readSample(t, "07_")},
		{name: "sample 08 ECS attach AdministratorAccess", value: readSample(t, "08_")},
		{name: "sample 09 CloudWatch decoded, truncated message, prefiltered", value: readSample(t, "09_")},
		{name: "sample 09 CloudWatch decoded, truncated message, validated", value: readSample(t, "09_"), validate: true, err: ErrMalformedJSON},
		{name: "sample 10 legacy inline quarantine is not the Elastic rule", value: readSample(t, "10_")},

		// V1 to V4 and the shapes.
		{name: "V1", value: quarantine(t, "QuarantineV2", "Quarantine"), want: one(0)},
		{name: "V3", value: quarantine(t, "QuarantineV2", "QuarantineV3"), want: one(0)},
		{name: "V4", value: quarantine(t, "QuarantineV2", "QuarantineV4"), want: one(0)},
		{name: "S3 object, two of three match", value: s3Object(q, other, second), want: []refFinding{
			{ElasticQuarantineRule.ID, quarantineEventID, 0, ""}, {ElasticQuarantineRule.ID, "11111111-2222-4333-8444-555555555555", 2, ""}}},
		{name: "EventBridge", value: eventBridge(q), want: one(0)},
		{name: "CloudWatch gzip", value: gz(cloudWatchPayload(other, q)), want: one(1)},
		{name: "CloudWatch base64 of gzip", value: b64(gz(cloudWatchPayload(q))), want: one(0)},
		{name: "CloudWatch awslogs wrapper", value: awslogs(cloudWatchPayload(other, other, q)), want: one(2)},
		{name: "CloudWatch awslogs wrapper, data escaped", value: bytes.Replace(awslogs(cloudWatchPayload(q)), []byte(`"H4sI`), []byte(`"\u00484sI`), 1), want: one(0)},
		{name: "CloudWatch awslogs wrapper, not canonical", value: bytes.Replace(awslogs(cloudWatchPayload(q)), []byte(`{"awslogs":`), []byte(`{ "awslogs" : `), 1), want: one(0)},
		{name: "CloudWatch decoded", value: cloudWatchPayload(q), want: one(0)},
		{name: "Agent message", value: agentEvent(q), want: one(0)},
		{name: "CloudWatch control message is no record", value: gz([]byte(`{"messageType":"CONTROL_MESSAGE","owner":"CloudwatchLogs","logGroup":"","logStream":"","subscriptionFilters":[],"logEvents":[{"id":"","timestamp":1730419212758,"message":"CWL CONTROL MESSAGE: Checking health of destination Firehose."}]}`)), validate: true},
		{name: "ECS", value: ecsDocument("AttachUserPolicy", "success", "aws.cloudtrail", "{userName=test-user, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"), want: one(0)},
		{name: "ECS dataset in data_stream", value: bytes.Replace(ecsDocument("AttachUserPolicy", "success", "", "{policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3, userName=test-user}"), []byte(`"cloud":`), []byte(`"data_stream":{"dataset":"aws.cloudtrail"},"cloud":`), 1), want: one(0)},
		{name: "ECS other dataset", value: ecsDocument("AttachUserPolicy", "success", "aws.guardduty", "{policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}")},
		{name: "ECS failure", value: ecsDocument("AttachUserPolicy", "failure", "aws.cloudtrail", "{policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}")},
		{name: "ECS role attachment", value: ecsDocument("AttachRolePolicy", "success", "aws.cloudtrail", "{policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2, roleName=r}")},
		{name: "gzip of a single record", value: gz(q), want: one(0)},

		// Near misses.
		{name: "failed with AccessDenied", value: failed},
		{name: "failed in every shape: S3", value: s3Object(failed)},
		{name: "failed in every shape: Agent", value: agentEvent(failed)},
		{name: "failed in every shape: CloudWatch gzip", value: gz(cloudWatchPayload(failed))},
		{name: "errorMessage alone is a failure", value: quarantine(t, `"eventName":"AttachUserPolicy"`, `"eventName":"AttachUserPolicy","errorMessage":"denied"`)},
		{name: "empty errorCode is a success", value: quarantine(t, `"eventName":"AttachUserPolicy"`, `"eventName":"AttachUserPolicy","errorCode":"","errorMessage":null`), want: one(0)},
		{name: "attach to a role", value: quarantine(t, "AttachUserPolicy", "AttachRolePolicy", `"userName":"test-user"`, `"roleName":"test-role"`)},
		{name: "attach to a group", value: quarantine(t, "AttachUserPolicy", "AttachGroupPolicy", `"userName":"test-user"`, `"groupName":"test-group"`)},
		{name: "detach", value: quarantine(t, "AttachUserPolicy", "DetachUserPolicy")},
		{name: "other policy", value: other},
		{name: "marker outside the request parameters", value: quarantine(t, "QuarantineV2", "ReadOnlyAccess", `"userAgent":"AWS Internal"`, `"userAgent":"AWSCompromisedKeyQuarantine-scanner"`)},
		{name: "marker in responseElements only", value: quarantine(t, "QuarantineV2", "ReadOnlyAccess", `"responseElements":null`, `"responseElements":{"note":"AWSCompromisedKeyQuarantine"}`)},
		{name: "case matters", value: quarantine(t, "AWSCompromisedKeyQuarantineV2", "awscompromisedkeyquarantinev2")},
		{name: "event name case matters", value: quarantine(t, `"eventName":"AttachUserPolicy"`, `"eventName":"attachuserpolicy"`)},
		{name: "key case matters: no eventName key is no record", value: quarantine(t, `"eventName":`, `"EventName":`), err: ErrUnknownShape},

		// Escapes: match on decoded values.
		{name: "escaped event name", value: quarantine(t, `"AttachUserPolicy"`, `"\u0041ttachUserPolicy"`), want: one(0)},
		{name: "escaped marker", value: quarantine(t, "CompromisedKeyQuarantine", `CompromisedKey\u0051uarantine`), want: one(0)},
		{name: "escaped marker in the Agent message", value: agentEvent(quarantine(t, "CompromisedKeyQuarantine", `CompromisedKey\u0051uarantine`)), want: one(0)},
		{name: "Agent message, the inner escape's backslash escaped", value: bytes.Replace(agentEvent(quarantine(t, "CompromisedKeyQuarantine", `CompromisedKey\u0051uarantine`)), []byte(`\\u0051`), []byte(`\u005cu0051`), 1), want: one(0)},
		{name: "Agent message, the inner escape's digit escaped", value: bytes.Replace(agentEvent(quarantine(t, "CompromisedKeyQuarantine", `CompromisedKey\u0051uarantine`)), []byte(`\\u0051`), []byte(`\\u\u0030051`), 1), want: one(0)},
		{name: "harmless escapes do not hide a match", value: quarantine(t, `"userAgent":"AWS Internal"`, `"userAgent":"AWS\u0026Internal\u003d"`), want: one(0)},
		{name: "escaped key", value: quarantine(t, `"requestParameters"`, `"request\u0050arameters"`), want: one(0)},
		{name: "marker in a request parameter key", value: quarantine(t, `"userName":"test-user"`, `"AWSCompromisedKeyQuarantine":"x"`), want: one(0)},
		{name: "marker deep inside the request parameters", value: quarantine(t, `"userName":"test-user"`, `"userName":"test-user","x":[1,{"y":["AWSCompromisedKeyQuarantine"]}]`), want: one(0)},

		// Malformed input: an error, never a crash.
		{name: "truncated", value: q[:len(q)/2], err: ErrMalformedJSON},
		{name: "truncated with the marker", value: q[:len(q)-10], err: ErrMalformedJSON},
		{name: "empty", value: nil, err: ErrMalformedJSON},
		{name: "not JSON", value: []byte("hello AWSCompromisedKeyQuarantine"), err: ErrMalformedJSON},
		{name: "syntax error inside, with the marker", value: quarantine(t, `"readOnly":false`, `"readOnly":fals`), err: ErrMalformedJSON},
		{name: "syntax error inside, validated", value: bytes.Replace(other, []byte(`"readOnly":false`), []byte(`"readOnly":fals`), 1), validate: true, err: ErrMalformedJSON},
		{name: "invalid UTF-8 with the marker", value: quarantine(t, "test-user", "test-\xff\xfe-user"), err: ErrBadEncoding},
		{name: "NUL byte with the marker", value: quarantine(t, "test-user", "test-\x00-user"), err: ErrMalformedJSON},
		{name: "nested 100,000 deep", value: deep, err: ErrTooComplex},
		{name: "gzip magic, garbage body", value: []byte("\x1f\x8b\x08\x00garbage"), err: ErrBadCompression},
		{name: "base64 prefix, garbage", value: []byte("H4sI!!!!"), err: ErrBadCompression},
		{name: "awslogs prefix and suffix overlapping (found by fuzzing)", value: []byte(`{"awslogs":{"data":"}}`), validate: true, err: ErrMalformedJSON},
		{name: "awslogs with bad base64", value: []byte(`{"awslogs":{"data":"H4sI%%%%"}}`), err: ErrBadCompression},
		{name: "over the size limit", value: append(q, bytes.Repeat([]byte(" "), DefaultMaxValueBytes)...), err: ErrTooLarge},
		{name: "unknown shape with the marker", value: []byte(`{"note":"AWSCompromisedKeyQuarantine"}`), err: ErrUnknownShape},
		{name: "Records not an array", value: []byte(`{"Records":"AWSCompromisedKeyQuarantine"}`), err: ErrUnknownShape},
		{name: "one bad record in a batch keeps the good one", value: s3Object(q, []byte(`"AWSCompromisedKeyQuarantine"`)), want: one(0), err: ErrUnknownShape},
		{name: "one truncated log event keeps the good one", value: gz(cloudWatchPayload(q, q[:100])), want: one(0), err: ErrMalformedJSON},
		{name: "gzip bomb", value: gz(append(append([]byte(`{"x":"AWSCompromisedKeyQuarantine`), bytes.Repeat([]byte("a"), DefaultMaxDecodedBytes)...), `"}`...)), err: ErrTooLarge},
	}
	return cases
}

func findingsOf(res Result) []refFinding {
	var out []refFinding
	for _, f := range res.Findings {
		watch := ""
		if f.Watch != nil {
			watch = f.Watch.Account + "/" + strings.ToLower(f.Watch.UserName) + "/" + f.Watch.AlertID
		}
		out = append(out, refFinding{f.Rule.ID, f.Event.EventID, f.Index, watch})
	}
	return out
}

func TestMatch(t *testing.T) {
	fast := mustNew(t, Config{})
	strict := mustNew(t, Config{Validate: true})
	for _, c := range matchCases(t) {
		t.Run(c.name, func(t *testing.T) {
			m := fast
			if c.validate {
				m = strict
			}
			res := m.NewScanner().Match(c.value, nil)
			if got := findingsOf(res); !slices.Equal(got, c.want) {
				t.Errorf("findings = %v, want %v", got, c.want)
			}
			switch {
			case c.err == nil && res.Err != nil:
				t.Errorf("unexpected error: %v", res.Err)
			case c.err != nil && !errors.Is(res.Err, c.err):
				t.Errorf("error = %v, want %v", res.Err, c.err)
			}
			// The reference evaluator agrees on every case.
			ref, malformed := reference(c.value, m)
			if !slices.Equal(ref, c.want) {
				t.Errorf("reference findings = %v, want %v", ref, c.want)
			}
			if malformed != (c.err != nil) && !(c.err == nil && !c.validate) {
				t.Errorf("reference malformed = %v, want %v", malformed, c.err != nil)
			}
		})
	}
}

func mustNew(t testing.TB, cfg Config) *Matcher {
	t.Helper()
	m, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestFindingEvent(t *testing.T) {
	m := mustNew(t, Config{})
	res := m.NewScanner().Match(readSample(t, "02_"), nil)
	if len(res.Findings) != 1 {
		t.Fatalf("findings = %d, want 1", len(res.Findings))
	}
	f := res.Findings[0]
	want := Event{
		EventID: quarantineEventID, EventTime: "2023-11-21T23:23:52Z", EventName: "AttachUserPolicy",
		EventSource: "iam.amazonaws.com", AWSRegion: "us-east-1", RecipientAccountID: "123456789012",
		SourceIPAddress: "1.2.3.4", UserAgent: "AWS Internal",
		UserIdentity: Identity{Type: "AssumedRole", PrincipalID: "FAKE_PRINCIPAL:user.name",
			ARN: "arn:aws:sts::123456789012:assumed-role/a-role/user.name", AccountID: "123456789012", AccessKeyID: "FAKE_ACCESS_KEY"},
		Outcome: "success", TargetKind: TargetUser, TargetName: "test-user",
		PolicyARN: "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2",
	}
	got := f.Event
	got.RequestParameters, got.Original = nil, nil
	if !equalEvent(got, want) {
		t.Errorf("event = %+v\nwant    %+v", got, want)
	}
	if f.Shape != ShapeRecord || f.Rule != ElasticQuarantineRule {
		t.Errorf("shape %v rule %v", f.Shape, f.Rule.ID)
	}
	if !json.Valid(f.Event.Original) || !bytes.Contains(f.Event.Original, []byte(quarantineEventID)) {
		t.Errorf("original is not the record: %s", f.Event.Original)
	}

	ecs := m.NewScanner().Match(ecsDocument("AttachUserPolicy", "success", "aws.cloudtrail", "{userName=test-user, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"), nil)
	if len(ecs.Findings) != 1 {
		t.Fatalf("ECS findings = %d, want 1", len(ecs.Findings))
	}
	e := ecs.Findings[0].Event
	if e.PolicyARN != want.PolicyARN || e.TargetKind != TargetUser || e.TargetName != "test-user" || e.Outcome != "success" || e.RecipientAccountID != "123456789012" || e.UserIdentity.AccessKeyID != "FAKE_ACCESS_KEY" {
		t.Errorf("ECS event = %+v", e)
	}
}

func equalEvent(a, b Event) bool {
	return fmt.Sprintf("%+v", a) == fmt.Sprintf("%+v", b)
}

// A Finding must not alias the scanner's buffers, which the next value reuses.
func TestFindingOwnsItsBytes(t *testing.T) {
	m := mustNew(t, Config{})
	s := m.NewScanner()
	first := s.Match(gz(cloudWatchPayload(quarantine(t))), nil)
	before := string(first.Findings[0].Event.Original)
	s.Match(gz(cloudWatchPayload(bytes.Repeat([]byte("x"), 4096))), nil)
	if string(first.Findings[0].Event.Original) != before {
		t.Fatal("finding changed when the scanner was reused")
	}
}

// TestFindingTargetAndOutcome: a finding names the identity the call acted
// on by the request parameter that holds it, and carries the outcome the
// rules were evaluated on, in every kind of event the rules report.
func TestFindingTargetAndOutcome(t *testing.T) {
	m := mustNew(t, Config{Rules: AllRules})
	tests := []struct {
		name                  string
		value                 []byte
		outcome, kind, target string
	}{
		{"AttachUserPolicy", quarantine(t), "success", TargetUser, "test-user"},
		{"AttachUserPolicy denied", quarantine(t, `"eventName":"AttachUserPolicy",`, `"eventName":"AttachUserPolicy","errorCode":"AccessDenied",`), "failure", TargetUser, "test-user"},
		{"DetachRolePolicy", quarantine(t, "AttachUserPolicy", "DetachRolePolicy", `"userName":"test-user"`, `"roleName":"web-app"`), "success", TargetRole, "web-app"},
		{"AttachGroupPolicy", quarantine(t, "AttachUserPolicy", "AttachGroupPolicy", `"userName":"test-user"`, `"groupName":"devs"`), "success", TargetGroup, "devs"},
		// The event name says which parameter is the target.
		{"DetachGroupPolicy naming a user too", quarantine(t, "AttachUserPolicy", "DetachGroupPolicy", `"userName":"test-user"`, `"userName":"test-user","groupName":"devs"`), "success", TargetGroup, "devs"},
		{"ECS failure", ecsDocument("AttachUserPolicy", "failure", "aws.cloudtrail", "{userName=test-user, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"), "failure", TargetUser, "test-user"},
		{"ECS DetachRolePolicy", ecsDocument("DetachRolePolicy", "success", "aws.cloudtrail", "{roleName=web-app, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"), "success", TargetRole, "web-app"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := m.NewScanner().Match(tt.value, nil)
			if res.Err != nil || len(res.Findings) != 1 {
				t.Fatalf("err %v, %d findings, want 1", res.Err, len(res.Findings))
			}
			e := res.Findings[0].Event
			if e.Outcome != tt.outcome || e.TargetKind != tt.kind || e.TargetName != tt.target {
				t.Errorf("outcome %q, target %q %q; want %q, %q %q", e.Outcome, e.TargetKind, e.TargetName, tt.outcome, tt.kind, tt.target)
			}
		})
	}
}
