package lookback

import "strings"

// NotableCall is a kind of call the case file lists in full: one an intruder
// holding a user's key is known to make. Each says where that is written.
type NotableCall struct {
	Source string   // eventSource
	Names  []string // eventName, one of
	// PolicySuffix, when set, also requires requestParameters.policyArn
	// to end with it.
	PolicySuffix string
	// Technique is the MITRE ATT&CK technique the source maps the call
	// to, "" when the source is not ATT&CK.
	Technique string
	// Why says what the call does for an intruder, in a few words.
	Why string
	// Reference is where the call is named as an intruder's.
	Reference string
}

// NotableCalls is the table of notable calls. What each entry cites was
// read there: MITRE ATT&CK technique and detection-strategy pages (or a
// mirror of them, where that is what could be read) that name the call for
// AWS, AWS's GuardDuty finding types, and Stratus Red Team detonations (real
// CloudTrail of each attack technique, in
// ../shared/corpus/cloudtrail-public/stratus).
// Calls that the reports name but are routine for most keys
// (GetCallerIdentity, the first call of anyone testing a found key) are
// counted in Summary.Actions, not listed.
var NotableCalls = []*NotableCall{
	{
		Source: "iam.amazonaws.com", Names: []string{"CreateAccessKey", "CreateLoginProfile"},
		Technique: "T1098.001", Why: "adds a credential to a user",
		Reference: "https://center-for-threat-informed-defense.github.io/mappings-explorer/attack/attack-17.1/domain-enterprise/techniques/T1098.001",
	},
	{
		Source: "iam.amazonaws.com", Names: []string{"UpdateLoginProfile"},
		Why:       "sets a user's console password",
		Reference: stratus + "aws.privilege-escalation.iam-update-user-login-profile.json",
	},
	{
		Source: "iam.amazonaws.com", Names: []string{"CreateUser"},
		Why:       "creates a user to come back through",
		Reference: stratus + "aws.persistence.iam-create-admin-user.json",
	},
	{
		Source: "iam.amazonaws.com", Names: []string{"AttachUserPolicy", "AttachGroupPolicy", "AttachRolePolicy"},
		PolicySuffix: ":policy/AdministratorAccess",
		Why:          "grants administrator access",
		Reference:    stratus + "aws.persistence.iam-create-admin-user.json",
	},
	{
		Source: "sts.amazonaws.com", Names: []string{"GetFederationToken"},
		Technique: "T1098.001", Why: "mints credentials that outlive the user's key",
		Reference: "https://mitre.ptsecurity.com/en-US/T1098.001",
	},
	{
		Source: "secretsmanager.amazonaws.com", Names: []string{"GetSecretValue"},
		Technique: "T1555.006", Why: "reads a secret",
		Reference: "https://attack.mitre.org/detectionstrategies/DET0130",
	},
	{
		Source: "secretsmanager.amazonaws.com", Names: []string{"BatchGetSecretValue"},
		Why:       "reads secrets in bulk",
		Reference: stratus + "aws.credential-access.secretsmanager-batch-retrieve-secrets.json",
	},
	{
		// Read in the page's Chinese translation: it lists
		// GetPasswordData, GetSecretValue, BatchGetSecretValue and
		// GenerateDbAuthToken as the credential-access calls of
		// CredentialAccess:IAMUser/AnomalousBehavior.
		Source: "ec2.amazonaws.com", Names: []string{"GetPasswordData"},
		Why:       "reads a Windows instance's administrator password",
		Reference: "https://docs.aws.amazon.com/guardduty/latest/ug/guardduty_finding-types-iam.html",
	},
	{
		Source: "ec2.amazonaws.com", Names: []string{"RunInstances"},
		Technique: "T1578.002", Why: "launches instances",
		Reference: "https://attack.mitre.org/techniques/T1578/002/",
	},
	{
		// StopLogging and DeleteTrail are named by ATT&CK's detection
		// strategy DET0289; UpdateTrail is the call behind the
		// technique's "disabling multi-region logging" (its citation
		// "AWS Update Trail").
		Source: "cloudtrail.amazonaws.com", Names: []string{"StopLogging", "DeleteTrail", "UpdateTrail"},
		Technique: "T1562.008", Why: "stops or narrows the audit trail",
		Reference: "https://attack.mitre.org/techniques/T1562/008/",
	},
	{
		Source: "cloudtrail.amazonaws.com", Names: []string{"PutEventSelectors"},
		Why:       "narrows what the trail records",
		Reference: stratus + "aws.defense-evasion.cloudtrail-event-selectors.json",
	},
}

// stratus is where Stratus Red Team's detonation logs were read, at the
// commit ../shared/corpus holds.
const stratus = "https://github.com/DataDog/stratus-red-team/blob/7c9a7a5a63dc370260a6528dd0d30476854806c1/docs/detonation-logs/"

// notable returns the entry of NotableCalls that names e, or nil.
func notable(e *event) *NotableCall {
	for _, c := range NotableCalls {
		if e.source != c.Source {
			continue
		}
		for _, n := range c.Names {
			if e.name == n && (c.PolicySuffix == "" || strings.HasSuffix(e.policyARN, c.PolicySuffix)) {
				return c
			}
		}
	}
	return nil
}
