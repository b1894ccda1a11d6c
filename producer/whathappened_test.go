package producer

import (
	"strings"
	"testing"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// matchValue runs the real matcher with rules over one record value and
// returns its findings; the value must not be a dead letter.
func matchValue(t *testing.T, rules []*matcher.Rule, value string) []matcher.Finding {
	t.Helper()
	m, err := matcher.New(matcher.Config{Rules: rules})
	if err != nil {
		t.Fatal(err)
	}
	res := m.NewScanner().Match([]byte(value), nil)
	if res.Err != nil {
		t.Fatalf("matcher: %v\n%s", res.Err, value)
	}
	return res.Findings
}

// The inputs of TestAlertSaysWhatHappened, written by hand: each is one
// call a companion rule (or the Elastic rule) reports, in the shape a user
// sends it.
const (
	detachRoleRecord = `{"eventVersion":"1.09","userIdentity":{"type":"IAMUser","principalId":"AIDAEXAMPLEMALLORY","arn":"arn:aws:iam::111122223333:user/mallory","accountId":"111122223333","accessKeyId":"AKIAEXAMPLEMALLORY","userName":"mallory"},` +
		`"eventTime":"2025-03-04T05:06:07Z","eventSource":"iam.amazonaws.com","eventName":"DetachRolePolicy","awsRegion":"us-east-1","sourceIPAddress":"198.51.100.7","userAgent":"aws-cli/2.15.0",` +
		`"requestParameters":{"roleName":"web-app","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"},"responseElements":null,"eventID":"0b0e9c1e-3c4f-4d55-9d0e-000000000001","recipientAccountId":"111122223333"}`

	attachGroupRecord = `{"eventVersion":"1.09","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:aws-quarantine","arn":"arn:aws:sts::111122223333:assumed-role/aws-quarantine/session","accountId":"111122223333"},` +
		`"eventTime":"2025-03-04T05:06:08Z","eventSource":"iam.amazonaws.com","eventName":"AttachGroupPolicy","awsRegion":"us-east-1","sourceIPAddress":"AWS Internal","userAgent":"AWS Internal",` +
		`"requestParameters":{"groupName":"developers","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"},"responseElements":null,"eventID":"0b0e9c1e-3c4f-4d55-9d0e-000000000002","recipientAccountId":"111122223333"}`

	attachFailedRecord = `{"eventVersion":"1.09","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:aws-quarantine","arn":"arn:aws:sts::111122223333:assumed-role/aws-quarantine/session","accountId":"111122223333"},` +
		`"eventTime":"2025-03-04T05:06:09Z","eventSource":"iam.amazonaws.com","eventName":"AttachUserPolicy","awsRegion":"us-east-1","sourceIPAddress":"AWS Internal","userAgent":"AWS Internal",` +
		`"errorCode":"AccessDenied","errorMessage":"explicit deny in a service control policy",` +
		`"requestParameters":{"userName":"alice","policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2"},"responseElements":null,"eventID":"0b0e9c1e-3c4f-4d55-9d0e-000000000003","recipientAccountId":"111122223333"}`

	// An ECS document whose outcome is failure and which names no error
	// code: Elastic's pipeline sets event.outcome from errorCode or
	// errorMessage, and a shipper may drop those fields; the outcome is
	// what the rule matched on.
	ecsFailedDoc = `{"@timestamp":"2025-03-04T05:06:10.000Z","data_stream":{"dataset":"aws.cloudtrail","type":"logs","namespace":"default"},` +
		`"event":{"action":"AttachUserPolicy","category":["iam"],"type":["user","change"],"dataset":"aws.cloudtrail","kind":"event","outcome":"failure","provider":"iam.amazonaws.com","id":"0b0e9c1e-3c4f-4d55-9d0e-000000000004"},` +
		`"cloud":{"account":{"id":"111122223333"},"region":"us-east-1"},"user_agent":{"original":"AWS Internal"},` +
		`"aws":{"cloudtrail":{"request_parameters":"{policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2, userName=bob}","flattened":{"request_parameters":{"policyArn":"arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2","userName":"bob"}}}},` +
		`"user":{"target":{"name":"bob"}}}`
)

// TestAlertSaysWhatHappened: the message, OCSF's finding_info.title and
// desc, event.outcome, event.category/type and group.name describe the
// event the rule matched. Expected values are written by hand from the
// input and from Elastic's pipeline output for these calls (AttachGroupPolicy
// and AttachRolePolicy in elastic/integrations' pipeline tests).
func TestAlertSaysWhatHappened(t *testing.T) {
	tests := []struct {
		name  string
		rule  *matcher.Rule
		value string

		message, title, desc string
		outcome              string
		eventType            []string
		groupName            string // "" when group.name must be absent
		userTarget           string // "" when user.target.name must be absent
	}{
		{
			name:      "DetachRolePolicy by a user",
			rule:      matcher.QuarantineDetachedRule,
			value:     detachRoleRecord,
			message:   "arn:aws:iam::111122223333:user/mallory detached AWSCompromisedKeyQuarantineV2 from IAM role web-app in account 111122223333 (DetachRolePolicy)",
			title:     "AWSCompromisedKeyQuarantineV2 detached from IAM role web-app",
			desc:      "arn:aws:iam::111122223333:user/mallory detached AWSCompromisedKeyQuarantineV2 from IAM role web-app in account 111122223333 (DetachRolePolicy)",
			outcome:   "success",
			eventType: []string{"change"},
		},
		{
			name:      "AttachGroupPolicy by AWS",
			rule:      matcher.QuarantineRoleOrGroupRule,
			value:     attachGroupRecord,
			message:   "AWS attached AWSCompromisedKeyQuarantineV3 to IAM group developers in account 111122223333 (AttachGroupPolicy)",
			title:     "AWSCompromisedKeyQuarantineV3 attached to IAM group developers",
			desc:      "AWS attached AWSCompromisedKeyQuarantineV3 to IAM group developers in account 111122223333 (AttachGroupPolicy)",
			outcome:   "success",
			eventType: []string{"group", "change"},
			groupName: "developers",
		},
		{
			name:       "AttachUserPolicy denied",
			rule:       matcher.QuarantineAttachFailedRule,
			value:      attachFailedRecord,
			message:    "AWS failed to attach AWSCompromisedKeyQuarantineV2 to IAM user alice in account 111122223333 (AttachUserPolicy: AccessDenied)",
			title:      "Failed to attach AWSCompromisedKeyQuarantineV2 to IAM user alice",
			desc:       "AWS failed to attach AWSCompromisedKeyQuarantineV2 to IAM user alice in account 111122223333 (AttachUserPolicy: AccessDenied: explicit deny in a service control policy)",
			outcome:    "failure",
			eventType:  []string{"user", "change"},
			userTarget: "alice",
		},
		{
			name:       "ECS document with outcome failure",
			rule:       matcher.QuarantineAttachFailedRule,
			value:      ecsFailedDoc,
			message:    "AWS failed to attach AWSCompromisedKeyQuarantineV2 to IAM user bob in account 111122223333 (AttachUserPolicy)",
			title:      "Failed to attach AWSCompromisedKeyQuarantineV2 to IAM user bob",
			desc:       "AWS failed to attach AWSCompromisedKeyQuarantineV2 to IAM user bob in account 111122223333 (AttachUserPolicy)",
			outcome:    "failure",
			eventType:  []string{"user", "change"},
			userTarget: "bob",
		},
		{
			name:       "legacy inline policy",
			rule:       matcher.LegacyInlineQuarantineRule,
			value:      string(readSample(t, "10_legacy_putuserpolicy_exposed_credential_quarantine_panther.json")),
			message:    "AWS put inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE on IAM user compromised_user in account 123456789012 (PutUserPolicy)",
			title:      "Inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE put on IAM user compromised_user",
			desc:       "AWS put inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE on IAM user compromised_user in account 123456789012 (PutUserPolicy)",
			outcome:    "success",
			eventType:  []string{"user", "change"},
			userTarget: "compromised_user",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			fs := matchValue(t, []*matcher.Rule{tt.rule}, tt.value)
			if len(fs) != 1 {
				t.Fatalf("%d findings, want 1", len(fs))
			}
			ecsDoc, err := ECS{}.Encode(fs[0], Source{Topic: "cloudtrail"}, detected)
			if err != nil {
				t.Fatal(err)
			}
			ocsfDoc, err := OCSF{}.Encode(fs[0], Source{Topic: "cloudtrail"}, detected)
			if err != nil {
				t.Fatal(err)
			}
			e, o := decode(t, ecsDoc), decode(t, ocsfDoc)
			var bad []string
			check := func(doc map[string]any, path string, want any) {
				got, ok := lookup(doc, path)
				if want == nil {
					if ok {
						bad = append(bad, path+" = "+jsonText(t, got)+", want absent")
					}
					return
				}
				if !ok || jsonText(t, got) != jsonText(t, want) {
					bad = append(bad, path+" = "+jsonText(t, got)+", want "+jsonText(t, want))
				}
			}
			check(e, "message", tt.message)
			check(e, "event.outcome", tt.outcome)
			check(e, "event.category", []string{"iam"})
			check(e, "event.type", tt.eventType)
			if tt.groupName != "" {
				check(e, "group.name", tt.groupName)
			} else {
				check(e, "group.name", nil)
			}
			if tt.userTarget != "" {
				check(e, "user.target.name", tt.userTarget)
			} else {
				check(e, "user.target.name", nil)
			}
			check(o, "message", tt.message)
			check(o, "finding_info.title", tt.title)
			check(o, "finding_info.desc", tt.desc)
			if len(bad) > 0 {
				t.Errorf("%s:\n  %s", tt.name, strings.Join(bad, "\n  "))
			}
		})
	}
}

