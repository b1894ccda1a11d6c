package producer

import (
	"bytes"
	"cmp"
	"crypto/sha256"
	_ "embed"
	"encoding/hex"
	"encoding/json"
	"net/netip"
	"slices"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// ECS format constants.
const (
	// FormatECS is the alert-format header of ECS alerts.
	FormatECS = "ecs"
	// ECSVersion is the ECS version the document follows (ecs.version).
	// The threat.* arrays are the ECS 8.x shape.
	ECSVersion = "8.11.0"
	// SchemaVersion is the version of our ECS document's shape
	// (quarantine_watch.schema_version and the schema-version header). It
	// changes only when a field is renamed, removed or changes type;
	// adding an optional field does not change it.
	SchemaVersion = "1"
	// ECSSchemaID is the $id of the embedded JSON Schema.
	ECSSchemaID = "https://github.com/quarantine-watch/quarantine-watch/producer/schema/ecs-alert.schema.json"
)

//go:embed schema/ecs-alert.schema.json
var ecsSchema []byte

// ECSSchema returns the JSON Schema (draft 2020-12) that every ECS alert
// document validates against. It is a copy the caller may keep.
func ECSSchema() []byte { return bytes.Clone(ecsSchema) }

// ECS is the Encoder of the default alert format, an ECS document with
// event.kind "alert" (see ECSAlert for what each field holds).
type ECS struct{}

// Format returns FormatECS.
func (ECS) Format() string { return FormatECS }

// SchemaVersion returns SchemaVersion.
func (ECS) SchemaVersion() string { return SchemaVersion }

// Encode returns the ECS alert document for f as JSON.
func (ECS) Encode(f matcher.Finding, src Source, detected time.Time) ([]byte, error) {
	a, err := NewECSAlert(f, src, detected)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// "MITRE ATT&CK" and event.original stay readable; the document is
	// never embedded in HTML.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(a); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// ECSAlert is the ECS alert document, one per finding. Optional fields are
// omitted rather than sent empty. Fields outside ECS live under aws.*
// (named as Elastic's AWS integration names them) or quarantine_watch.*.
type ECSAlert struct {
	// Timestamp is the CloudTrail eventTime in RFC 3339 UTC; when the
	// event has none that parses, it is the detection time (the raw value
	// is still in event.original).
	Timestamp string `json:"@timestamp"`
	// Message is a one-line human summary of the finding.
	Message         string             `json:"message"`
	ECS             ECSVersionField    `json:"ecs"`
	Event           ECSEvent           `json:"event"`
	Rule            ECSRule            `json:"rule"`
	Threat          *ECSThreat         `json:"threat,omitempty"`
	Cloud           ECSCloud           `json:"cloud"`
	User            *ECSUser           `json:"user,omitempty"`
	Group           *ECSGroup          `json:"group,omitempty"`
	Source          *ECSSource         `json:"source,omitempty"`
	UserAgent       *ECSUserAgent      `json:"user_agent,omitempty"`
	AWS             ECSAWS             `json:"aws"`
	QuarantineWatch ECSQuarantineWatch `json:"quarantine_watch"`
}

// ECSVersionField is ecs.*.
type ECSVersionField struct {
	Version string `json:"version"`
}

// ECSEvent is event.*.
type ECSEvent struct {
	Kind    string `json:"kind"`    // always "alert"
	Module  string `json:"module"`  // always "aws"
	Dataset string `json:"dataset"` // always "aws.cloudtrail"
	// Category and Type are what Elastic's CloudTrail pipeline sets for
	// the call (see ecsCategorization); Category is absent for a call it
	// does not categorize.
	Category []string `json:"category,omitempty"`
	Type     []string `json:"type"`
	Provider string   `json:"provider,omitempty"`
	Action   string   `json:"action,omitempty"`
	// Outcome is the outcome the rule matched on (matcher.Event.Outcome).
	Outcome string `json:"outcome"`
	ID      string `json:"id,omitempty"`
	// Created is the detection time in RFC 3339 UTC.
	Created string `json:"created"`
	// Severity is numeric as ECS requires: Elastic's default risk score
	// for the rule's severity band (low 21, medium 47, high 73, critical
	// 99), so it stays put when a rule's risk score is tuned; the rule's
	// own RiskScore when the band is not one of those.
	Severity  int `json:"severity"`
	RiskScore int `json:"risk_score"`
	// Original is the event verbatim (matcher.Event.Original) as a JSON
	// string. JSON cannot carry invalid UTF-8, which becomes U+FFFD here;
	// Hash is of the bytes before that.
	Original string `json:"original"`
	// Hash is the lowercase hex SHA-256 of matcher.Event.Original.
	Hash string `json:"hash"`
}

// ECSRule is rule.*.
type ECSRule struct {
	ID      string `json:"id"`
	Name    string `json:"name"`
	Version string `json:"version,omitempty"` // matcher.Rule.Version
	// Description is what the rule looks for (matcher.Rule.Description).
	Description string `json:"description,omitempty"`
	// Reference is the rule's first reference: ECS has one URL here.
	Reference string `json:"reference,omitempty"`
	Ruleset   string `json:"ruleset,omitempty"`
}

// ECSThreat is threat.*. ECS 8.x keeps the ATT&CK ids, names and
// references of the rule's tactics, techniques and sub-techniques as
// parallel arrays, each in the order of the rule's mapping.
type ECSThreat struct {
	Framework string              `json:"framework"` // always "MITRE ATT&CK"
	Technique *ECSThreatTechnique `json:"technique,omitempty"`
	Tactic    *ECSThreatRef       `json:"tactic,omitempty"`
}

// ECSThreatRef is threat.tactic.* or threat.technique.subtechnique.*.
type ECSThreatRef struct {
	ID        []string `json:"id"`
	Name      []string `json:"name"`
	Reference []string `json:"reference"`
}

// ECSThreatTechnique is threat.technique.*.
type ECSThreatTechnique struct {
	ECSThreatRef
	Subtechnique *ECSThreatRef `json:"subtechnique,omitempty"`
}

// ECSCloud is cloud.*.
type ECSCloud struct {
	Provider string           `json:"provider"` // always "aws"
	Account  *ECSCloudAccount `json:"account,omitempty"`
	Region   string           `json:"region,omitempty"`
}

// ECSCloudAccount is cloud.account.*: recipientAccountId, or the caller's
// account when the record has none.
type ECSCloudAccount struct {
	ID string `json:"id"`
}

// ECSUser is user.*: the caller (name and id when CloudTrail names them)
// and, under target, the IAM user the policy was attached to.
type ECSUser struct {
	Name   string         `json:"name,omitempty"`
	ID     string         `json:"id,omitempty"`
	Target *ECSUserTarget `json:"target,omitempty"`
}

// ECSUserTarget is user.target.*.
type ECSUserTarget struct {
	Name string `json:"name"`
}

// ECSGroup is group.*: the IAM group the call acted on, as Elastic's
// pipeline maps requestParameters.groupName.
type ECSGroup struct {
	Name string `json:"name"`
}

// ECSSource is source.*. Address is sourceIPAddress verbatim; IP is set
// only when it parses as an IP address, because CloudTrail puts a service
// name there ("ec2.amazonaws.com", "AWS Internal") for calls made by AWS.
type ECSSource struct {
	Address string `json:"address"`
	IP      string `json:"ip,omitempty"`
}

// ECSUserAgent is user_agent.*.
type ECSUserAgent struct {
	Original string `json:"original"`
}

// ECSAWS is aws.*.
type ECSAWS struct {
	CloudTrail ECSCloudTrail `json:"cloudtrail"`
}

// ECSCloudTrail is aws.cloudtrail.*, named as Elastic's AWS integration
// names them.
type ECSCloudTrail struct {
	// RequestParameters is requestParameters as text: the JSON object
	// compacted, or Elastic's flattened "{key=value, ...}" text verbatim
	// when the input was already ECS.
	RequestParameters string                 `json:"request_parameters,omitempty"`
	ErrorCode         string                 `json:"error_code,omitempty"`
	ErrorMessage      string                 `json:"error_message,omitempty"`
	UserIdentity      *ECSCloudTrailIdentity `json:"user_identity,omitempty"`
}

// ECSCloudTrailIdentity is aws.cloudtrail.user_identity.*: the caller.
type ECSCloudTrailIdentity struct {
	Type        string `json:"type,omitempty"`
	ARN         string `json:"arn,omitempty"`
	AccessKeyID string `json:"access_key_id,omitempty"`
}

// ECSQuarantineWatch is quarantine_watch.*: what ECS has no field for.
type ECSQuarantineWatch struct {
	SchemaVersion string `json:"schema_version"`
	// AlertID is FindingAlertID, also the Kafka record key.
	AlertID string `json:"alert_id"`
	// InputShape is the delivery shape the event arrived in
	// (matcher.Shape.String()).
	InputShape string   `json:"input_shape"`
	Source     ECSInput `json:"source"`
	// Policy is the policy the call attached, detached or put. It is here
	// and not under aws.* so that it never collides with a field
	// Elastic's integration may add.
	Policy *ECSPolicy `json:"policy,omitempty"`
	// Target is the IAM identity the call acted on, whatever its kind:
	// ECS has user.target and group but no field for a role.
	Target *ECSTarget `json:"target,omitempty"`
	// Notes tells a responder what to look at first (matcher.Rule.Notes).
	Notes string `json:"notes,omitempty"`
	// Watch is the watch a post-quarantine finding is about; absent for
	// every other rule.
	Watch *ECSWatch `json:"watch,omitempty"`
}

// ECSWatch is quarantine_watch.watch.* (and, in OCSF,
// unmapped.quarantine_watch.watch.*): the watch of a post-quarantine
// finding (matcher.Finding.Watch). AlertID is the id of the alert that
// opened it, the key a SIEM joins this alert on to that one and to its
// context document; ECS has no field for another alert's id (related.*
// holds hashes, hosts, IPs and users only).
type ECSWatch struct {
	AlertID  string `json:"alert_id"`
	Account  string `json:"account"`
	UserName string `json:"user_name"`
	// OpenedAt and Until bound the watch's window of event time,
	// (OpenedAt, Until], in RFC 3339 UTC.
	OpenedAt string `json:"opened_at"`
	Until    string `json:"until"`
}

// newECSWatch returns the watch of f, nil when f is not a post-quarantine
// finding.
func newECSWatch(f *matcher.Finding) *ECSWatch {
	w := f.Watch
	if w == nil {
		return nil
	}
	ts := func(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }
	return &ECSWatch{AlertID: w.AlertID, Account: w.Account, UserName: w.UserName, OpenedAt: ts(w.OpenedAt), Until: ts(w.Until)}
}

// ECSInput is quarantine_watch.source.*: the Kafka record the event was
// read from, and the event's position inside that record's value.
type ECSInput struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Index     int    `json:"index"`
}

// ECSTarget is quarantine_watch.target.*: matcher.Event.TargetKind
// ("user", "role" or "group") and TargetName.
type ECSTarget struct {
	Kind string `json:"kind"`
	Name string `json:"name"`
}

// ECSPolicy is quarantine_watch.policy.*: the managed policy's ARN, or
// the inline policy's name (the pre-2020 PutUserPolicy mechanism).
type ECSPolicy struct {
	ARN  string `json:"arn,omitempty"`
	Name string `json:"name,omitempty"`
}

// severityScores are Elastic's default risk scores per severity band.
var severityScores = map[string]int{"low": 21, "medium": 47, "high": 73, "critical": 99}

// NewECSAlert builds the ECS alert document for f, read from src and
// detected at detected.
func NewECSAlert(f matcher.Finding, src Source, detected time.Time) (*ECSAlert, error) {
	if f.Rule == nil {
		return nil, ErrNoRule
	}
	if detected.IsZero() {
		return nil, ErrNoDetectionTime
	}
	r, e := f.Rule, &f.Event
	created := detected.UTC().Format(time.RFC3339Nano)
	sum := sha256.Sum256(e.Original)

	a := &ECSAlert{
		Timestamp: created,
		Message:   describe(e).Message,
		ECS:       ECSVersionField{Version: ECSVersion},
		Event: ECSEvent{
			Kind:      "alert",
			Module:    "aws",
			Dataset:   "aws.cloudtrail",
			Provider:  e.EventSource,
			Action:    e.EventName,
			Outcome:   cmp.Or(e.Outcome, "unknown"),
			ID:        e.EventID,
			Created:   created,
			Severity:  r.RiskScore,
			RiskScore: r.RiskScore,
			Original:  string(e.Original),
			Hash:      hex.EncodeToString(sum[:]),
		},
		Rule: ECSRule{
			ID:          r.ID,
			Name:        r.Name,
			Version:     r.Version,
			Description: r.Description,
			Ruleset:     r.Ruleset,
		},
		Cloud: ECSCloud{Provider: "aws", Region: e.AWSRegion},
		AWS: ECSAWS{CloudTrail: ECSCloudTrail{
			RequestParameters: requestParameters(e.RequestParameters),
			ErrorCode:         e.ErrorCode,
			ErrorMessage:      e.ErrorMessage,
		}},
		QuarantineWatch: ECSQuarantineWatch{
			SchemaVersion: SchemaVersion,
			AlertID:       FindingAlertID(&f),
			InputShape:    f.Shape.String(),
			Source:        ECSInput{Topic: src.Topic, Partition: src.Partition, Offset: src.Offset, Index: f.Index},
			Notes:         r.Notes,
			Watch:         newECSWatch(&f),
		},
	}
	// In UTC, "0000-01-01T00:00:00+01:00" is in year -1, which RFC 3339
	// cannot write.
	if t, err := time.Parse(time.RFC3339Nano, e.EventTime); err == nil && t.UTC().Year() >= 0 {
		a.Timestamp = t.UTC().Format(time.RFC3339Nano)
	}
	if s, ok := severityScores[r.Severity]; ok {
		a.Event.Severity = s
	}
	if len(r.References) > 0 {
		a.Rule.Reference = r.References[0]
	}
	a.Threat = ecsThreat(r)
	a.Event.Category, a.Event.Type = ecsCategorization(e.EventName)
	if e.TargetKind == matcher.TargetGroup && e.TargetName != "" {
		a.Group = &ECSGroup{Name: e.TargetName}
	}
	if e.TargetKind != "" && e.TargetName != "" {
		a.QuarantineWatch.Target = &ECSTarget{Kind: e.TargetKind, Name: e.TargetName}
	}
	if acct := cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID); acct != "" {
		a.Cloud.Account = &ECSCloudAccount{ID: acct}
	}
	target := targetUser(e)
	if u := (ECSUser{Name: e.UserIdentity.UserName, ID: e.UserIdentity.PrincipalID}); u.Name != "" || u.ID != "" || target != "" {
		if target != "" {
			u.Target = &ECSUserTarget{Name: target}
		}
		a.User = &u
	}
	if e.SourceIPAddress != "" {
		a.Source = &ECSSource{Address: e.SourceIPAddress}
		// A zone ("fe80::1%eth0") is not an IP to Elasticsearch's ip type.
		if ip, err := netip.ParseAddr(e.SourceIPAddress); err == nil && ip.Zone() == "" {
			a.Source.IP = ip.String()
		}
	}
	if e.UserAgent != "" {
		a.UserAgent = &ECSUserAgent{Original: e.UserAgent}
	}
	if id := e.UserIdentity; id.Type != "" || id.ARN != "" || id.AccessKeyID != "" {
		a.AWS.CloudTrail.UserIdentity = &ECSCloudTrailIdentity{Type: id.Type, ARN: id.ARN, AccessKeyID: id.AccessKeyID}
	}
	if e.PolicyARN != "" || e.PolicyName != "" {
		a.QuarantineWatch.Policy = &ECSPolicy{ARN: e.PolicyARN, Name: e.PolicyName}
	}
	return a, nil
}

