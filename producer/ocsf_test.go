package producer

import (
	"bytes"
	"encoding/json"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

const (
	legacySample = "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json"
	noIDSample   = "05_s3_object_Records_iam_addusertogroup_awsdocs.json"
	ecsSample08  = "08_ecs_normalised_attach_user_policy_elastic_integrations_expected.json"
	detectedMS   = 1767323045123 // detected in epoch milliseconds
)

// ocsfECSFinding is the finding on sample 08, the ECS form of 01, with
// the Event the matcher makes from an ECS document.
func ocsfECSFinding(t testing.TB) matcher.Finding {
	t.Helper()
	raw := readSample(t, ecsSample08)
	doc := decode(t, raw)
	s := func(path string) string { v, _ := lookup(doc, path); s, _ := v.(string); return s }
	return matcher.Finding{Rule: matcher.ElasticQuarantineRule, Shape: matcher.ShapeECS, Event: matcher.Event{
		EventID:            s("event.id"),
		EventTime:          s("@timestamp"),
		EventName:          s("event.action"),
		EventSource:        s("event.provider"),
		AWSRegion:          s("cloud.region"),
		RecipientAccountID: s("cloud.account.id"),
		SourceIPAddress:    s("source.address"),
		UserAgent:          s("user_agent.original"),
		UserIdentity: matcher.Identity{
			Type:        s("aws.cloudtrail.user_identity.type"),
			ARN:         s("aws.cloudtrail.user_identity.arn"),
			AccessKeyID: s("aws.cloudtrail.user_identity.access_key_id"),
			UserName:    s("user.name"),
			PrincipalID: s("user.id"),
		},
		RequestParameters: []byte(s("aws.cloudtrail.request_parameters")),
		Outcome:           s("event.outcome"),
		TargetKind:        matcher.TargetUser,
		TargetName:        s("user.target.name"),
		PolicyARN:         s("aws.cloudtrail.flattened.request_parameters.policyArn"),
		Original:          raw,
	}}
}

func TestOCSFDocument(t *testing.T) {
	src := Source{Topic: "cloudtrail", Partition: 3, Offset: 1234}
	with := func(f matcher.Finding, mutate func(*matcher.Finding)) matcher.Finding {
		mutate(&f)
		return f
	}
	v2 := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	noID := with(sampleFinding(t, noIDSample, matcher.ShapeS3Object), func(f *matcher.Finding) { f.Index = 0 })

	tests := []struct {
		name     string
		finding  matcher.Finding
		detected time.Time
		want     map[string]any
		absent   []string
		// exhaustive: every leaf of the document is in want or checked
		// below the table, so a new field needs a test.
		exhaustive bool
	}{
		{
			name:       "quarantine V2 attached by AWS",
			finding:    v2,
			exhaustive: true,
			want: map[string]any{
				"activity_id":                           1,
				"activity_name":                         "Create",
				"category_uid":                          2,
				"category_name":                         "Findings",
				"class_uid":                             2004,
				"class_name":                            "Detection Finding",
				"type_uid":                              200401,
				"type_name":                             "Detection Finding: Create",
				"severity_id":                           4,
				"severity":                              "High",
				"status_id":                             1,
				"status":                                "New",
				"time":                                  detectedMS,
				"message":                               "AWS attached AWSCompromisedKeyQuarantineV2 to IAM user test-user in account 123456789012 (AttachUserPolicy)",
				"risk_score":                            73,
				"metadata.version":                      "1.3.0",
				"metadata.product.name":                 "quarantine-watch",
				"metadata.product.vendor_name":          "quarantine-watch",
				"metadata.profiles":                     []string{"cloud"},
				"metadata.uid":                          "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd",
				"metadata.original_time":                "2023-11-21T23:23:52Z",
				"finding_info.uid":                      "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd",
				"finding_info.title":                    "AWSCompromisedKeyQuarantineV2 attached to IAM user test-user",
				"finding_info.desc":                     "AWS attached AWSCompromisedKeyQuarantineV2 to IAM user test-user in account 123456789012 (AttachUserPolicy)",
				"finding_info.analytic.version":         "2026/04/10",
				"finding_info.types":                    []string{"Credential Access", "Initial Access"},
				"finding_info.analytic.uid":             ruleID,
				"finding_info.analytic.name":            "AWS IAM CompromisedKeyQuarantine Policy Attached to User",
				"finding_info.analytic.type_id":         1,
				"finding_info.analytic.type":            "Rule",
				"finding_info.attacks.0.technique.uid":  "T1552",
				"finding_info.attacks.0.technique.name": "Unsecured Credentials",
				"finding_info.attacks.0.technique.src_url":     "https://attack.mitre.org/techniques/T1552/",
				"finding_info.attacks.0.tactic.uid":            "TA0006",
				"finding_info.attacks.0.tactic.name":           "Credential Access",
				"finding_info.attacks.0.tactic.src_url":        "https://attack.mitre.org/tactics/TA0006/",
				"finding_info.attacks.0.version":               "v14",
				"finding_info.attacks.1.sub_technique.uid":     "T1078.004",
				"finding_info.attacks.1.sub_technique.name":    "Cloud Accounts",
				"finding_info.attacks.1.sub_technique.src_url": "https://attack.mitre.org/techniques/T1078/004/",
				"finding_info.attacks.1.technique.uid":         "T1078",
				"finding_info.attacks.1.technique.name":        "Valid Accounts",
				"finding_info.attacks.1.technique.src_url":     "https://attack.mitre.org/techniques/T1078/",
				"finding_info.attacks.1.tactic.uid":            "TA0001",
				"finding_info.attacks.1.tactic.name":           "Initial Access",
				"finding_info.attacks.1.tactic.src_url":        "https://attack.mitre.org/tactics/TA0001/",
				"finding_info.attacks.1.version":               "v14",
				"finding_info.data_sources":                    []string{"AWS CloudTrail"},
				"finding_info.created_time":                    detectedMS,
				"finding_info.first_seen_time":                 1700609032000,
				"finding_info.last_seen_time":                  1700609032000,
				"finding_info.related_events.0.uid":            "e7bb4b23-66e1-4656-b607-f575fde3b790",
				"cloud.provider":                               "AWS",
				"cloud.account.uid":                            "123456789012",
				"cloud.account.type_id":                        10,
				"cloud.account.type":                           "AWS Account",
				"cloud.region":                                 "us-east-1",
				"evidences.0.actor.user.uid":                   "arn:aws:sts::123456789012:assumed-role/a-role/user.name",
				"evidences.0.actor.user.uid_alt":               "FAKE_PRINCIPAL:user.name",
				"evidences.0.actor.user.type":                  "AssumedRole",
				"evidences.0.actor.user.type_id":               99,
				"evidences.0.actor.user.credential_uid":        "FAKE_ACCESS_KEY",
				"evidences.0.actor.user.account.uid":           "123456789012",
				"evidences.0.actor.user.account.type_id":       10,
				"evidences.0.actor.user.account.type":          "AWS Account",
				"evidences.0.api.operation":                    "AttachUserPolicy",
				"evidences.0.api.service.name":                 "iam.amazonaws.com",
				"evidences.0.src_endpoint.ip":                  "1.2.3.4",
				"evidences.0.user.name":                        "test-user",
				"resources.0.type":                             "AWS::IAM::User",
				"resources.0.name":                             "test-user",
				"resources.1.type":                             "AWS::IAM::Policy",
				"resources.1.uid":                              "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2",
				"resources.1.name":                             "AWSCompromisedKeyQuarantineV2",
				"unmapped.cloudtrail.userAgent":                "AWS Internal",
				"unmapped.cloudtrail.requestParameters":        `{"userName":"test-user","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"}`,
				"unmapped.quarantine_watch.schema_version":     "1",
				"unmapped.quarantine_watch.input_shape":        "record",
				"unmapped.quarantine_watch.source.topic":       "cloudtrail",
				"unmapped.quarantine_watch.source.partition":   3,
				"unmapped.quarantine_watch.source.offset":      1234,
				"unmapped.quarantine_watch.source.index":       0,
				"remediation.references": []string{
					"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantine.html/",
					"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV2.html/",
				},
			},
			absent: []string{
				"evidences.0.actor.user.name", "evidences.0.api.response", "evidences.0.src_endpoint.svc_name",
				"resources.2", "attacks", "actor", "src_endpoint", "api", "http_request",
			},
		},
		{
			name:    "legacy inline quarantine policy",
			finding: sampleFinding(t, legacySample, matcher.ShapeRecord),
			want: map[string]any{
				"message":                               "AWS put inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE on IAM user compromised_user in account 123456789012 (PutUserPolicy)",
				"finding_info.first_seen_time":          1586499728000,
				"finding_info.related_events.0.uid":     "1c2a53d1-58cc-41b3-85b8-bd7565370e0d",
				"metadata.original_time":                "2020-04-10T06:22:08Z",
				"evidences.0.actor.user.name":           "compromised_user",
				"evidences.0.actor.user.uid":            "arn:aws:iam::123456789012:user/compromised_user",
				"evidences.0.actor.user.type":           "IAMUser",
				"evidences.0.actor.user.credential_uid": "XXXXXXXXXXXXXXXXXXXXX",
				"evidences.0.api.operation":             "PutUserPolicy",
				"evidences.0.src_endpoint.ip":           "72.21.217.97",
				"evidences.0.user.name":                 "compromised_user",
				"resources.0.type":                      "AWS::IAM::User",
				"resources.0.name":                      "compromised_user",
				"resources.1.type":                      "AWS::IAM::UserPolicy",
				"resources.1.name":                      "AWSExposedCredentialPolicy_DO_NOT_REMOVE",
				"unmapped.cloudtrail.userAgent":         "aws-internal/3 aws-sdk-java/1.11.706 Linux/4.9.184-0.1.ac.235.83.329.metal1.x86_64 OpenJDK_64-Bit_Server_VM/25.242-b08 java/1.8.0_242 vendor/Oracle_Corporation",
			},
			absent: []string{"resources.1.uid", "resources.2"},
		},
		{
			name:    "record without eventID",
			finding: noID,
			want: map[string]any{
				"finding_info.uid":                      EventAlertID(ruleID, &matcher.Event{Original: noID.Event.Original}),
				"metadata.uid":                          EventAlertID(ruleID, &matcher.Event{Original: noID.Event.Original}),
				"finding_info.first_seen_time":          1395781694000,
				"evidences.0.user.name":                 "Bob",
				"evidences.0.api.operation":             "AddUserToGroup",
				"evidences.0.src_endpoint.ip":           "127.0.0.1",
				"cloud.region":                          "us-east-2",
				"cloud.account.uid":                     "123456789012",
				"unmapped.quarantine_watch.input_shape": "s3_object",
				"unmapped.cloudtrail.requestParameters": `{"userName":"Bob","groupName":"admin"}`,
				"resources.0.name":                      "Bob",
			},
			absent: []string{"finding_info.related_events", "resources.1"},
		},
		{
			name:    "input already normalised by Elastic",
			finding: ocsfECSFinding(t),
			want: map[string]any{
				"finding_info.related_events.0.uid":     "48a0efc2-e7b5-48d0-a3d7-38c44cd15525",
				"finding_info.first_seen_time":          1730318519000,
				"metadata.original_time":                "2024-10-30T20:01:59.000Z",
				"cloud.account.uid":                     "000000000",
				"evidences.0.actor.user.name":           "ec2-instance-role",
				"evidences.0.actor.user.uid_alt":        "PRINCIPALID:i-06815aa7cf7d21f8f",
				"evidences.0.actor.user.credential_uid": "ACCESSKEY",
				"evidences.0.src_endpoint.ip":           "216.160.83.56",
				"evidences.0.user.name":                 "pwncloud-backdoor-user",
				"resources.1.uid":                       "arn:aws:iam::aws:policy/AdministratorAccess",
				"resources.1.name":                      "AdministratorAccess",
				"unmapped.quarantine_watch.input_shape": "ecs",
				"unmapped.cloudtrail.requestParameters": "{policyArn=arn:aws:iam::aws:policy/AdministratorAccess, userName=pwncloud-backdoor-user}",
				"message":                               "arn:aws:sts::000000000:assumed-role/ec2-instance-role/i-06815aa7cf7d21f8f attached AdministratorAccess to IAM user pwncloud-backdoor-user in account 000000000 (AttachUserPolicy)",
			},
			// The ECS form carries no caller account id.
			absent: []string{"evidences.0.actor.user.account"},
		},
		{
			name:    "AWS service caller and a service name in sourceIPAddress",
			finding: sampleFinding(t, "04_assume_role_awsservice_elastic_integrations.json", matcher.ShapeRecord),
			want: map[string]any{
				"evidences.0.src_endpoint.svc_name": "ec2.amazonaws.com",
				"evidences.0.api.operation":         "AssumeRole",
				"evidences.0.api.service.name":      "sts.amazonaws.com",
				"cloud.account.uid":                 "111111111111",
				"unmapped.cloudtrail.userAgent":     "ec2.amazonaws.com",
			},
			// OCSF needs a uid, name or account for a user; AWSService has none.
			absent: []string{"evidences.0.actor", "evidences.0.src_endpoint.ip", "evidences.0.user", "resources"},
		},
		{
			name: "failed call in an S3 log file",
			finding: with(sampleFinding(t, "06_s3_object_Records_error_updatetrail_awsdocs.json", matcher.ShapeS3Object),
				func(f *matcher.Finding) { f.Index = 2 }),
			want: map[string]any{
				"evidences.0.api.response.error":         "TrailNotFoundException",
				"evidences.0.api.response.error_message": "Unknown trail: myTrail2 for the user: 123456789012",
				"message":                                "arn:aws:iam::123456789012:user/Alice failed to call UpdateTrail in account 123456789012 (UpdateTrail: TrailNotFoundException)",
				"unmapped.quarantine_watch.source.index": 2,
			},
			absent: []string{"resources", "evidences.0.user"},
		},
		{
			name:    "EventBridge envelope, root caller",
			finding: sampleFinding(t, "07_eventbridge_envelope_root_createbucket_awsdocs.json", matcher.ShapeEventBridge),
			want: map[string]any{
				"evidences.0.actor.user.type":           "Root",
				"evidences.0.actor.user.uid":            "arn:aws:iam::123456789012:root",
				"cloud.account.uid":                     "123456789012",
				"unmapped.quarantine_watch.input_shape": "eventbridge",
			},
			absent: []string{"evidences.0.actor.user.credential_uid"},
		},
		{
			name:     "unparseable eventTime has no first or last seen time",
			finding:  with(v2, func(f *matcher.Finding) { f.Event.EventTime = "yesterday" }),
			detected: detected.In(time.FixedZone("CEST", 2*60*60)),
			want:     map[string]any{"time": detectedMS, "finding_info.created_time": detectedMS, "metadata.original_time": "yesterday"},
			absent:   []string{"finding_info.first_seen_time", "finding_info.last_seen_time"},
		},
		{
			name:    "no eventTime at all",
			finding: with(v2, func(f *matcher.Finding) { f.Event.EventTime = "" }),
			absent:  []string{"metadata.original_time", "finding_info.first_seen_time"},
		},
		{
			name:    "eventTime with offset and fraction",
			finding: with(v2, func(f *matcher.Finding) { f.Event.EventTime = "2023-11-22T01:23:52.5+02:00" }),
			want:    map[string]any{"finding_info.first_seen_time": 1700609032500, "metadata.original_time": "2023-11-22T01:23:52.5+02:00"},
		},
		{
			name:    "IPv6 source",
			finding: with(v2, func(f *matcher.Finding) { f.Event.SourceIPAddress = "2001:db8::1" }),
			want:    map[string]any{"evidences.0.src_endpoint.ip": "2001:db8::1"},
		},
		{
			name:    "IPv6 with zone is not an ip",
			finding: with(v2, func(f *matcher.Finding) { f.Event.SourceIPAddress = "fe80::1%eth0" }),
			want:    map[string]any{"evidences.0.src_endpoint.svc_name": "fe80::1%eth0"},
			absent:  []string{"evidences.0.src_endpoint.ip"},
		},
		{
			name: "invalid UTF-8 in the original",
			finding: with(v2, func(f *matcher.Finding) {
				f.Event.Original = []byte("{\"eventName\":\"A\xffB\"}")
			}),
			want: map[string]any{"raw_data": "{\"eventName\":\"A\uFFFDB\"}"},
		},
		{
			name: "medium severity",
			finding: with(v2, func(f *matcher.Finding) {
				r := *f.Rule
				r.Severity, r.RiskScore = "medium", 50
				f.Rule = &r
			}),
			want: map[string]any{"severity_id": 3, "severity": "Medium", "risk_score": 50},
		},
		{
			name: "critical severity",
			finding: with(v2, func(f *matcher.Finding) {
				r := *f.Rule
				r.Severity = "critical"
				f.Rule = &r
			}),
			want: map[string]any{"severity_id": 5, "severity": "Critical"},
		},
		{
			name: "unknown severity band is Other, labelled by the rule",
			finding: with(v2, func(f *matcher.Finding) {
				r := *f.Rule
				r.Severity = "urgent"
				f.Rule = &r
			}),
			want: map[string]any{"severity_id": 99, "severity": "urgent"},
		},
		{
			name: "rule without severity, references, ATT&CK mapping or notes",
			finding: with(v2, func(f *matcher.Finding) {
				f.Rule = &matcher.Rule{ID: "r2", Name: "Other rule", Severity: "low", RiskScore: 21}
			}),
			want: map[string]any{"severity_id": 2, "severity": "Low", "finding_info.analytic.uid": "r2", "finding_info.analytic.name": "Other rule", "finding_info.title": "AWSCompromisedKeyQuarantineV2 attached to IAM user test-user"},
			absent: []string{
				"finding_info.attacks", "finding_info.types", "finding_info.analytic.desc", "finding_info.analytic.version", "remediation",
			},
		},
		{
			name: "rule without a severity at all",
			finding: with(v2, func(f *matcher.Finding) {
				f.Rule = &matcher.Rule{ID: "r3", Name: "Bare rule", Threats: []matcher.ThreatMapping{{Tactic: matcher.Threat{ID: "TA0006"}}}}
			}),
			want:   map[string]any{"severity_id": 0, "severity": "Unknown", "risk_score": 0, "finding_info.attacks.0.tactic.uid": "TA0006"},
			absent: []string{"finding_info.attacks.0.technique", "finding_info.attacks.0.tactic.name", "finding_info.types"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			when := detected
			if !tt.detected.IsZero() {
				when = tt.detected
			}
			b, err := OCSF{}.Encode(tt.finding, src, when)
			if err != nil {
				t.Fatal(err)
			}
			validateOCSF(t, b)
			doc := decode(t, b)
			for path, want := range tt.want {
				got, ok := ocsfLookup(doc, path)
				if !ok {
					t.Errorf("%s missing", path)
					continue
				}
				if g, w := jsonText(t, got), jsonText(t, want); g != w {
					t.Errorf("%s = %s, want %s", path, g, w)
				}
			}
			for _, path := range tt.absent {
				if got, ok := ocsfLookup(doc, path); ok {
					t.Errorf("%s = %v, want absent", path, got)
				}
			}

			// Fields every document carries, whatever the case.
			e, r := tt.finding.Event, tt.finding.Rule
			id := EventAlertID(r.ID, &e)
			for _, path := range []string{"finding_info.uid", "metadata.uid"} {
				if got, _ := ocsfLookup(doc, path); got != id {
					t.Errorf("%s = %v, want EventAlertID %s", path, got, id)
				}
			}
			if _, ok := tt.want["raw_data"]; !ok {
				if got, _ := ocsfLookup(doc, "raw_data"); got != string(e.Original) {
					t.Errorf("raw_data is not Original verbatim:\n%v\n%s", got, e.Original)
				}
			}
			if got, _ := ocsfLookup(doc, "finding_info.analytic.desc"); r.Description != "" && got != r.Description {
				t.Errorf("finding_info.analytic.desc = %v", got)
			}
			if got, _ := ocsfLookup(doc, "remediation.desc"); r.Notes != "" && got != r.Notes {
				t.Errorf("remediation.desc = %v", got)
			}
			first, _ := ocsfLookup(doc, "finding_info.first_seen_time")
			last, _ := ocsfLookup(doc, "finding_info.last_seen_time")
			if first != last {
				t.Errorf("first_seen_time %v differs from last_seen_time %v for one event", first, last)
			}
			if got, _ := ocsfLookup(doc, "metadata.product.version"); got != nil && got != ocsfProductVersion() {
				t.Errorf("metadata.product.version = %v, want the build's %q", got, ocsfProductVersion())
			}
			if msg, _ := ocsfLookup(doc, "message"); strings.ContainsAny(msg.(string), "\n\r\u2028\u2029") {
				t.Errorf("message is not one line: %q", msg)
			}

			if tt.exhaustive {
				checked := []string{"raw_data", "finding_info.analytic.desc", "remediation.desc", "metadata.product.version"}
				for _, path := range ocsfLeaves(doc) {
					if _, ok := tt.want[path]; !ok && !slices.Contains(checked, path) {
						t.Errorf("field %s is not checked by this test", path)
					}
				}
			}
		})
	}
}

// TestOCSFAlertIDIsECSAlertID: a SIEM that takes both formats, or moves
// from one to the other, deduplicates on the same id, the record key.
func TestOCSFAlertIDIsECSAlertID(t *testing.T) {
	tests := []struct {
		name    string
		finding matcher.Finding
	}{
		{"quarantine V2", sampleFinding(t, quarantineV2, matcher.ShapeRecord)},
		{"legacy inline policy", sampleFinding(t, legacySample, matcher.ShapeRecord)},
		{"no eventID", sampleFinding(t, noIDSample, matcher.ShapeS3Object)},
		{"ECS input", ocsfECSFinding(t)},
	}
	seen := map[string]string{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			src := Source{Topic: "cloudtrail", Partition: 1, Offset: 7}
			ecs, err := ECS{}.Encode(tt.finding, src, detected)
			if err != nil {
				t.Fatal(err)
			}
			ocsf, err := OCSF{}.Encode(tt.finding, src, detected)
			if err != nil {
				t.Fatal(err)
			}
			ecsID, _ := lookup(decode(t, ecs), "quarantine_watch.alert_id")
			ocsfID, _ := ocsfLookup(decode(t, ocsf), "finding_info.uid")
			if ecsID == nil || ecsID != ocsfID {
				t.Errorf("OCSF finding_info.uid %v, ECS alert_id %v", ocsfID, ecsID)
			}
			if prev, dup := seen[ocsfID.(string)]; dup {
				t.Errorf("%s shares its id with %s", tt.name, prev)
			}
			seen[ocsfID.(string)] = tt.name
		})
	}
}

