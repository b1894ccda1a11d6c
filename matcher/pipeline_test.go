package matcher

import (
	"bytes"
	"slices"
	"strings"
	"testing"
)

// TestElasticPipeline: the matcher reads a record as Elastic's CloudTrail
// pipeline leaves it (null and empty values dropped recursively before
// event.outcome is set and requestParameters flattened; the last of
// duplicate keys wins, at every depth), and reads an ECS document's fields
// however they are spelled (nested, dotted, mixed), as Elasticsearch does.
// Every rule is enabled; each case says, by hand, which rule must report.
// The cases that failed on the code this started from are marked "was:".
func TestElasticPipeline(t *testing.T) {
	const policyV2 = `"policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"`
	const readOnly = `"policyArn":"arn:aws:iam::aws:policy/ReadOnlyAccess"`
	params := func(p string) []byte {
		return quarantine(t, `{"userName":"test-user",`+policyV2+`}`, p)
	}
	errorCode := func(v string) []byte {
		return quarantine(t, `"eventName":"AttachUserPolicy"`, `"eventName":"AttachUserPolicy","errorCode":`+v)
	}
	const rp = `"{userName=test-user, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"`
	const ecsID = `"event.id":"` + quarantineEventID + `"`
	elastic := one(0)
	failed := []refFinding{{QuarantineAttachFailedRule.ID, quarantineEventID, 0, ""}}
	for _, c := range []struct {
		name  string
		value []byte
		want  []refFinding
	}{
		// An errorCode or errorMessage that pruning removes is absent.
		{"errorCode {} is absent (was: failure)", errorCode(`{}`), elastic},
		{"errorCode [] is absent (was: failure)", errorCode(`[]`), elastic},
		{"errorCode of nulls and empties is absent (was: failure)", errorCode(`{"a":null,"b":"","c":[null,{},[""]]}`), elastic},
		{"errorMessage [\"\"] is absent (was: failure)", quarantine(t, `"eventName":"AttachUserPolicy"`, `"eventName":"AttachUserPolicy","errorMessage":[""]`), elastic},
		{"errorCode null is absent", errorCode(`null`), elastic},
		{"errorCode 0 is present", errorCode(`0`), failed},
		{"errorCode false is present", errorCode(`false`), failed},
		{"errorCode {\"a\":0} is present", errorCode(`{"a":0}`), failed},
		{"errorCode given twice, the last null", quarantine(t, `"eventName":"AttachUserPolicy"`, `"errorCode":"AccessDenied","eventName":"AttachUserPolicy","errorCode":null`), elastic},
		{"errorCode given twice, the last AccessDenied", quarantine(t, `"eventName":"AttachUserPolicy"`, `"errorCode":null,"eventName":"AttachUserPolicy","errorCode":"AccessDenied"`), failed},

		// A key whose value pruning removes is gone, marker and all.
		{"marker key with null (was: match)", params(`{"userName":"test-user",` + readOnly + `,"AWSCompromisedKeyQuarantine":null}`), nil},
		{"marker key with \"\" (was: match)", params(`{"userName":"test-user",` + readOnly + `,"AWSCompromisedKeyQuarantine":""}`), nil},
		{"marker key with {} (was: match)", params(`{"userName":"test-user",` + readOnly + `,"AWSCompromisedKeyQuarantine":{}}`), nil},
		{"marker key with [] (was: match)", params(`{"userName":"test-user",` + readOnly + `,"AWSCompromisedKeyQuarantine":[]}`), nil},
		{"marker key with nothing left inside (was: match)", params(`{"userName":"test-user",` + readOnly + `,"AWSCompromisedKeyQuarantine":{"a":[null,""],"b":{}}}`), nil},
		{"marker key deep, with null (was: match)", params(`{"userName":"test-user","x":{"AWSCompromisedKeyQuarantine":null,"y":"z"}}`), nil},
		{"marker key with 0", params(`{"userName":"test-user","AWSCompromisedKeyQuarantine":0}`), elastic},
		{"marker key with false", params(`{"userName":"test-user","AWSCompromisedKeyQuarantine":false}`), elastic},
		{"marker key with something left inside", params(`{"userName":"test-user","AWSCompromisedKeyQuarantine":{"a":[null,1]}}`), elastic},
		{"marker in an array", params(`{"userName":"test-user","x":[null,"",["arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"]]}`), elastic},
		{"requestParameters a string with the marker", params(`"AWSCompromisedKeyQuarantineV2"`), elastic},
		{"requestParameters nothing but empties", params(`{"a":null,"b":{"c":""}}`), nil},

		// The last of duplicate keys wins, at every depth.
		{"policyArn twice, the last another policy (was: match)", params(`{"userName":"test-user",` + policyV2 + `,` + readOnly + `}`), nil},
		{"policyArn twice, the last the quarantine", params(`{"userName":"test-user",` + readOnly + `,` + policyV2 + `}`), elastic},
		{"policyArn twice, the last null (was: match)", params(`{"userName":"test-user",` + policyV2 + `,"policyArn":null}`), nil},
		{"policyArn twice, spelled with an escape (was: match)", params(`{"userName":"test-user",` + policyV2 + `,"policy\u0041rn":"x"}`), nil},
		{"duplicate deep inside (was: match)", params(`{"userName":"test-user","x":{"y":[{"a":"AWSCompromisedKeyQuarantine","b":1,"a":"no"}]}}`), nil},
		{"marker key twice, the last null (was: match)", params(`{"userName":"test-user","AWSCompromisedKeyQuarantine":"x","AWSCompromisedKeyQuarantine":null}`), nil},
		{"an object of 20 keys, the marker overwritten (was: match)", params(`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,` + policyV2 + `,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,` + readOnly + `,"k18":18}`), nil},
		{"an object of 20 keys, the marker last", params(`{"k1":1,"k2":2,"k3":3,"k4":4,"k5":5,"k6":6,"k7":7,"k8":8,"k9":9,"k10":10,` + readOnly + `,"k11":11,"k12":12,"k13":13,"k14":14,"k15":15,"k16":16,"k17":17,` + policyV2 + `,"k18":18}`), elastic},
		{"requestParameters twice, the last another policy", quarantine(t, `"responseElements":null`, `"responseElements":null,"requestParameters":{`+readOnly+`}`), nil},

		// ECS fields nested, dotted or mixed.
		{"ECS dotted (was: unknown shape)", []byte(`{"@timestamp":"2023-11-21T23:23:52.000Z","event.action":"AttachUserPolicy","event.outcome":"success","event.dataset":"aws.cloudtrail",` + ecsID + `,"aws.cloudtrail.request_parameters":` + rp + `}`), elastic},
		{"ECS mixed (was: no finding)", []byte(`{"event":{"action":"AttachUserPolicy","outcome":"success","id":"` + quarantineEventID + `"},"data_stream.dataset":"aws.cloudtrail","aws":{"cloudtrail.request_parameters":` + rp + `}}`), elastic},
		{"ECS mixed the other way (was: no finding)", []byte(`{"event.action":"AttachUserPolicy","event":{"outcome":"success","dataset":"aws.cloudtrail"},` + ecsID + `,"aws.cloudtrail":{"request_parameters":` + rp + `}}`), elastic},
		{"ECS dotted, outcome failure (was: unknown shape)", []byte(`{"event.action":"AttachUserPolicy","event.outcome":"failure","event.dataset":"aws.cloudtrail",` + ecsID + `,"aws.cloudtrail.request_parameters":` + rp + `}`), failed},
		{"ECS dotted, another dataset (was: unknown shape)", []byte(`{"event.action":"AttachUserPolicy","event.outcome":"success","event.dataset":"aws.guardduty",` + ecsID + `,"aws.cloudtrail.request_parameters":` + rp + `}`), nil},
		{"ECS dotted, with a message (was: no finding)", []byte(`{"message":"{}","event.action":"AttachUserPolicy","event.outcome":"success","event.dataset":"aws.cloudtrail",` + ecsID + `,"aws.cloudtrail.request_parameters":` + rp + `}`), elastic},
		{"ECS outcome twice alike, the last failure", []byte(`{"event":{"action":"AttachUserPolicy","outcome":"success","outcome":"failure","dataset":"aws.cloudtrail","id":"` + quarantineEventID + `"},"aws":{"cloudtrail":{"request_parameters":` + rp + `}}}`), failed},
		{"ECS outcome spelled twice: a field with two values (was: failure only)", []byte(`{"event":{"action":"AttachUserPolicy","outcome":"failure","dataset":"aws.cloudtrail","id":"` + quarantineEventID + `"},"event.outcome":"success","aws":{"cloudtrail":{"request_parameters":` + rp + `}}}`), append(slices.Clone(elastic), failed...)},
		{"ECS fields in an array of objects (was: unknown shape)", []byte(`{"event":[{"action":"AttachUserPolicy"},{"outcome":"success","dataset":"aws.cloudtrail","id":"` + quarantineEventID + `"}],"aws.cloudtrail.request_parameters":[` + rp + `]}`), elastic},
	} {
		t.Run(c.name, func(t *testing.T) {
			all := mustNew(t, Config{Rules: AllRules})
			strict := mustNew(t, Config{Rules: AllRules, Validate: true})
			for _, m := range []*Matcher{all, strict} {
				res := m.NewScanner().Match(c.value, nil)
				if res.Err != nil {
					t.Errorf("error %v", res.Err)
				}
				if got := findingsOf(res); !slices.Equal(got, c.want) {
					t.Errorf("validate %v: findings %v, want %v", m.validate, got, c.want)
				}
			}
			if ref, malformed := reference(c.value, all); malformed || !slices.Equal(ref, c.want) {
				t.Errorf("reference: %v (malformed %v), want %v", ref, malformed, c.want)
			}
		})
	}
}

