package matcher

import (
	"fmt"
	"strings"
)

// Threat is one MITRE ATT&CK tactic, technique or sub-technique.
type Threat struct {
	ID        string
	Name      string
	Reference string
}

// Technique is an ATT&CK technique and those of its sub-techniques a rule
// maps.
type Technique struct {
	Threat
	Subtechniques []Threat
}

// ThreatMapping is one ATT&CK tactic and the techniques a rule maps under
// it, as one [[rule.threat]] entry of an Elastic rule file declares them.
type ThreatMapping struct {
	Tactic     Threat
	Techniques []Technique
}

// Rule is a detection rule, declared in one place: what it matches (Match)
// and what its findings say (the other fields). New compiles the enabled
// rules' Match once, into the prefilter and the predicates; nothing else in
// the package knows a rule by its ID.
type Rule struct {
	ID string
	// Key is the rule's short name in --rules.
	Key string
	// Version is the rule's revision, carried in every finding so that an
	// alert says which revision of the logic and mapping produced it. For
	// a rule Elastic ships it names the upstream revision followed
	// (docs/rules.md says where it was read).
	Version     string
	Name        string
	Description string
	Severity    string // low, medium, high, critical
	RiskScore   int
	Ruleset     string
	References  []string
	// Threats is the rule's MITRE ATT&CK mapping, tactic by tactic.
	Threats []ThreatMapping
	// Notes tells a responder what to look at first.
	Notes string
	// Match is what the rule matches.
	Match Match
	// Watch, set on the post-quarantine rules alone, is what the rule
	// matches among the events of a watched user (watch.go); such a rule
	// has no Match, is never in Config.Rules and is evaluated whenever a
	// watchlist is set (Matcher.SetWatchlist).
	Watch *WatchMatch
}

// Match is what a rule matches, in the terms of Elastic's CloudTrail
// mapping. It reads as the EQL query
//
//	any where event.dataset == "aws.cloudtrail" and event.action in (Actions)
//	  and event.outcome == Outcome
//	  and (stringContains(Field, Markers[0]) or stringContains(Field, Markers[1]) ...)
//
// evaluated on a CloudTrail record as Elastic's ingest pipeline maps it
// (docs/rules.md), or on an ECS document as it is.
type Match struct {
	// Actions are the event names (CloudTrail eventName, ECS event.action)
	// the rule accepts; case-sensitive.
	Actions []string
	// Outcome is OutcomeSuccess or OutcomeFailure, event.outcome as
	// Elastic's pipeline sets it from errorCode and errorMessage.
	Outcome string
	// Field is where a marker must be. FieldRequestParameters is the one
	// field New serves.
	Field string
	// Markers: Field must contain at least one of them, case-sensitive, once
	// decoded. New refuses a marker the prefilter could not search soundly
	// (see New).
	Markers []string
}

// Values of Match.Outcome and Match.Field.
const (
	OutcomeSuccess = "success"
	OutcomeFailure = "failure"
	// FieldRequestParameters is aws.cloudtrail.request_parameters: on a
	// CloudTrail record, any key or value of requestParameters at any depth
	// (Elastic flattens the object into that one string).
	FieldRequestParameters = "aws.cloudtrail.request_parameters"
)

// The markers of the rules below: the managed quarantine policies' names
// (V1 to V4 share the prefix) and the inline policy AWS used before them.
const (
	quarantineMarker = "AWSCompromisedKeyQuarantine"
	legacyMarker     = "AWSExposedCredentialPolicy_DO_NOT_REMOVE"
)