// ecsThreat is the rule's ATT&CK mapping as ECS threat.* arrays, nil when
// the rule maps nothing. An entry appears once even when two tactics share
// it.
func ecsThreat(r *matcher.Rule) *ECSThreat {
	var tactics, techniques, subtechniques ECSThreatRef
	add := func(ref *ECSThreatRef, t matcher.Threat) {
		if t.ID == "" || slices.Contains(ref.ID, t.ID) {
			return
		}
		ref.ID = append(ref.ID, t.ID)
		ref.Name = append(ref.Name, t.Name)
		ref.Reference = append(ref.Reference, t.Reference)
	}
	for _, m := range r.Threats {
		add(&tactics, m.Tactic)
		for _, tech := range m.Techniques {
			add(&techniques, tech.Threat)
			for _, sub := range tech.Subtechniques {
				add(&subtechniques, sub)
			}
		}
	}
	if tactics.ID == nil && techniques.ID == nil {
		return nil
	}
	t := &ECSThreat{Framework: "MITRE ATT&CK"}
	if tactics.ID != nil {
		t.Tactic = &tactics
	}
	if techniques.ID != nil {
		t.Technique = &ECSThreatTechnique{ECSThreatRef: techniques}
		if subtechniques.ID != nil {
			t.Technique.Subtechnique = &subtechniques
		}
	}
	return t
}

