package producer

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

const (
	quarantineV2 = "02_attach_user_policy_quarantine_v2_panther.json"
	ruleID       = "0b79f5c0-2c31-4fea-86cd-e62644278205"
)

func TestECSDocument(t *testing.T) {
	src := Source{Topic: "cloudtrail", Partition: 3, Offset: 1234}
	with := func(f matcher.Finding, mutate func(*matcher.Finding)) matcher.Finding {
		mutate(&f)
		return f
	}
	ecsSample := func() matcher.Finding {
		// 08 is the ECS form of 01; build the Event the matcher makes from it.
		raw := readSample(t, "08_ecs_normalised_attach_user_policy_elastic_integrations_expected.json")
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
	v2 := sampleFinding(t, quarantineV2, matcher.ShapeRecord)

	tests := []struct {
		name     string
		finding  matcher.Finding
		detected time.Time
		want     map[string]any
		absent   []string
		// exhaustive: every field of the document is in want or checked
		// below the table, so a new field needs a test.
		exhaustive bool
	}{
		{
			name:       "quarantine V2 attached by AWS",
			finding:    v2,
			exhaustive: true,
			want: map[string]any{
				"@timestamp":                         "2023-11-21T23:23:52Z",
				"message":                            "AWS attached AWSCompromisedKeyQuarantineV2 to IAM user test-user in account 123456789012 (AttachUserPolicy)",
				"ecs.version":                        "8.11.0",
				"event.kind":                         "alert",
				"event.module":                       "aws",
				"event.dataset":                      "aws.cloudtrail",
				"event.provider":                     "iam.amazonaws.com",
				"event.action":                       "AttachUserPolicy",
				"event.outcome":                      "success",
				"event.category":                     []string{"iam"},
				"event.type":                         []string{"user", "change"},
				"rule.version":                       "2026/04/10",
				"quarantine_watch.target.kind":       "user",
				"quarantine_watch.target.name":       "test-user",
				"event.id":                           "e7bb4b23-66e1-4656-b607-f575fde3b790",
				"event.created":                      detectedText,
				"event.severity":                     73,
				"event.risk_score":                   73,
				"rule.id":                            ruleID,
				"rule.name":                          "AWS IAM CompromisedKeyQuarantine Policy Attached to User",
				"rule.reference":                     "https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantine.html/",
				"rule.ruleset":                       "elastic",
				"threat.framework":                   "MITRE ATT&CK",
				"threat.technique.id":                []string{"T1552", "T1078"},
				"threat.technique.name":              []string{"Unsecured Credentials", "Valid Accounts"},
				"threat.technique.reference":         []string{"https://attack.mitre.org/techniques/T1552/", "https://attack.mitre.org/techniques/T1078/"},
				"threat.technique.subtechnique.id":   []string{"T1078.004"},
				"threat.technique.subtechnique.name": []string{"Cloud Accounts"},
				"threat.technique.subtechnique.reference":    []string{"https://attack.mitre.org/techniques/T1078/004/"},
				"threat.tactic.id":                           []string{"TA0006", "TA0001"},
				"threat.tactic.name":                         []string{"Credential Access", "Initial Access"},
				"threat.tactic.reference":                    []string{"https://attack.mitre.org/tactics/TA0006/", "https://attack.mitre.org/tactics/TA0001/"},
				"cloud.provider":                             "aws",
				"cloud.account.id":                           "123456789012",
				"cloud.region":                               "us-east-1",
				"user.id":                                    "FAKE_PRINCIPAL:user.name",
				"user.target.name":                           "test-user",
				"source.address":                             "1.2.3.4",
				"source.ip":                                  "1.2.3.4",
				"user_agent.original":                        "AWS Internal",
				"aws.cloudtrail.request_parameters":          `{"userName":"test-user","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"}`,
				"aws.cloudtrail.user_identity.type":          "AssumedRole",
				"aws.cloudtrail.user_identity.arn":           "arn:aws:sts::123456789012:assumed-role/a-role/user.name",
				"aws.cloudtrail.user_identity.access_key_id": "FAKE_ACCESS_KEY",
				"quarantine_watch.schema_version":            "1",
				"quarantine_watch.alert_id":                  "f013ee106138a6679ea2239fd7d4df0c2c2598ee04faabd009259725bfcbd0fd",
				"quarantine_watch.input_shape":               "record",
				"quarantine_watch.source.topic":              "cloudtrail",
				"quarantine_watch.source.partition":          3,
				"quarantine_watch.source.offset":             1234,
				"quarantine_watch.source.index":              0,
				"quarantine_watch.policy.arn":                "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2",
			},
			absent: []string{"user.name", "aws.cloudtrail.error_code", "aws.cloudtrail.error_message", "quarantine_watch.policy.name"},
		},
		{
			name:    "legacy inline quarantine policy",
			finding: sampleFinding(t, "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json", matcher.ShapeRecord),
			want: map[string]any{
				"@timestamp":                        "2020-04-10T06:22:08Z",
				"message":                           "AWS put inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE on IAM user compromised_user in account 123456789012 (PutUserPolicy)",
				"event.action":                      "PutUserPolicy",
				"event.id":                          "1c2a53d1-58cc-41b3-85b8-bd7565370e0d",
				"user.name":                         "compromised_user",
				"user.target.name":                  "compromised_user",
				"source.ip":                         "72.21.217.97",
				"quarantine_watch.policy.name":      "AWSExposedCredentialPolicy_DO_NOT_REMOVE",
				"aws.cloudtrail.user_identity.type": "IAMUser",
			},
			absent: []string{"quarantine_watch.policy.arn"},
		},
		{
			name:    "policy attached by a role, not AWS",
			finding: sampleFinding(t, "01_attach_user_policy_assumedrole_elastic_integrations.json", matcher.ShapeRecord),
			want: map[string]any{
				"message":                     "arn:aws:sts::000000000:assumed-role/ec2-instance-role/i-06815aa7cf7d21f8f attached AdministratorAccess to IAM user pwncloud-backdoor-user in account 000000000 (AttachUserPolicy)",
				"cloud.account.id":            "000000000",
				"quarantine_watch.policy.arn": "arn:aws:iam::aws:policy/AdministratorAccess",
			},
		},
		{
			name: "failed call in an S3 log file",
			finding: with(sampleFinding(t, "06_s3_object_Records_error_updatetrail_awsdocs.json", matcher.ShapeS3Object),
				func(f *matcher.Finding) { f.Index = 0 }),
			want: map[string]any{
				"event.outcome":                     "failure",
				"aws.cloudtrail.error_code":         "TrailNotFoundException",
				"aws.cloudtrail.error_message":      "Unknown trail: myTrail2 for the user: 123456789012",
				"message":                           "arn:aws:iam::123456789012:user/Alice failed to call UpdateTrail in account 123456789012 (UpdateTrail: TrailNotFoundException)",
				"cloud.region":                      "us-east-2",
				"user.name":                         "Alice",
				"quarantine_watch.input_shape":      "s3_object",
				"aws.cloudtrail.request_parameters": `{"name":"myTrail2"}`,
			},
			absent: []string{"user.target", "quarantine_watch.policy"},
		},
		{
			name:    "service name in sourceIPAddress",
			finding: sampleFinding(t, "04_assume_role_awsservice_elastic_integrations.json", matcher.ShapeRecord),
			want: map[string]any{
				"source.address":                    "ec2.amazonaws.com",
				"user_agent.original":               "ec2.amazonaws.com",
				"aws.cloudtrail.user_identity.type": "AWSService",
				"cloud.account.id":                  "111111111111",
				"message":                           "AWSService called AssumeRole in account 111111111111 (AssumeRole)",
			},
			absent: []string{"source.ip", "user", "aws.cloudtrail.user_identity.arn"},
		},
		{
			name: "record without eventID",
			finding: with(sampleFinding(t, "05_s3_object_Records_iam_addusertogroup_awsdocs.json", matcher.ShapeS3Object),
				func(f *matcher.Finding) { f.Index = 0 }),
			want: map[string]any{
				"user.target.name":          "Bob",
				"@timestamp":                "2014-03-25T21:08:14Z",
				"quarantine_watch.alert_id": EventAlertID(ruleID, &matcher.Event{Original: sampleEvent(t, "05_s3_object_Records_iam_addusertogroup_awsdocs.json").Original}),
			},
			absent: []string{"event.id"},
		},
		{
			name:    "EventBridge envelope, root caller, no recipientAccountId",
			finding: sampleFinding(t, "07_eventbridge_envelope_root_createbucket_awsdocs.json", matcher.ShapeEventBridge),
			want: map[string]any{
				"cloud.account.id":                  "123456789012",
				"aws.cloudtrail.user_identity.type": "Root",
				"aws.cloudtrail.request_parameters": `{"bucketName":"bucket-test-iad"}`,
				"quarantine_watch.input_shape":      "eventbridge",
			},
			absent: []string{"aws.cloudtrail.user_identity.access_key_id"},
		},
		{
			name:    "input already normalised by Elastic",
			finding: ecsSample(),
			want: map[string]any{
				"@timestamp":                        "2024-10-30T20:01:59Z",
				"aws.cloudtrail.request_parameters": "{policyArn=arn:aws:iam::aws:policy/AdministratorAccess, userName=pwncloud-backdoor-user}",
				"quarantine_watch.input_shape":      "ecs",
				"quarantine_watch.policy.arn":       "arn:aws:iam::aws:policy/AdministratorAccess",
				"user.name":                         "ec2-instance-role",
				"user.target.name":                  "pwncloud-backdoor-user",
				"event.id":                          "48a0efc2-e7b5-48d0-a3d7-38c44cd15525",
			},
		},
		{
			name:     "unparseable eventTime falls back to detection time, created in UTC",
			finding:  with(v2, func(f *matcher.Finding) { f.Event.EventTime = "yesterday" }),
			detected: detected.In(time.FixedZone("CEST", 2*60*60)),
			want:     map[string]any{"@timestamp": detectedText, "event.created": detectedText},
		},
		{
			name:    "eventTime with offset is written in UTC",
			finding: with(v2, func(f *matcher.Finding) { f.Event.EventTime = "2023-11-22T01:23:52.5+02:00" }),
			want:    map[string]any{"@timestamp": "2023-11-21T23:23:52.5Z"},
		},
		{
			name:    "IPv6 source",
			finding: with(v2, func(f *matcher.Finding) { f.Event.SourceIPAddress = "2001:db8::1" }),
			want:    map[string]any{"source.ip": "2001:db8::1", "source.address": "2001:db8::1"},
		},
		{
			name:    "IPv6 with zone is not an ip",
			finding: with(v2, func(f *matcher.Finding) { f.Event.SourceIPAddress = "fe80::1%eth0" }),
			want:    map[string]any{"source.address": "fe80::1%eth0"},
			absent:  []string{"source.ip"},
		},
		{
			name: "control characters do not break the one-line message",
			finding: with(v2, func(f *matcher.Finding) {
				f.Event.TargetName = "evil\nuser\u2028x"
				f.Event.UserAgent = "aws-internal/3 x"
			}),
			want: map[string]any{
				"message":          "AWS attached AWSCompromisedKeyQuarantineV2 to IAM user evil user x in account 123456789012 (AttachUserPolicy)",
				"user.target.name": "evil\nuser\u2028x",
			},
		},
		{
			name: "invalid UTF-8 in the original",
			finding: with(v2, func(f *matcher.Finding) {
				f.Event.Original = []byte("{\"eventName\":\"A\xffB\"}")
			}),
			want: map[string]any{"event.original": "{\"eventName\":\"A\uFFFDB\"}"},
		},
		{
			name: "severity band maps to Elastic's default score",
			finding: with(v2, func(f *matcher.Finding) {
				r := *f.Rule
				r.Severity, r.RiskScore = "medium", 50
				f.Rule = &r
			}),
			want: map[string]any{"event.severity": 47, "event.risk_score": 50},
		},
		{
			name: "unknown severity band uses the risk score",
			finding: with(v2, func(f *matcher.Finding) {
				r := *f.Rule
				r.Severity, r.RiskScore = "urgent", 12
				f.Rule = &r
			}),
			want: map[string]any{"event.severity": 12, "event.risk_score": 12},
		},
		{
			name: "rule without references, ATT&CK mapping or notes",
			finding: with(v2, func(f *matcher.Finding) {
				f.Rule = &matcher.Rule{ID: "r2", Name: "Other rule", Severity: "low", RiskScore: 21}
			}),
			want:   map[string]any{"rule.id": "r2", "event.severity": 21},
			absent: []string{"rule.reference", "rule.description", "rule.ruleset", "threat", "quarantine_watch.notes"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			when := detected
			if !tt.detected.IsZero() {
				when = tt.detected
			}
			b, err := ECS{}.Encode(tt.finding, src, when)
			if err != nil {
				t.Fatal(err)
			}
			validate(t, b)
			doc := decode(t, b)
			for path, want := range tt.want {
				got, ok := lookup(doc, path)
				if !ok {
					t.Errorf("%s missing", path)
					continue
				}
				if g, w := jsonText(t, got), jsonText(t, want); g != w {
					t.Errorf("%s = %s, want %s", path, g, w)
				}
			}
			for _, path := range tt.absent {
				if got, ok := lookup(doc, path); ok {
					t.Errorf("%s = %v, want absent", path, got)
				}
			}

			// Fields every document carries, whatever the case.
			e := tt.finding.Event
			sum := sha256.Sum256(e.Original)
			if got, _ := lookup(doc, "event.hash"); got != hex.EncodeToString(sum[:]) {
				t.Errorf("event.hash = %v, want SHA-256 of Original", got)
			}
			if got, _ := lookup(doc, "quarantine_watch.alert_id"); got != EventAlertID(tt.finding.Rule.ID, &e) {
				t.Errorf("alert_id = %v, want EventAlertID", got)
			}
			if _, ok := tt.want["event.original"]; !ok {
				if got, _ := lookup(doc, "event.original"); got != string(e.Original) {
					t.Errorf("event.original is not Original verbatim:\n%v\n%s", got, e.Original)
				}
			}
			if got, _ := lookup(doc, "rule.description"); tt.finding.Rule.Description != "" && got != tt.finding.Rule.Description {
				t.Errorf("rule.description = %v", got)
			}
			if got, _ := lookup(doc, "quarantine_watch.notes"); tt.finding.Rule.Notes != "" && got != tt.finding.Rule.Notes {
				t.Errorf("quarantine_watch.notes = %v", got)
			}
			if msg, _ := lookup(doc, "message"); strings.ContainsAny(msg.(string), "\n\r\u2028\u2029") {
				t.Errorf("message is not one line: %q", msg)
			}

			if tt.exhaustive {
				checked := []string{"event.hash", "event.original", "rule.description", "quarantine_watch.notes"}
				for _, path := range leaves(doc) {
					if _, ok := tt.want[path]; !ok && !slices.Contains(checked, path) {
						t.Errorf("field %s is not checked by this test", path)
					}
				}
			}
		})
	}
}

// TestECSAlertEncodeAgree checks that Encode is NewECSAlert marshalled, so
// code reading the typed document sees what is written.
func TestECSAlertEncodeAgree(t *testing.T) {
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	a, err := NewECSAlert(f, Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(a); err != nil {
		t.Fatal(err)
	}
	want := bytes.TrimSuffix(buf.Bytes(), []byte("\n"))
	got, err := ECS{}.Encode(f, Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, got)
	if string(got) != string(want) {
		t.Errorf("Encode differs from NewECSAlert:\n%s\n%s", got, want)
	}
	if !bytes.Contains(got, []byte(`"MITRE ATT&CK"`)) {
		t.Error("HTML characters are escaped")
	}
	// The same input gives the same bytes: SIEMs and tests may compare them.
	again, _ := ECS{}.Encode(f, Source{Topic: "t"}, detected)
	if string(again) != string(got) {
		t.Error("Encode is not deterministic")
	}
}

// TestSchemaRejectsTypos shows the schema bites: each mutation of a valid
// document, a misspelt or mistyped field, must fail validation.
func TestSchemaRejectsTypos(t *testing.T) {
	b, err := ECS{}.Encode(sampleFinding(t, quarantineV2, matcher.ShapeRecord), Source{Topic: "t"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	validate(t, b) // the control: unmutated, it passes

	tests := []struct {
		name   string
		mutate func(doc map[string]any)
	}{
		{"top-level typo", func(d map[string]any) { d["mesage"] = d["message"] }},
		{"event.severity misspelt", func(d map[string]any) {
			ev := d["event"].(map[string]any)
			ev["serverity"] = ev["severity"]
			delete(ev, "severity")
		}},
		{"user.target.name misspelt", func(d map[string]any) {
			d["user"].(map[string]any)["target"] = map[string]any{"nmae": "x"}
		}},
		{"source offset misspelt", func(d map[string]any) {
			d["quarantine_watch"].(map[string]any)["source"].(map[string]any)["ofset"] = 1
		}},
		{"technique id not an array", func(d map[string]any) {
			d["threat"].(map[string]any)["technique"].(map[string]any)["id"] = "T1552"
		}},
		{"event.kind not alert", func(d map[string]any) { d["event"].(map[string]any)["kind"] = "event" }},
		{"@timestamp not a date", func(d map[string]any) { d["@timestamp"] = "2023-11-21 23:23:52" }},
		{"source.ip not an IP", func(d map[string]any) { d["source"].(map[string]any)["ip"] = "ec2.amazonaws.com" }},
		{"alert_id not a hash", func(d map[string]any) { d["quarantine_watch"].(map[string]any)["alert_id"] = "abc" }},
		{"missing rule", func(d map[string]any) { delete(d, "rule") }},
		{"unknown aws field", func(d map[string]any) { d["aws"].(map[string]any)["cloudtrial"] = map[string]any{} }},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := decode(t, b)
			tt.mutate(doc)
			if err := validateErr([]byte(jsonText(t, doc))); err == nil {
				t.Error("mutated document validates")
			}
		})
	}
}

func TestNewECSAlertErrors(t *testing.T) {
	f := sampleFinding(t, quarantineV2, matcher.ShapeRecord)
	if _, err := NewECSAlert(matcher.Finding{Event: f.Event}, Source{}, detected); err != ErrNoRule {
		t.Errorf("no rule: err = %v, want ErrNoRule", err)
	}
	if _, err := NewECSAlert(f, Source{}, time.Time{}); err != ErrNoDetectionTime {
		t.Errorf("zero time: err = %v, want ErrNoDetectionTime", err)
	}
}

// FuzzECSAlert feeds arbitrary event text to the encoder: whatever the
// input topic holds, the document is valid JSON that the schema accepts.
func FuzzECSAlert(f *testing.F) {
	for _, name := range []string{quarantineV2, "04_assume_role_awsservice_elastic_integrations.json", "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json"} {
		e := sampleEvent(f, name)
		f.Add(e.EventTime, e.SourceIPAddress, e.TargetName, e.UserAgent, e.PolicyARN, e.ErrorCode, e.RequestParameters, e.Original)
	}
	f.Add("0000-01-01T00:00:00+01:00", "::ffff:1.2.3.4", "\xff", "", "/", "", []byte("null"), []byte{0, 0xff})
	f.Fuzz(func(t *testing.T, eventTime, ip, user, ua, policy, errCode string, params, original []byte) {
		e := sampleEvent(t, quarantineV2)
		e.EventTime, e.SourceIPAddress, e.TargetName, e.UserAgent, e.PolicyARN, e.ErrorCode = eventTime, ip, user, ua, policy, errCode
		e.RequestParameters, e.Original = params, original
		b, err := ECS{}.Encode(matcher.Finding{Rule: matcher.ElasticQuarantineRule, Event: e}, Source{Topic: "t"}, detected)
		if err != nil {
			t.Fatal(err)
		}
		validate(t, b)
	})
}

// Every rule's findings are valid documents with the rule's own metadata.
func TestECSEveryRule(t *testing.T) {
	ev := sampleEvent(t, "02_attach_user_policy_quarantine_v2_panther.json")
	for _, r := range matcher.AllRules {
		t.Run(r.Key, func(t *testing.T) {
			doc, err := ECS{}.Encode(matcher.Finding{Rule: r, Event: ev, Shape: matcher.ShapeRecord}, Source{Topic: "t"}, detected)
			if err != nil {
				t.Fatal(err)
			}
			validate(t, doc)
			var got struct {
				Event struct {
					Severity  int `json:"severity"`
					RiskScore int `json:"risk_score"`
				}
				Rule struct{ ID, Ruleset string }
			}
			if err := json.Unmarshal(doc, &got); err != nil {
				t.Fatal(err)
			}
			if got.Rule.ID != r.ID || got.Rule.Ruleset != r.Ruleset || got.Event.RiskScore != r.RiskScore || got.Event.Severity == 0 {
				t.Errorf("rule %s: document says %+v", r.Key, got)
			}
		})
	}
}