// ATT&CK entries the rules map.
var (
	tacticCredentialAccess = Threat{ID: "TA0006", Name: "Credential Access", Reference: "https://attack.mitre.org/tactics/TA0006/"}
	tacticInitialAccess    = Threat{ID: "TA0001", Name: "Initial Access", Reference: "https://attack.mitre.org/tactics/TA0001/"}
	tacticDefenseEvasion   = Threat{ID: "TA0005", Name: "Defense Evasion", Reference: "https://attack.mitre.org/tactics/TA0005/"}
	tacticPersistence      = Threat{ID: "TA0003", Name: "Persistence", Reference: "https://attack.mitre.org/tactics/TA0003/"}

	techniqueUnsecuredCredentials = Technique{Threat: Threat{ID: "T1552", Name: "Unsecured Credentials", Reference: "https://attack.mitre.org/techniques/T1552/"}}
	techniqueImpairDefenses       = Technique{Threat: Threat{ID: "T1562", Name: "Impair Defenses", Reference: "https://attack.mitre.org/techniques/T1562/"}}
	techniqueCloudAccounts        = Technique{
		Threat:        Threat{ID: "T1078", Name: "Valid Accounts", Reference: "https://attack.mitre.org/techniques/T1078/"},
		Subtechniques: []Threat{{ID: "T1078.004", Name: "Cloud Accounts", Reference: "https://attack.mitre.org/techniques/T1078/004/"}},
	}

	techniqueAdditionalCloudCredentials = Technique{
		Threat:        Threat{ID: "T1098", Name: "Account Manipulation", Reference: "https://attack.mitre.org/techniques/T1098/"},
		Subtechniques: []Threat{{ID: "T1098.001", Name: "Additional Cloud Credentials", Reference: "https://attack.mitre.org/techniques/T1098/001/"}},
	}

	// credentialAccess is T1552 Unsecured Credentials under TA0006.
	credentialAccess = ThreatMapping{Tactic: tacticCredentialAccess, Techniques: []Technique{techniqueUnsecuredCredentials}}
)

// ElasticQuarantineRule is Elastic's "AWS IAM CompromisedKeyQuarantine
// Policy Attached to User", the rule this project evaluates on the stream.
var ElasticQuarantineRule = &Rule{
	ID:  "0b79f5c0-2c31-4fea-86cd-e62644278205",
	Key: "elastic",
	// The revision of elastic/detection-rules' rule file this follows, by
	// its updated_date: the integer version Elastic's release lock gives
	// that revision could not be read (docs/rules.md).
	Version: "2026/04/10",
	Name:    "AWS IAM CompromisedKeyQuarantine Policy Attached to User",
	Description: "This rule looks for use of the IAM AttachUserPolicy API operation to attach the " +
		"CompromisedKeyQuarantine or CompromisedKeyQuarantineV2 AWS managed policies to an existing IAM user. " +
		"This policy denies access to certain actions and is applied by the AWS team in the event that an " +
		"IAM user's credentials have been compromised or exposed publicly.",
	Severity:  "high",
	RiskScore: 73,
	Ruleset:   "elastic",
	References: []string{
		"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantine.html/",
		"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV2.html/",
	},
	// As in the upstream revision: T1552 under Credential Access, and
	// T1078.004 Valid Accounts: Cloud Accounts under Initial Access.
	Threats: []ThreatMapping{
		credentialAccess,
		{Tactic: tacticInitialAccess, Techniques: []Technique{techniqueCloudAccounts}},
	},
	Notes: "AWS attached a quarantine policy because an access key of this user was exposed. " +
		"Rotate and delete the key, review CloudTrail for its use since the exposure, and keep the policy " +
		"attached until the AWS support case is closed.",
	Match: Match{
		Actions: []string{"AttachUserPolicy"},
		Outcome: OutcomeSuccess,
		Field:   FieldRequestParameters,
		Markers: []string{quarantineMarker},
	},
}

