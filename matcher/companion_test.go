package matcher

import (
	"bytes"
	"slices"
	"testing"
)

// companionCases are each companion rule's positives and near misses, in
// every input shape, evaluated with all rules enabled.
func companionCases(t testing.TB) []matchCase {
	q := func(replace ...string) []byte { return quarantine(t, replace...) }
	errs := `"eventName":"AttachUserPolicy","errorCode":"AccessDenied","errorMessage":"User: arn:aws:sts::123456789012:assumed-role/AWS-Internal is not authorized to perform: iam:AttachUserPolicy with an explicit deny in a service control policy"`
	failed := q(`"eventName":"AttachUserPolicy"`, errs)
	detachUser := q("AttachUserPolicy", "DetachUserPolicy")
	detachRole := q("AttachUserPolicy", "DetachRolePolicy", `"userName":"test-user"`, `"roleName":"test-role"`)
	detachGroup := q("AttachUserPolicy", "DetachGroupPolicy", `"userName":"test-user"`, `"groupName":"test-group"`)
	attachRole := q("AttachUserPolicy", "AttachRolePolicy", `"userName":"test-user"`, `"roleName":"test-role"`)
	attachGroup := q("AttachUserPolicy", "AttachGroupPolicy", `"userName":"test-user"`, `"groupName":"test-group"`)
	legacy := compact(t, readSample(t, "10_"))
	const legacyID = "1c2a53d1-58cc-41b3-85b8-bd7565370e0d"

	find := func(r *Rule, id string, index int) []refFinding { return []refFinding{{r.ID, id, index, ""}} }
	elastic := find(ElasticQuarantineRule, quarantineEventID, 0)
	attachFailed := find(QuarantineAttachFailedRule, quarantineEventID, 0)
	detached := find(QuarantineDetachedRule, quarantineEventID, 0)
	roleGroup := find(QuarantineRoleOrGroupRule, quarantineEventID, 0)

	var cases []matchCase
	// Every positive in every shape.
	for _, p := range []struct {
		name string
		rec  []byte
		want []refFinding
	}{
		{"elastic", q(), elastic},
		{"attach failed", failed, attachFailed},
		{"attach failed, errorMessage only", q(`"eventName":"AttachUserPolicy"`, `"eventName":"AttachUserPolicy","errorMessage":"denied by a permissions boundary"`), attachFailed},
		{"detach from user", detachUser, detached},
		{"detach from role", detachRole, detached},
		{"detach from group", detachGroup, detached},
		{"attach to role", attachRole, roleGroup},
		{"attach to group", attachGroup, roleGroup},
		{"legacy inline", legacy, find(LegacyInlineQuarantineRule, legacyID, 0)},
	} {
		for _, s := range []struct {
			shape string
			wrap  func([]byte) []byte
		}{
			{"record", func(b []byte) []byte { return b }},
			{"S3 object", func(b []byte) []byte { return s3Object(b) }},
			{"EventBridge", eventBridge},
			{"CloudWatch gzip", func(b []byte) []byte { return gz(cloudWatchPayload(b)) }},
			{"CloudWatch base64", func(b []byte) []byte { return b64(gz(cloudWatchPayload(b))) }},
			{"CloudWatch awslogs", func(b []byte) []byte { return awslogs(cloudWatchPayload(b)) }},
			{"CloudWatch decoded", func(b []byte) []byte { return cloudWatchPayload(b) }},
			{"Agent message", agentEvent},
		} {
			cases = append(cases, matchCase{name: p.name + " in " + s.shape, value: s.wrap(p.rec), want: p.want})
		}
	}
	const quarantineParams = "{userName=test-user, policyArn=arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV2}"
	ecsWant := func(r *Rule) []refFinding { return find(r, quarantineEventID, 0) }
	cases = append(cases,
		matchCase{name: "ECS attach failed", value: ecsDocument("AttachUserPolicy", "failure", "aws.cloudtrail", quarantineParams), want: ecsWant(QuarantineAttachFailedRule)},
		matchCase{name: "ECS detach", value: ecsDocument("DetachGroupPolicy", "success", "aws.cloudtrail", quarantineParams), want: ecsWant(QuarantineDetachedRule)},
		matchCase{name: "ECS attach to role", value: ecsDocument("AttachRolePolicy", "success", "aws.cloudtrail", quarantineParams), want: ecsWant(QuarantineRoleOrGroupRule)},
		matchCase{name: "ECS legacy inline", value: ecsDocument("PutUserPolicy", "success", "aws.cloudtrail", "{policyName=AWSExposedCredentialPolicy_DO_NOT_REMOVE, userName=u, policyDocument=...}"), want: ecsWant(LegacyInlineQuarantineRule)},

		// Near misses: no rule at all.
		matchCase{name: "failed attach of another policy", value: q("AWSCompromisedKeyQuarantineV2", "AdministratorAccess", `"eventName":"AttachUserPolicy"`, errs)},
		matchCase{name: "detach of another policy", value: q("AWSCompromisedKeyQuarantineV2", "AdministratorAccess", "AttachUserPolicy", "DetachUserPolicy")},
		matchCase{name: "failed detach", value: q(`"eventName":"AttachUserPolicy"`, `"eventName":"DetachUserPolicy","errorCode":"NoSuchEntity"`)},
		matchCase{name: "failed attach to a role", value: bytes.Replace(attachRole, []byte(`"eventName":"AttachRolePolicy"`), []byte(`"eventName":"AttachRolePolicy","errorCode":"AccessDenied"`), 1)},
		matchCase{name: "attach another policy to a group", value: q("AWSCompromisedKeyQuarantineV2", "ReadOnlyAccess", "AttachUserPolicy", "AttachGroupPolicy")},
		matchCase{name: "other inline policy", value: bytes.Replace(legacy, []byte("AWSExposedCredentialPolicy_DO_NOT_REMOVE"), []byte("DeveloperBoundary"), 1)},
		matchCase{name: "legacy policy name in a failed call", value: bytes.Replace(legacy, []byte(`"eventName":"PutUserPolicy"`), []byte(`"eventName":"PutUserPolicy","errorCode":"AccessDenied"`), 1)},
		matchCase{name: "legacy policy name on DeleteUserPolicy", value: bytes.Replace(legacy, []byte(`"eventName":"PutUserPolicy"`), []byte(`"eventName":"DeleteUserPolicy"`), 1)},
		matchCase{name: "legacy name in lower case", value: bytes.Replace(legacy, []byte("AWSExposedCredentialPolicy_DO_NOT_REMOVE"), []byte("awsexposedcredentialpolicy_do_not_remove"), 1)},
		matchCase{name: "legacy name escaped", value: bytes.Replace(legacy, []byte("AWSExposedCredentialPolicy_DO_NOT_REMOVE"), []byte(`AWSExposedCredentialPolicy\u005fDO_NOT_REMOVE`), 1), want: find(LegacyInlineQuarantineRule, legacyID, 0)},
		matchCase{name: "ECS detach with outcome failure", value: ecsDocument("DetachUserPolicy", "failure", "aws.cloudtrail", quarantineParams)},
		matchCase{name: "ECS attach to role, other dataset", value: ecsDocument("AttachRolePolicy", "success", "aws.cloudtrail_other", quarantineParams)},
	)
	return cases
}