// TestAlertCarriesRuleRevision: the Elastic rule's finding carries the
// upstream mapping (T1552 under TA0006 and T1078.004 under TA0001) and the
// rule's version, in both formats.
func TestAlertCarriesRuleRevision(t *testing.T) {
	fs := matchValue(t, nil, string(readSample(t, quarantineV2)))
	if len(fs) != 1 {
		t.Fatalf("%d findings, want 1", len(fs))
	}
	ecsDoc, err := ECS{}.Encode(fs[0], Source{Topic: "cloudtrail"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	ocsfDoc, err := OCSF{}.Encode(fs[0], Source{Topic: "cloudtrail"}, detected)
	if err != nil {
		t.Fatal(err)
	}
	e, o := decode(t, ecsDoc), decode(t, ocsfDoc)
	want := map[string]any{
		"threat.framework":                        "MITRE ATT&CK",
		"threat.tactic.id":                        []string{"TA0006", "TA0001"},
		"threat.tactic.name":                      []string{"Credential Access", "Initial Access"},
		"threat.tactic.reference":                 []string{"https://attack.mitre.org/tactics/TA0006/", "https://attack.mitre.org/tactics/TA0001/"},
		"threat.technique.id":                     []string{"T1552", "T1078"},
		"threat.technique.name":                   []string{"Unsecured Credentials", "Valid Accounts"},
		"threat.technique.reference":              []string{"https://attack.mitre.org/techniques/T1552/", "https://attack.mitre.org/techniques/T1078/"},
		"threat.technique.subtechnique.id":        []string{"T1078.004"},
		"threat.technique.subtechnique.name":      []string{"Cloud Accounts"},
		"threat.technique.subtechnique.reference": []string{"https://attack.mitre.org/techniques/T1078/004/"},
		"rule.version":                            "2026/04/10",
	}
	var bad []string
	for path, w := range want {
		got, ok := lookup(e, path)
		if w == nil {
			if ok {
				bad = append(bad, "ECS "+path+" present")
			}
			continue
		}
		if !ok || jsonText(t, got) != jsonText(t, w) {
			bad = append(bad, "ECS "+path+" = "+jsonText(t, got)+", want "+jsonText(t, w))
		}
	}
	wantAttacks := `[{"tactic":{"name":"Credential Access","src_url":"https://attack.mitre.org/tactics/TA0006/","uid":"TA0006"},"technique":{"name":"Unsecured Credentials","src_url":"https://attack.mitre.org/techniques/T1552/","uid":"T1552"},"version":"v14"},` +
		`{"sub_technique":{"name":"Cloud Accounts","src_url":"https://attack.mitre.org/techniques/T1078/004/","uid":"T1078.004"},"tactic":{"name":"Initial Access","src_url":"https://attack.mitre.org/tactics/TA0001/","uid":"TA0001"},"technique":{"name":"Valid Accounts","src_url":"https://attack.mitre.org/techniques/T1078/","uid":"T1078"},"version":"v14"}]`
	if got, _ := lookup(o, "finding_info.attacks"); jsonText(t, got) != wantAttacks {
		bad = append(bad, "OCSF finding_info.attacks = "+jsonText(t, got)+", want "+wantAttacks)
	}
	if got, _ := lookup(o, "finding_info.analytic.version"); jsonText(t, got) != `"2026/04/10"` {
		bad = append(bad, "OCSF finding_info.analytic.version = "+jsonText(t, got))
	}
	if got, _ := lookup(o, "finding_info.types"); jsonText(t, got) != `["Credential Access","Initial Access"]` {
		bad = append(bad, "OCSF finding_info.types = "+jsonText(t, got))
	}
	if len(bad) > 0 {
		t.Errorf("\n  %s", strings.Join(bad, "\n  "))
	}
}