// The companion rules: the moments around a quarantine that the Elastic rule
// does not see. Each is opt-in (Config.Rules) and has an id that never
// changes, so alert ids and SIEM suppressions stay valid across releases;
// their Version is this project's own revision of each.
var (
	// QuarantineAttachFailedRule: AWS tried to quarantine a user and the
	// call failed (an SCP or permissions boundary denied it): the exposed
	// key is not contained.
	QuarantineAttachFailedRule = &Rule{
		ID:      "78839149-9acc-4627-a592-f66a785aa1b5",
		Key:     "attach-failed",
		Version: "1",
		Name:    "AWS IAM CompromisedKeyQuarantine Policy Attachment Failed",
		Description: "An AttachUserPolicy call for an AWSCompromisedKeyQuarantine policy failed, for example because a " +
			"service control policy or permissions boundary denied it. AWS found an exposed access key for this user " +
			"and could not contain it: the key is still fully usable.",
		Severity:  "critical",
		RiskScore: 99,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV3.html",
			"https://docs.aws.amazon.com/IAM/latest/UserGuide/access_policies_boundaries.html",
		},
		Threats: []ThreatMapping{credentialAccess},
		Notes: "Deactivate the exposed access key now (aws iam update-access-key --status Inactive): nothing else " +
			"restricts it. Then find what denied the attachment (errorCode, errorMessage) and review the key's use.",
		Match: Match{
			Actions: []string{"AttachUserPolicy"},
			Outcome: OutcomeFailure,
			Field:   FieldRequestParameters,
			Markers: []string{quarantineMarker},
		},
	}

	// QuarantineDetachedRule: a quarantine policy was removed from a user,
	// role or group before the incident was closed.
	QuarantineDetachedRule = &Rule{
		ID:      "33f499e2-12da-419e-ac60-c893b6efbd22",
		Key:     "detached",
		Version: "1",
		Name:    "AWS IAM CompromisedKeyQuarantine Policy Detached",
		Description: "A DetachUserPolicy, DetachRolePolicy or DetachGroupPolicy call removed an AWSCompromisedKeyQuarantine " +
			"policy. AWS advises leaving it attached until the support case about the exposed key is closed; removing " +
			"it gives the exposed credential its permissions back, and is what an intruder holding it would do.",
		Severity:  "high",
		RiskScore: 73,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV3.html",
		},
		Threats: []ThreatMapping{{Tactic: tacticDefenseEvasion, Techniques: []Technique{techniqueImpairDefenses}}},
		Notes: "Confirm with the caller (userIdentity) that the exposed key was deleted and the support case closed; " +
			"if not, re-attach the policy and treat the caller as suspect.",
		Match: Match{
			Actions: []string{"DetachUserPolicy", "DetachRolePolicy", "DetachGroupPolicy"},
			Outcome: OutcomeSuccess,
			Field:   FieldRequestParameters,
			Markers: []string{quarantineMarker},
		},
	}

	// QuarantineRoleOrGroupRule: a quarantine policy was attached to a role
	// or a group: a credential other than a user's access key was exposed,
	// or a responder quarantined a whole group.
	QuarantineRoleOrGroupRule = &Rule{
		ID:      "d9c40746-9e0e-421d-954c-56c6777f6733",
		Key:     "role-group-attached",
		Version: "1",
		Name:    "AWS IAM CompromisedKeyQuarantine Policy Attached to Role or Group",
		Description: "An AttachRolePolicy or AttachGroupPolicy call attached an AWSCompromisedKeyQuarantine policy. " +
			"Quarantining a role means its session credentials were exposed; quarantining a group affects every member.",
		Severity:  "medium",
		RiskScore: 47,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV3.html",
		},
		Threats: []ThreatMapping{credentialAccess},
		Notes: "Find which credential was exposed (for a role, its sessions' access keys in CloudTrail) and revoke " +
			"active sessions (AWSRevokeOlderSessions).",
		Match: Match{
			Actions: []string{"AttachRolePolicy", "AttachGroupPolicy"},
			Outcome: OutcomeSuccess,
			Field:   FieldRequestParameters,
			Markers: []string{quarantineMarker},
		},
	}

	// LegacyInlineQuarantineRule: the mechanism AWS used before managed
	// quarantine policies, an inline policy on the user.
	LegacyInlineQuarantineRule = &Rule{
		ID:      "7b67b4c0-7bf9-48bb-9927-76a6e68b52eb",
		Key:     "legacy-inline",
		Version: "1",
		Name:    "AWS IAM Legacy Exposed-Credential Inline Policy Put on User",
		Description: "A PutUserPolicy call added the inline policy AWSExposedCredentialPolicy_DO_NOT_REMOVE, which AWS " +
			"attached to users with exposed access keys before the managed AWSCompromisedKeyQuarantine policies existed.",
		Severity:  "high",
		RiskScore: 73,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html",
		},
		Threats: []ThreatMapping{credentialAccess},
		Notes: "Rotate and delete the user's access keys and review their use; leave the inline policy in place until " +
			"the support case is closed.",
		Match: Match{
			Actions: []string{"PutUserPolicy"},
			Outcome: OutcomeSuccess,
			Field:   FieldRequestParameters,
			Markers: []string{legacyMarker},
		},
	}
)