func TestCompanionRules(t *testing.T) {
	all := mustNew(t, Config{Rules: AllRules})
	faithful := mustNew(t, Config{})
	for _, c := range companionCases(t) {
		t.Run(c.name, func(t *testing.T) {
			res := all.NewScanner().Match(c.value, nil)
			if res.Err != nil {
				t.Fatalf("error: %v", res.Err)
			}
			if got := findingsOf(res); !slices.Equal(got, c.want) {
				t.Errorf("findings = %v, want %v", got, c.want)
			}
			ref, malformed := reference(c.value, all)
			if malformed || !slices.Equal(ref, c.want) {
				t.Errorf("reference = %v (malformed %v), want %v", ref, malformed, c.want)
			}
			// The default configuration reports the Elastic rule alone.
			var elasticOnly []refFinding
			for _, f := range c.want {
				if f.RuleID == ElasticQuarantineRule.ID {
					elasticOnly = append(elasticOnly, f)
				}
			}
			if got := findingsOf(faithful.NewScanner().Match(c.value, nil)); !slices.Equal(got, elasticOnly) {
				t.Errorf("default rules: findings = %v, want %v", got, elasticOnly)
			}
		})
	}
}

func TestParseRules(t *testing.T) {
	for _, c := range []struct {
		spec string
		want []*Rule
		err  bool
	}{
		{"", []*Rule{ElasticQuarantineRule}, false},
		{"elastic", []*Rule{ElasticQuarantineRule}, false},
		{"all", AllRules, false},
		{"detached, legacy-inline", []*Rule{QuarantineDetachedRule, LegacyInlineQuarantineRule}, false},
		{"elastic,elastic", []*Rule{ElasticQuarantineRule}, false},
		{QuarantineAttachFailedRule.ID, []*Rule{QuarantineAttachFailedRule}, false},
		{"nope", nil, true},
	} {
		got, err := ParseRules(c.spec)
		if (err != nil) != c.err || !slices.Equal(got, c.want) {
			t.Errorf("ParseRules(%q) = %v, %v", c.spec, got, err)
		}
	}
	if _, err := New(Config{Rules: AllRules}); err != nil {
		t.Errorf("the shipped rules: %v", err)
	}
}