// targetUser is the IAM user the call acted on, "" when it acted on a
// role or a group.
func targetUser(e *matcher.Event) string {
	if e.TargetKind == matcher.TargetUser {
		return e.TargetName
	}
	return ""
}

// requestParameters returns p compacted when it is JSON (so the text does
// not depend on how the record was indented), else verbatim: in ShapeECS it
// is Elastic's flattened text. A JSON null (calls without parameters) is
// no parameters.
func requestParameters(p []byte) string {
	var buf bytes.Buffer
	if err := json.Compact(&buf, p); err != nil {
		return string(p)
	}
	if buf.String() == "null" {
		return ""
	}
	return buf.String()
}

// ecsCategorization is event.category and event.type for a call, as
// Elastic's CloudTrail pipeline sets them (its "Add ECS categorization"
// table in packages/aws/data_stream/cloudtrail/elasticsearch/ingest_pipeline/
// default.yml, and its expected output for AttachRolePolicy, which the
// table does not list: ["iam"], ["change"]). DetachRolePolicy, which
// neither shows, is taken to be what AttachRolePolicy is. A call the
// pipeline does not categorize gets what it gets there: no category and
// type ["info"].
func ecsCategorization(eventName string) (category, typ []string) {
	switch eventName {
	case "AttachUserPolicy", "DetachUserPolicy", "PutUserPolicy", "DeleteUserPolicy":
		return []string{"iam"}, []string{"user", "change"}
	case "AttachGroupPolicy", "DetachGroupPolicy", "PutGroupPolicy", "DeleteGroupPolicy":
		return []string{"iam"}, []string{"group", "change"}
	case "AttachRolePolicy", "DetachRolePolicy":
		return []string{"iam"}, []string{"change"}
	}
	return nil, []string{"info"}
}