func TestOCSFRecord(t *testing.T) {
	src := Source{Topic: "cloudtrail", Partition: 7, Offset: 99}
	tests := []struct {
		name    string
		finding matcher.Finding
		wantKey string
	}{
		{"quarantine V2", sampleFinding(t, quarantineV2, matcher.ShapeRecord), "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd"},
		{"legacy inline policy", sampleFinding(t, legacySample, matcher.ShapeRecord), AlertID(ruleID, "1c2a53d1-58cc-41b3-85b8-bd7565370e0d")},
		{"no eventID", sampleFinding(t, noIDSample, matcher.ShapeS3Object),
			EventAlertID(ruleID, &matcher.Event{Original: sampleEvent(t, noIDSample).Original})},
		{"ECS input", ocsfECSFinding(t), AlertID(ruleID, "48a0efc2-e7b5-48d0-a3d7-38c44cd15525")},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r, err := EncodeRecord(OCSF{}, tt.finding, src, detected, "alerts-ocsf")
			if err != nil {
				t.Fatal(err)
			}
			validateOCSF(t, r.Value)
			if r.Topic != "alerts-ocsf" {
				t.Errorf("topic = %q", r.Topic)
			}
			if string(r.Key) != tt.wantKey {
				t.Errorf("key = %s, want %s", r.Key, tt.wantKey)
			}
			if !r.Timestamp.Equal(detected) {
				t.Errorf("timestamp = %v, want the detection time %v", r.Timestamp, detected)
			}
			want := []kgo.RecordHeader{
				{Key: "content-type", Value: []byte("application/json")},
				{Key: "rule-id", Value: []byte(ruleID)},
				{Key: "schema-version", Value: []byte("1")},
				{Key: "alert-format", Value: []byte("ocsf")},
			}
			if !reflect.DeepEqual(r.Headers, want) {
				t.Errorf("headers = %s, want %s", headerText(r.Headers), headerText(want))
			}
			var doc struct {
				FindingInfo struct {
					UID string `json:"uid"`
				} `json:"finding_info"`
				Unmapped struct {
					QW struct {
						Source struct {
							Topic     string `json:"topic"`
							Partition int32  `json:"partition"`
							Offset    int64  `json:"offset"`
						} `json:"source"`
					} `json:"quarantine_watch"`
				} `json:"unmapped"`
			}
			if err := json.Unmarshal(r.Value, &doc); err != nil {
				t.Fatal(err)
			}
			if doc.FindingInfo.UID != string(r.Key) {
				t.Errorf("finding_info.uid %s differs from key %s", doc.FindingInfo.UID, r.Key)
			}
			s := doc.Unmapped.QW.Source
			if got := (Source{s.Topic, s.Partition, s.Offset}); got != src {
				t.Errorf("document source = %+v, want %+v", got, src)
			}
		})
	}
}

