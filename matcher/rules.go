package matcher

// Threat is one MITRE ATT&CK reference.
type Threat struct {
	ID        string
	Name      string
	Reference string
}

// Rule is a detection rule: what it is called and how serious its findings
// are. What it matches is decided by the matcher, from the rule's ID.
type Rule struct {
	ID          string
	Name        string
	Description string
	Severity    string // low, medium, high, critical
	RiskScore   int
	Ruleset     string
	References  []string
	Technique   Threat
	Tactic      Threat
	// Notes tells a responder what to look at first.
	Notes string
}

// ElasticQuarantineRule is Elastic's "AWS IAM CompromisedKeyQuarantine
// Policy Attached to User", the rule this project evaluates on the stream.
var ElasticQuarantineRule = &Rule{
	ID:   "0b79f5c0-2c31-4fea-86cd-e62644278205",
	Name: "AWS IAM CompromisedKeyQuarantine Policy Attached to User",
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
	Technique: Threat{ID: "T1552", Name: "Unsecured Credentials", Reference: "https://attack.mitre.org/techniques/T1552/"},
	Tactic:    Threat{ID: "TA0006", Name: "Credential Access", Reference: "https://attack.mitre.org/tactics/TA0006/"},
	Notes: "AWS attached a quarantine policy because an access key of this user was exposed. " +
		"Rotate and delete the key, review CloudTrail for its use since the exposure, and keep the policy " +
		"attached until the AWS support case is closed.",
}