// AllRules are every rule this project knows, the Elastic rule first.
var AllRules = []*Rule{
	ElasticQuarantineRule, QuarantineAttachFailedRule, QuarantineDetachedRule,
	QuarantineRoleOrGroupRule, LegacyInlineQuarantineRule,
}

// ParseRules turns a --rules value into rules: "elastic" (the default: the
// Elastic rule alone), "all", or a comma-separated list of rule keys.
func ParseRules(spec string) ([]*Rule, error) {
	switch spec {
	case "", "elastic":
		return []*Rule{ElasticQuarantineRule}, nil
	case "all":
		return AllRules, nil
	}
	var out []*Rule
	seen := map[*Rule]bool{}
	for _, key := range strings.Split(spec, ",") {
		key = strings.TrimSpace(key)
		var found *Rule
		for _, r := range AllRules {
			if r.Key == key || r.ID == key {
				found = r
			}
		}
		if found == nil {
			return nil, fmt.Errorf("matcher: unknown rule %q (want all, elastic, or keys from %s)", key, ruleKeys())
		}
		if !seen[found] {
			seen[found] = true
			out = append(out, found)
		}
	}
	return out, nil
}

func ruleKeys() string {
	keys := make([]string, len(AllRules))
	for i, r := range AllRules {
		keys[i] = r.Key
	}
	return strings.Join(keys, ", ")
}

// WatchMatch is what a post-quarantine rule matches among the events of a
// watched user U (a WatchEntry): the event is in the entry's window, has
// Outcome, and one of Clauses holds. Which events are U's, and the window,
// are watch.go's business; a rule only says what it wants of them.
type WatchMatch struct {
	// Outcome is OutcomeSuccess for every post-quarantine rule: a call that
	// failed changed nothing (the quarantine policy doing its job is a
	// denied call), so it is counted in the case's context, not alerted on.
	Outcome string
	Clauses []WatchClause
}

// WatchClause is one way an event of U matches: U's part in it, its event
// source and names, and a marker its policy ARN must hold.
type WatchClause struct {
	// As is U's part: WatchActor (U made the call), WatchTarget (the call
	// acts on U: IAM's requestParameters.userName) or WatchEither.
	As string
	// EventSource, when set, must equal eventSource.
	EventSource string
	// Actions, when set, are the event names accepted (case-sensitive);
	// nil accepts any.
	Actions []string
	// PolicyARNMarker, when set, must be in requestParameters.policyArn
	// (case-sensitive).
	PolicyARNMarker string
}

// Values of WatchClause.As.
const (
	WatchActor  = "actor"
	WatchTarget = "target"
	WatchEither = "either"
)

// iamSource is the eventSource of IAM's API.
const iamSource = "iam.amazonaws.com"