// TestOutcome: event.outcome of a record as Elastic's pipeline sets it,
// ConsoleLogin's from its response included, written out by hand.
func TestOutcome(t *testing.T) {
	rec := func(fields string) []byte {
		return []byte(`{"eventName":"ConsoleLogin","eventID":"x",` + fields + `}`)
	}
	// {ConsoleLogin=Success, x=aaa...} is 26 characters and the a's.
	xs := func(n int) string { return `"x":"` + string(bytes.Repeat([]byte("a"), n)) + `"` }
	for _, c := range []struct {
		name  string
		value []byte
		want  string
	}{
		{"no error", rec(`"responseElements":null`), "success"},
		{"errorMessage", rec(`"errorMessage":"Failed authentication","responseElements":null`), "failure"},
		{"ConsoleLogin Success", rec(`"responseElements":{"ConsoleLogin":"Success"}`), "success"},
		{"ConsoleLogin Failure without an error", rec(`"responseElements":{"ConsoleLogin":"Failure"}`), "failure"},
		{"ConsoleLogin Success beside an error", rec(`"errorMessage":"x","responseElements":{"ConsoleLogin":"Success"}`), "success"},
		{"ConsoleLogin escaped", rec(`"responseElements":{"ConsoleLogin":"F\u0041ILURE"}`), "failure"},
		{"ConsoleLogin another word", rec(`"responseElements":{"ConsoleLogin":"Pending"}`), "pending"},
		{"ConsoleLogin empty", rec(`"errorCode":"x","responseElements":{"ConsoleLogin":""}`), "failure"},
		{"ConsoleLogin not a string", rec(`"responseElements":{"ConsoleLogin":1}`), "success"},
		{"ConsoleLogin twice", rec(`"responseElements":{"ConsoleLogin":"Failure","ConsoleLogin":"Success"}`), "success"},
		{"response of 32766 characters flattened", rec(`"errorCode":"x","responseElements":{"ConsoleLogin":"Success",` + xs(32766-26) + `}`), "failure"},
		{"response of 32765 characters flattened", rec(`"errorCode":"x","responseElements":{"ConsoleLogin":"Success",` + xs(32765-26) + `}`), "success"},
		{"response of 32765 characters flattened, with nulls", rec(`"errorCode":"x","responseElements":{"ConsoleLogin":"Success","n":null,"e":{"f":""},` + xs(32765-26) + `}`), "success"},
		{"response of 32766 in UTF-16 units", rec(`"errorCode":"x","responseElements":{"ConsoleLogin":"Success","x":"😀` + string(bytes.Repeat([]byte("a"), 32766-26-2)) + `"}`), "failure"},
		{"another event keeps its outcome", []byte(`{"eventName":"GetUser","responseElements":{"ConsoleLogin":"Failure"}}`), "success"},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mustNew(t, Config{})
			s := m.NewScanner()
			f, err := s.validate(c.value, -1)
			if err != nil {
				t.Fatal(err)
			}
			name, _ := stringView(f.raw("eventName"), nil)
			if got := s.outcome(f, name); got != c.want {
				t.Errorf("outcome %q, want %q", got, c.want)
			}
			doc, _ := refParse(c.value, m.limits)
			if got := refOutcome(doc.(*refObj)); got != c.want {
				t.Errorf("reference outcome %q, want %q", got, c.want)
			}
		})
	}
}