func TestOCSFEncoder(t *testing.T) {
	var enc Encoder = OCSF{}
	if enc.Format() != "ocsf" || enc.SchemaVersion() != "1" {
		t.Errorf("Format, SchemaVersion = %q, %q", enc.Format(), enc.SchemaVersion())
	}
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	if _, err := NewOCSFDetectionFinding(matcher.Finding{Event: f.Event}, Source{}, detected); err != ErrNoRule {
		t.Errorf("no rule: err = %v, want ErrNoRule", err)
	}
	if _, err := (OCSF{}).Encode(f, Source{}, time.Time{}); err != ErrNoDetectionTime {
		t.Errorf("zero time: err = %v, want ErrNoDetectionTime", err)
	}
}

// TestOCSFEncodeAgree checks that Encode is NewOCSFDetectionFinding
// marshalled, deterministic, and leaves HTML characters alone.
func TestOCSFEncodeAgree(t *testing.T) {
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	d, err := NewOCSFDetectionFinding(f, Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		t.Fatal(err)
	}
	want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	got, err := OCSF{}.Encode(f, Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	validateOCSF(t, got)
	if string(got) != string(want) {
		t.Errorf("Encode differs from NewOCSFDetectionFinding:\n%s\n%s", got, want)
	}
	again, _ := OCSF{}.Encode(f, Source{Topic: "t"}, detected)
	if string(again) != string(got) {
		t.Error("Encode is not deterministic")
	}
	f.Rule = &matcher.Rule{ID: "r", Name: "A & B <x>", Severity: "high"}
	got, err = OCSF{}.Encode(f, Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(got, []byte(`"A & B <x>"`)) {
		t.Errorf("HTML characters are escaped: %s", got)
	}
}

// TestOCSFSchemaRejectsTypos shows the schema bites: each mutation of a
// valid document, a misspelt, mistyped or inconsistent field, must fail.
func TestOCSFSchemaRejectsTypos(t *testing.T) {
	b, err := OCSF{}.Encode(sampleFinding(t, quarantineV2, matcher.ShapeRecord), Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	validateOCSF(t, b) // the control: unmutated, it passes

	obj := func(d map[string]any, path string) map[string]any {
		v, ok := ocsfLookup(d, path)
		if !ok {
			t.Fatalf("%s missing from the control document", path)
		}
		return v.(map[string]any)
	}
	tests := []struct {
		name   string
		mutate func(d map[string]any)
	}{
		{"top-level typo", func(d map[string]any) { d["mesage"] = d["message"] }},
		{"class_uid misspelt", func(d map[string]any) { d["class_id"] = d["class_uid"]; delete(d, "class_uid") }},
		{"finding_info.uid misspelt", func(d map[string]any) {
			fi := obj(d, "finding_info")
			fi["uuid"] = fi["uid"]
			delete(fi, "uid")
		}},
		{"analytic type_id misspelt", func(d map[string]any) { obj(d, "finding_info.analytic")["typeid"] = 1 }},
		{"credential_uid misspelt", func(d map[string]any) { obj(d, "evidences.0.actor.user")["credentials_uid"] = "k" }},
		{"src_endpoint with both ip and svc_name", func(d map[string]any) { obj(d, "evidences.0.src_endpoint")["svc_name"] = "x" }},
		{"src_endpoint.ip not an IP", func(d map[string]any) { obj(d, "evidences.0.src_endpoint")["ip"] = "ec2.amazonaws.com" }},
		{"user without uid, name or account", func(d map[string]any) {
			obj(d, "evidences.0")["actor"] = map[string]any{"user": map[string]any{"credential_uid": "k"}}
		}},
		{"user type without type_id", func(d map[string]any) { delete(obj(d, "evidences.0.actor.user"), "type_id") }},
		{"time in RFC 3339, not epoch ms", func(d map[string]any) { d["time"] = detectedText }},
		{"severity label disagrees with severity_id", func(d map[string]any) { d["severity"] = "Low" }},
		{"type_uid not class*100+activity", func(d map[string]any) { d["type_uid"] = 2004 }},
		{"unknown OCSF version", func(d map[string]any) { obj(d, "metadata")["version"] = "1.3" }},
		{"alert id not a hash", func(d map[string]any) { obj(d, "finding_info")["uid"] = "abc" }},
		{"technique in the tactic slot", func(d map[string]any) { obj(d, "finding_info.attacks.0.tactic")["uid"] = "T1552" }},
		{"attack without technique or tactic", func(d map[string]any) {
			obj(d, "finding_info")["attacks"] = []any{map[string]any{"version": "v14"}}
		}},
		{"resource type outside the set", func(d map[string]any) { obj(d, "resources.0")["type"] = "AWS::IAM::AccessKey" }},
		{"unmapped source offset misspelt", func(d map[string]any) { obj(d, "unmapped.quarantine_watch.source")["ofset"] = 1 }},
		{"missing finding_info", func(d map[string]any) { delete(d, "finding_info") }},
		{"unknown unmapped group", func(d map[string]any) { obj(d, "unmapped")["cloudtrial"] = map[string]any{"x": "y"} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := decode(t, b)
			tt.mutate(doc)
			if err := validateOCSFErr([]byte(jsonText(t, doc))); err == nil {
				t.Error("mutated document validates")
			}
		})
	}
}

// TestOCSFSchemaIsOurs: the embedded schema is the one the $id names and
// OCSFSchema hands out a copy.
func TestOCSFSchemaIsOurs(t *testing.T) {
	var s struct {
		ID     string `json:"$id"`
		Schema string `json:"$schema"`
	}
	if err := json.Unmarshal(OCSFSchema(), &s); err != nil {
		t.Fatal(err)
	}
	if s.ID != OCSFSchemaID || s.Schema != "https://json-schema.org/draft/2020-12/schema" {
		t.Errorf("$id %q, $schema %q", s.ID, s.Schema)
	}
	c := OCSFSchema()
	c[0] = 'x'
	if OCSFSchema()[0] == 'x' {
		t.Error("OCSFSchema returns the embedded bytes, not a copy")
	}
}

// FuzzOCSF feeds arbitrary event text to the encoder: whatever the input
// topic holds, the document is valid JSON that the schema accepts.
func FuzzOCSF(f *testing.F) {
	for _, name := range []string{quarantineV2, "04_assume_role_awsservice_elastic_integrations.json", legacySample} {
		e := sampleEvent(f, name)
		f.Add(e.EventTime, e.SourceIPAddress, e.TargetName, e.UserAgent, e.PolicyARN, e.ErrorCode, e.UserIdentity.ARN, e.RequestParameters, e.Original)
	}
	f.Add("0000-01-01T00:00:00+01:00", "::ffff:1.2.3.4", "\xff", "", "/", "", "", []byte("null"), []byte{0, 0xff})
	f.Fuzz(func(t *testing.T, eventTime, ip, user, ua, policy, errCode, arn string, params, original []byte) {
		e := sampleEvent(t, quarantineV2)
		e.EventTime, e.SourceIPAddress, e.TargetName, e.UserAgent, e.PolicyARN, e.ErrorCode = eventTime, ip, user, ua, policy, errCode
		e.UserIdentity.ARN, e.RequestParameters, e.Original = arn, params, original
		b, err := OCSF{}.Encode(matcher.Finding{Rule: matcher.ElasticQuarantineRule, Event: e}, Source{Topic: "t"}, detected)
		if err != nil {
			t.Fatal(err)
		}
		validateOCSF(t, b)
	})
}

var (
	ocsfSchemaOnce     sync.Once
	ocsfCompiledSchema *jsonschema.Schema
	ocsfSchemaErr      error
)

// validateOCSF fails t unless doc is valid against the embedded OCSF
// schema, with formats (ipv4, ipv6, uri) asserted.
func validateOCSF(t testing.TB, doc []byte) {
	t.Helper()
	if err := validateOCSFErr(doc); err != nil {
		t.Fatalf("document does not validate: %v\n%s", err, doc)
	}
}

func validateOCSFErr(doc []byte) error {
	ocsfSchemaOnce.Do(func() {
		s, err := jsonschema.UnmarshalJSON(bytes.NewReader(OCSFSchema()))
		if err != nil {
			ocsfSchemaErr = err
			return
		}
		c := jsonschema.NewCompiler()
		c.AssertFormat()
		if ocsfSchemaErr = c.AddResource(OCSFSchemaID, s); ocsfSchemaErr != nil {
			return
		}
		ocsfCompiledSchema, ocsfSchemaErr = c.Compile(OCSFSchemaID)
	})
	if ocsfSchemaErr != nil {
		return ocsfSchemaErr
	}
	inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(doc))
	if err != nil {
		return err
	}
	return ocsfCompiledSchema.Validate(inst)
}

// ocsfLookup is lookup that also steps into arrays: "evidences.0.api".
func ocsfLookup(m map[string]any, path string) (any, bool) {
	var v any = m
	for _, k := range strings.Split(path, ".") {
		switch c := v.(type) {
		case map[string]any:
			var ok bool
			if v, ok = c[k]; !ok {
				return nil, false
			}
		case []any:
			i, err := strconv.Atoi(k)
			if err != nil || i < 0 || i >= len(c) {
				return nil, false
			}
			v = c[i]
		default:
			return nil, false
		}
	}
	return v, true
}

// ocsfLeaves returns the paths of every value in m that is neither an
// object nor an array of objects; arrays of scalars are one leaf.
func ocsfLeaves(m map[string]any) []string {
	var out []string
	var walk func(prefix string, v any)
	join := func(prefix, k string) string {
		if prefix == "" {
			return k
		}
		return prefix + "." + k
	}
	walk = func(prefix string, v any) {
		switch c := v.(type) {
		case map[string]any:
			for k, e := range c {
				walk(join(prefix, k), e)
			}
		case []any:
			if len(c) > 0 {
				if _, ok := c[0].(map[string]any); ok {
					for i, e := range c {
						walk(join(prefix, strconv.Itoa(i)), e)
					}
					return
				}
			}
			out = append(out, prefix)
		default:
			out = append(out, prefix)
		}
	}
	walk("", m)
	sort.Strings(out)
	return out
}