// The post-quarantine rules: what a quarantined user does, or what is done
// to it, in the watch after the quarantine (--watch-for). They are on
// whenever a watchlist is set, never in Config.Rules, and tried in the order
// of PostQuarantineRules: an event gives one finding per watch entry, the
// first rule that matches, so that a detach by the user itself is reported
// as the detach and not also as activity. Their ids never change. Severities
// follow what the event means for the exposed credential: the quarantine
// gone is the credential fully usable again (critical, as attach-failed); a
// new credential survives the rotation of the exposed one (high, as the
// Elastic rule); any other successful call is the exposed credential, or a
// session it opened, still in use within what the quarantine allows
// (medium: the policy denies the dangerous calls, but someone holds the key).
var (
	// PostQuarantineDefenseEvasionRule: the quarantine policy detached from
	// the user, or an inline policy of the user deleted (the legacy
	// quarantine was an inline policy, and a Deny written by a responder is
	// one too), by anyone.
	PostQuarantineDefenseEvasionRule = &Rule{
		ID:      "4fa36cd2-2037-4749-98fb-f038ad0d03f5",
		Key:     "post-quarantine-defense-evasion",
		Version: "1",
		Name:    "AWS IAM Quarantine Removed from a Watched User",
		Description: "Within the watch after AWS quarantined an IAM user, the AWSCompromisedKeyQuarantine policy was detached " +
			"from the user, or an inline policy of the user was deleted. The exposed access key gets back the permissions the " +
			"quarantine denied.",
		Severity:  "critical",
		RiskScore: 99,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV3.html",
		},
		// T1562 Impair Defenses under Defense Evasion, as the detached
		// rule: the quarantine is the defense removed.
		Threats: []ThreatMapping{{Tactic: tacticDefenseEvasion, Techniques: []Technique{techniqueImpairDefenses}}},
		Notes: "Re-attach the quarantine policy and deactivate the user's access keys now. If the caller is not a " +
			"responder who closed the case, treat the caller's credentials as compromised too.",
		Watch: &WatchMatch{
			Outcome: OutcomeSuccess,
			Clauses: []WatchClause{
				{As: WatchTarget, EventSource: iamSource, Actions: []string{"DetachUserPolicy"}, PolicyARNMarker: quarantineMarker},
				{As: WatchTarget, EventSource: iamSource, Actions: []string{"DeleteUserPolicy"}},
			},
		},
	}

	// PostQuarantinePersistenceRule: a new access key or console password
	// for the user (by anyone), or made by the user (for anyone): a
	// credential that survives the rotation of the exposed key.
	PostQuarantinePersistenceRule = &Rule{
		ID:      "5f65c987-11ee-4c03-9b3d-8cd6983599d9",
		Key:     "post-quarantine-persistence",
		Version: "1",
		Name:    "AWS IAM Credential Created For or By a Watched User",
		Description: "Within the watch after AWS quarantined an IAM user, an access key or a login profile was created or a " +
			"password changed for the user, or by the user: a credential that outlives the exposed key.",
		Severity:  "high",
		RiskScore: 73,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/IAM/latest/UserGuide/id_credentials_access-keys.html",
			"https://attack.mitre.org/techniques/T1098/001/",
		},
		// T1098.001 Additional Cloud Credentials under Persistence: the
		// sub-technique names exactly these calls.
		Threats: []ThreatMapping{{Tactic: tacticPersistence, Techniques: []Technique{techniqueAdditionalCloudCredentials}}},
		Notes: "Delete the new key or login profile unless a responder made it as part of the case; list the user's keys " +
			"(aws iam list-access-keys) and review the caller.",
		Watch: &WatchMatch{
			Outcome: OutcomeSuccess,
			Clauses: []WatchClause{
				{As: WatchEither, EventSource: iamSource, Actions: []string{"CreateAccessKey", "CreateLoginProfile", "UpdateLoginProfile"}},
			},
		},
	}

	// PostQuarantineActivityRule: any other successful call the user made
	// (as itself or through a session it opened).
	PostQuarantineActivityRule = &Rule{
		ID:      "fa33cc09-e802-4dfd-83db-cf6a9e763cc3",
		Key:     "post-quarantine-activity",
		Version: "1",
		Name:    "AWS API Call Succeeded for a Quarantined IAM User",
		Description: "Within the watch after AWS quarantined an IAM user, a call made by the user, or by a session the user " +
			"opened, succeeded: the exposed credential is still in use, within what the quarantine policy allows.",
		Severity:  "medium",
		RiskScore: 47,
		Ruleset:   "quarantine-watch",
		References: []string{
			"https://docs.aws.amazon.com/aws-managed-policy/latest/reference/AWSCompromisedKeyQuarantineV3.html",
		},
		// T1078.004 Valid Accounts: Cloud Accounts under Initial Access,
		// as the Elastic rule maps the exposed key's use.
		Threats: []ThreatMapping{{Tactic: tacticInitialAccess, Techniques: []Technique{techniqueCloudAccounts}}},
		Notes: "Deactivate the user's access keys if the support case allows, and check the source IP address and user " +
			"agent against the user's usual ones in the case's context document.",
		Watch: &WatchMatch{
			Outcome: OutcomeSuccess,
			Clauses: []WatchClause{{As: WatchActor}},
		},
	}
)

// PostQuarantineRules are the rules evaluated on the events of watched
// users, in the order they are tried.
var PostQuarantineRules = []*Rule{PostQuarantineDefenseEvasionRule, PostQuarantinePersistenceRule, PostQuarantineActivityRule}