// TestJavaNumbers: numbers as Elastic's flattened text has them, from
// Java 21's Double.toString and Jackson's integer types.
func TestJavaNumbers(t *testing.T) {
	for in, want := range map[string]string{
		"0": "0", "-0": "0", "12345678901234567890123": "12345678901234567890123", "1.0": "1.0", "100.5": "100.5",
		"1e2": "100.0", "0.5": "0.5", "-0.0": "-0.0", "0.001": "0.001", "0.0001": "1.0E-4", "1234567.0": "1234567.0",
		"1e7": "1.0E7", "12345678.9": "1.23456789E7", "4.9e-324": "4.9E-324", "1e400": "Infinity", "-1e400": "-Infinity",
		"1.7976931348623157e308": "1.7976931348623157E308", "2e23": "2.0E23", "0.1": "0.1", "9999999.0": "9999999.0",
		"1.5E-5": "1.5E-5",
	} {
		if got := javaNumber([]byte(in)); got != want {
			t.Errorf("javaNumber(%s) = %s, want %s", in, got, want)
		}
		if got := refJavaNumber(in); got != want {
			t.Errorf("refJavaNumber(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestECSPastTheCache: past the first 64 objects of an ECS document, which
// are indexed once, objects are read member by member; the fields are the
// same either way, duplicates included.
func TestECSPastTheCache(t *testing.T) {
	const rp = `"aws.cloudtrail.request_parameters":"{policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"`
	filler := strings.Repeat(`{"x":{"y":0}},`, 80)
	doc := func(last string) []byte {
		return []byte(`{"event.dataset":"aws.cloudtrail","event.id":"e",` + rp + `,"event":[` + filler + last + `]}`)
	}
	elastic := []refFinding{{ElasticQuarantineRule.ID, "e", 0, ""}}
	for _, c := range []struct {
		name  string
		value []byte
		want  []refFinding
	}{
		{"nested", doc(`{"action":"AttachUserPolicy","outcome":"success"}`), elastic},
		{"dotted inside", doc(`{"x.y":1,"action":"AttachUserPolicy"},{"outcome":"success"}`), elastic},
		{"the last duplicate wins", doc(`{"action":"DeleteUser","action":"AttachUserPolicy","outcome":"success"}`), elastic},
		{"the last duplicate loses", doc(`{"action":"AttachUserPolicy","action":"DeleteUser","outcome":"success"}`), nil},
		{"escaped key", doc(`{"\u0061ction":"AttachUserPolicy","outcome":"success"}`), elastic},
		{"outcome failure", doc(`{"action":"AttachUserPolicy","outcome":"failure"}`), nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			m := mustNew(t, Config{Validate: true})
			res := m.NewScanner().Match(c.value, nil)
			if res.Err != nil || !slices.Equal(findingsOf(res), c.want) {
				t.Errorf("findings %v (error %v), want %v", findingsOf(res), res.Err, c.want)
			}
			if ref, malformed := reference(c.value, m); malformed || !slices.Equal(ref, c.want) {
				t.Errorf("reference %v (malformed %v), want %v", ref, malformed, c.want)
			}
		})
	}
}
