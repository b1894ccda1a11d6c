package producer

import (
	"bytes"
	"cmp"
	_ "embed"
	"encoding/json"
	"net/netip"
	"runtime/debug"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/quarantine-watch/quarantine-watch/matcher"
)

// OCSF format constants.
const (
	// FormatOCSF is the alert-format header of OCSF alerts.
	FormatOCSF = "ocsf"
	// OCSFVersion is the OCSF schema version the document follows
	// (metadata.version). Every field used exists in 1.3.0; later 1.x
	// versions only add fields.
	OCSFVersion = "1.3.0"
	// OCSFSchemaVersion is the version of our OCSF document's shape (the
	// schema-version header and unmapped.quarantine_watch.schema_version).
	// Like SchemaVersion for ECS, it changes only when a field is renamed,
	// removed or changes type.
	OCSFSchemaVersion = "1"
	// OCSFSchemaID is the $id of the embedded JSON Schema.
	OCSFSchemaID = "https://github.com/quarantine-watch/quarantine-watch/producer/schema/ocsf-detection-finding.schema.json"
	// OCSFAttackVersion is attack.version, the ATT&CK matrix version of the
	// rules' technique and tactic ids. matcher.Rule does not say which
	// release its mapping was made against; T1552 Unsecured Credentials and
	// TA0006 Credential Access read the same in v14 as in later releases.
	OCSFAttackVersion = "v14"
	// OCSFProductName is metadata.product.name and vendor_name.
	OCSFProductName = "quarantine-watch"
)

// OCSF enumeration values and fixed strings the document uses.
const (
	ocsfCategoryFindings   = 2
	ocsfClassDetection     = 2004
	ocsfActivityCreate     = 1
	ocsfActivityUpdate     = 2
	ocsfStatusNew          = 1
	ocsfAnalyticRule       = 1
	ocsfAccountAWS         = 10
	ocsfTypeOther          = 99
	ocsfSeverityUnknown    = 0
	ocsfSeverityOther      = 99
	ocsfDataSource         = "AWS CloudTrail"
	ocsfResourceUser       = "AWS::IAM::User"
	ocsfResourcePolicy     = "AWS::IAM::Policy"
	ocsfResourceUserPolicy = "AWS::IAM::UserPolicy"
)

// ocsfSeverities maps a rule's severity band to OCSF severity_id.
var ocsfSeverities = map[string]struct {
	id      int
	caption string
}{
	"low":      {2, "Low"},
	"medium":   {3, "Medium"},
	"high":     {4, "High"},
	"critical": {5, "Critical"},
}

//go:embed schema/ocsf-detection-finding.schema.json
var ocsfSchema []byte

// OCSFSchema returns the JSON Schema (draft 2020-12) that every OCSF alert
// document validates against. It pins our document, not the whole of OCSF:
// every object is closed, so only the fields we write are allowed. It is a
// copy the caller may keep.
func OCSFSchema() []byte { return bytes.Clone(ocsfSchema) }

// OCSF is the Encoder of the OCSF alert format: an OCSF 1.3.0 Detection
// Finding (class_uid 2004, activity Create), see OCSFDetectionFinding.
type OCSF struct{}

// Format returns FormatOCSF.
func (OCSF) Format() string { return FormatOCSF }

// SchemaVersion returns OCSFSchemaVersion.
func (OCSF) SchemaVersion() string { return OCSFSchemaVersion }

// Encode returns the OCSF Detection Finding for f as JSON.
func (OCSF) Encode(f matcher.Finding, src Source, detected time.Time) ([]byte, error) {
	d, err := NewOCSFDetectionFinding(f, src, detected)
	if err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	// As in ECS: "MITRE ATT&CK" and raw_data stay readable.
	enc.SetEscapeHTML(false)
	if err := enc.Encode(d); err != nil {
		return nil, err
	}
	return bytes.TrimSuffix(buf.Bytes(), []byte("\n")), nil
}

// OCSFDetectionFinding is the OCSF 1.3.0 Detection Finding, one per
// finding. Optional fields are omitted rather than sent empty. Times are
// epoch milliseconds (OCSF timestamp_t).
//
// Detection Finding has no src_endpoint or http_request of its own in
// 1.3.0, and actor and api only through the host and cloud profiles: the
// caller, where it called from and the API call are kept together in
// evidences[0], as OCSF's own mappings of AWS findings put them. The
// caller's user agent has no place in a 1.3.0 Detection Finding and is in
// unmapped.cloudtrail.userAgent. ATT&CK is in finding_info.attacks; the
// top-level attacks belongs to the security_control profile, which a
// detector that blocks nothing does not apply.
type OCSFDetectionFinding struct {
	ActivityID   int    `json:"activity_id"`   // 1 Create
	ActivityName string `json:"activity_name"` // "Create"
	CategoryUID  int    `json:"category_uid"`  // 2 Findings
	CategoryName string `json:"category_name"` // "Findings"
	ClassUID     int    `json:"class_uid"`     // 2004 Detection Finding
	ClassName    string `json:"class_name"`    // "Detection Finding"
	TypeUID      int64  `json:"type_uid"`      // class_uid*100 + activity_id
	TypeName     string `json:"type_name"`     // "Detection Finding: Create"
	// SeverityID is the rule's severity band: low 2, medium 3, high 4,
	// critical 5; 99 (Other) for another band, 0 (Unknown) for none.
	SeverityID int    `json:"severity_id"`
	Severity   string `json:"severity"`
	StatusID   int    `json:"status_id"` // 1 New
	Status     string `json:"status"`    // "New"
	// Time is the detection time.
	Time int64 `json:"time"`
	// Message is the same one-line summary as the ECS message (see
	// description).
	Message string `json:"message"`
	// RiskScore is the rule's risk score (73 for the quarantine rule).
	RiskScore   int              `json:"risk_score"`
	Metadata    OCSFMetadata     `json:"metadata"`
	FindingInfo OCSFFindingInfo  `json:"finding_info"`
	Cloud       OCSFCloud        `json:"cloud"`
	Evidences   []OCSFEvidence   `json:"evidences,omitempty"`
	Resources   []OCSFResource   `json:"resources,omitempty"`
	Remediation *OCSFRemediation `json:"remediation,omitempty"`
	// Enrichments is set only on the context document's Update of the
	// finding (NewOCSFContext); an alert has none.
	Enrichments []OCSFEnrichment `json:"enrichments,omitempty"`
	RawData     string           `json:"raw_data"`
	Unmapped    OCSFUnmapped     `json:"unmapped"`
}

// OCSFMetadata is metadata.*.
type OCSFMetadata struct {
	Version string      `json:"version"` // OCSFVersion
	Product OCSFProduct `json:"product"`
	// Profiles is ["cloud"]: the cloud object is the cloud profile's.
	Profiles []string `json:"profiles"`
	// UID is the alert id, as finding_info.uid: one document per alert.
	UID string `json:"uid"`
	// OriginalTime is the CloudTrail eventTime verbatim.
	OriginalTime string `json:"original_time,omitempty"`
}

// OCSFProduct is metadata.product.*: this program.
type OCSFProduct struct {
	Name       string `json:"name"`
	VendorName string `json:"vendor_name"`
	// Version is the main module's version from the binary's build info,
	// omitted in a development build.
	Version string `json:"version,omitempty"`
}

// OCSFFindingInfo is finding_info.*.
type OCSFFindingInfo struct {
	// UID is FindingAlertID, also the Kafka record key and the ECS
	// quarantine_watch.alert_id.
	UID string `json:"uid"`
	// Title says what happened: the call, the policy and the identity it
	// acted on, e.g. "AWSCompromisedKeyQuarantineV2 detached from IAM
	// role web-app"; the rule's name is in analytic.name.
	Title string `json:"title"`
	// Desc is Title with who, where, the event name and its error: the
	// message, with the error message as well as the code.
	Desc string `json:"desc,omitempty"`
	// Types is the ATT&CK tactic's name, when the rule has one.
	Types    []string     `json:"types,omitempty"`
	Analytic OCSFAnalytic `json:"analytic"`
	Attacks  []OCSFAttack `json:"attacks,omitempty"`
	// DataSources is ["AWS CloudTrail"].
	DataSources []string `json:"data_sources"`
	// CreatedTime is the detection time.
	CreatedTime int64 `json:"created_time"`
	// FirstSeenTime and LastSeenTime are the CloudTrail eventTime, absent
	// when it does not parse (metadata.original_time has it verbatim).
	FirstSeenTime *int64 `json:"first_seen_time,omitempty"`
	LastSeenTime  *int64 `json:"last_seen_time,omitempty"`
	// RelatedEvents holds the CloudTrail event, by its eventID.
	RelatedEvents []OCSFRelatedEvent `json:"related_events,omitempty"`
}

// OCSFAnalytic is finding_info.analytic.*: the rule.
type OCSFAnalytic struct {
	UID  string `json:"uid"`
	Name string `json:"name"`
	// Desc is what the rule looks for (matcher.Rule.Description).
	Desc string `json:"desc,omitempty"`
	// Version is matcher.Rule.Version.
	Version string `json:"version,omitempty"`
	TypeID  int    `json:"type_id"` // 1 Rule
	Type    string `json:"type"`    // "Rule"
}

// OCSFAttack is one finding_info.attacks[] entry (the OCSF attack object):
// one per tactic, technique and sub-technique of the rule's mapping.
type OCSFAttack struct {
	SubTechnique *OCSFAttackEntity `json:"sub_technique,omitempty"`
	Technique    *OCSFAttackEntity `json:"technique,omitempty"`
	Tactic       *OCSFAttackEntity `json:"tactic,omitempty"`
	Version      string            `json:"version"` // OCSFAttackVersion
}

// OCSFAttackEntity is an ATT&CK technique or tactic.
type OCSFAttackEntity struct {
	UID    string `json:"uid"`
	Name   string `json:"name,omitempty"`
	SrcURL string `json:"src_url,omitempty"`
}

// OCSFRelatedEvent is finding_info.related_events[]: the CloudTrail event.
type OCSFRelatedEvent struct {
	UID string `json:"uid"` // CloudTrail eventID
}

// OCSFCloud is cloud.*.
type OCSFCloud struct {
	Provider string `json:"provider"` // always "AWS"
	// Account is recipientAccountId, or the caller's account when the
	// record has none.
	Account *OCSFAccount `json:"account,omitempty"`
	Region  string       `json:"region,omitempty"`
}

// OCSFAccount is an AWS account (type_id 10).
type OCSFAccount struct {
	UID    string `json:"uid"`
	TypeID int    `json:"type_id"` // 10 AWS Account
	Type   string `json:"type"`    // "AWS Account"
}

// OCSFEvidence is evidences[]: the API call that triggered the detection.
type OCSFEvidence struct {
	// Actor is the caller (userIdentity).
	Actor *OCSFActor `json:"actor,omitempty"`
	API   *OCSFAPI   `json:"api,omitempty"`
	// SrcEndpoint is sourceIPAddress: ip when it is an IP address, else
	// svc_name, because CloudTrail puts a service name there
	// ("ec2.amazonaws.com", "AWS Internal") for calls made by AWS.
	SrcEndpoint *OCSFEndpoint `json:"src_endpoint,omitempty"`
	// User is the IAM user the policy was attached to.
	User *OCSFUser `json:"user,omitempty"`
}

// OCSFActor is evidences[].actor.*.
type OCSFActor struct {
	User *OCSFUser `json:"user"`
}

// OCSFUser is an OCSF user: the caller under actor, the target IAM user
// under evidences[].user.
type OCSFUser struct {
	// UID is the caller's ARN.
	UID string `json:"uid,omitempty"`
	// UIDAlt is the caller's principalId.
	UIDAlt string `json:"uid_alt,omitempty"`
	Name   string `json:"name,omitempty"`
	// Type is the CloudTrail userIdentity.type ("AssumedRole", "IAMUser",
	// "Root"), with type_id 99 (Other): OCSF's user types (User, Admin,
	// System) say nothing CloudTrail tells.
	Type   string `json:"type,omitempty"`
	TypeID int    `json:"type_id,omitempty"`
	// CredentialUID is the caller's access key id.
	CredentialUID string       `json:"credential_uid,omitempty"`
	Account       *OCSFAccount `json:"account,omitempty"`
}

// OCSFAPI is evidences[].api.*.
type OCSFAPI struct {
	Operation string           `json:"operation"` // eventName
	Service   *OCSFService     `json:"service,omitempty"`
	Response  *OCSFAPIResponse `json:"response,omitempty"`
}

// OCSFService is evidences[].api.service.*.
type OCSFService struct {
	Name string `json:"name"` // eventSource, e.g. "iam.amazonaws.com"
}

// OCSFAPIResponse is evidences[].api.response.*: set only when the call
// failed.
type OCSFAPIResponse struct {
	Error        string `json:"error,omitempty"`         // errorCode
	ErrorMessage string `json:"error_message,omitempty"` // errorMessage
}

// OCSFEndpoint is evidences[].src_endpoint.*.
type OCSFEndpoint struct {
	IP      string `json:"ip,omitempty"`
	SvcName string `json:"svc_name,omitempty"`
}

// OCSFResource is resources[]: the IAM user quarantined and the policy
// attached, with their AWS resource types.
type OCSFResource struct {
	Type string `json:"type"`
	UID  string `json:"uid,omitempty"`
	Name string `json:"name,omitempty"`
}

// OCSFRemediation is remediation.*: the rule's notes and references.
type OCSFRemediation struct {
	Desc       string   `json:"desc"`
	References []string `json:"references,omitempty"`
}

// OCSFUnmapped is unmapped.*: what OCSF 1.3.0 has no field for.
type OCSFUnmapped struct {
	// CloudTrail holds CloudTrail fields under their CloudTrail names.
	CloudTrail      *OCSFUnmappedCloudTrail `json:"cloudtrail,omitempty"`
	QuarantineWatch OCSFUnmappedQW          `json:"quarantine_watch"`
}

// OCSFUnmappedCloudTrail is unmapped.cloudtrail.*.
type OCSFUnmappedCloudTrail struct {
	UserAgent string `json:"userAgent,omitempty"`
	// RequestParameters is as ECS aws.cloudtrail.request_parameters:
	// compacted JSON, or Elastic's flattened text for ECS input.
	RequestParameters string `json:"requestParameters,omitempty"`
}

// OCSFUnmappedQW is unmapped.quarantine_watch.*.
type OCSFUnmappedQW struct {
	SchemaVersion string `json:"schema_version"`
	// InputShape is the delivery shape (matcher.Shape.String()).
	InputShape string    `json:"input_shape"`
	Source     OCSFInput `json:"source"`
	// Watch is the watch a post-quarantine finding is about (see
	// ECSWatch); absent for every other rule.
	Watch *ECSWatch `json:"watch,omitempty"`
}

// OCSFInput is unmapped.quarantine_watch.source.*: the Kafka record the
// event was read from, and the event's position inside that record's
// value.
type OCSFInput struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Offset    int64  `json:"offset"`
	Index     int    `json:"index"`
}

// ocsfProductVersion is the main module's version, "" in a development
// build (as `quarantine-watch version` falls back to it).
var ocsfProductVersion = sync.OnceValue(func() string {
	if bi, ok := debug.ReadBuildInfo(); ok && bi.Main.Version != "(devel)" {
		return bi.Main.Version
	}
	return ""
})

// NewOCSFDetectionFinding builds the OCSF Detection Finding for f, read
// from src and detected at detected.
func NewOCSFDetectionFinding(f matcher.Finding, src Source, detected time.Time) (*OCSFDetectionFinding, error) {
	if f.Rule == nil {
		return nil, ErrNoRule
	}
	if detected.IsZero() {
		return nil, ErrNoDetectionTime
	}
	r, e := f.Rule, &f.Event
	alertID := FindingAlertID(&f)
	now := detected.UnixMilli()
	what := describe(e)

	d := &OCSFDetectionFinding{
		ActivityID:   ocsfActivityCreate,
		ActivityName: "Create",
		CategoryUID:  ocsfCategoryFindings,
		CategoryName: "Findings",
		ClassUID:     ocsfClassDetection,
		ClassName:    "Detection Finding",
		TypeUID:      ocsfClassDetection*100 + ocsfActivityCreate,
		TypeName:     "Detection Finding: Create",
		SeverityID:   ocsfSeverityUnknown,
		Severity:     "Unknown",
		StatusID:     ocsfStatusNew,
		Status:       "New",
		Time:         now,
		Message:      what.Message,
		RiskScore:    r.RiskScore,
		Metadata: OCSFMetadata{
			Version:      OCSFVersion,
			Product:      OCSFProduct{Name: OCSFProductName, VendorName: OCSFProductName, Version: ocsfProductVersion()},
			Profiles:     []string{"cloud"},
			UID:          alertID,
			OriginalTime: e.EventTime,
		},
		FindingInfo: OCSFFindingInfo{
			UID:   alertID,
			Title: what.Title,
			Desc:  what.Desc,
			Analytic: OCSFAnalytic{
				UID: r.ID, Name: r.Name, Desc: r.Description, Version: r.Version,
				TypeID: ocsfAnalyticRule, Type: "Rule",
			},
			DataSources: []string{ocsfDataSource},
			CreatedTime: now,
		},
		Cloud:   OCSFCloud{Provider: "AWS", Region: e.AWSRegion},
		RawData: string(e.Original),
		Unmapped: OCSFUnmapped{QuarantineWatch: OCSFUnmappedQW{
			SchemaVersion: OCSFSchemaVersion,
			InputShape:    f.Shape.String(),
			Source:        OCSFInput{Topic: src.Topic, Partition: src.Partition, Offset: src.Offset, Index: f.Index},
			Watch:         newECSWatch(&f),
		}},
	}
	if s, ok := ocsfSeverities[r.Severity]; ok {
		d.SeverityID, d.Severity = s.id, s.caption
	} else if r.Severity != "" {
		// OCSF: for Other, the label is the source's own.
		d.SeverityID, d.Severity = ocsfSeverityOther, r.Severity
	}
	if t, err := time.Parse(time.RFC3339Nano, e.EventTime); err == nil {
		ms := t.UnixMilli()
		d.FindingInfo.FirstSeenTime, d.FindingInfo.LastSeenTime = &ms, &ms
	}
	if e.EventID != "" {
		d.FindingInfo.RelatedEvents = []OCSFRelatedEvent{{UID: e.EventID}}
	}
	d.FindingInfo.Attacks = ocsfAttacks(r)
	for _, m := range r.Threats {
		if m.Tactic.Name != "" && !slices.Contains(d.FindingInfo.Types, m.Tactic.Name) {
			d.FindingInfo.Types = append(d.FindingInfo.Types, m.Tactic.Name)
		}
	}
	if acct := cmp.Or(e.RecipientAccountID, e.UserIdentity.AccountID); acct != "" {
		d.Cloud.Account = awsAccount(acct)
	}
	if ev := ocsfEvidence(e); ev != nil {
		d.Evidences = []OCSFEvidence{*ev}
	}
	d.Resources = ocsfResources(e)
	if r.Notes != "" {
		d.Remediation = &OCSFRemediation{Desc: r.Notes, References: r.References}
	}
	if params := requestParameters(e.RequestParameters); e.UserAgent != "" || params != "" {
		d.Unmapped.CloudTrail = &OCSFUnmappedCloudTrail{UserAgent: e.UserAgent, RequestParameters: params}
	}
	return d, nil
}

func awsAccount(uid string) *OCSFAccount {
	return &OCSFAccount{UID: uid, TypeID: ocsfAccountAWS, Type: "AWS Account"}
}

// ocsfAttacks is the rule's ATT&CK mapping, one attack object per
// sub-technique, or per technique without one, or per tactic without a
// technique; an attack with none of them is left out (OCSF requires one).
func ocsfAttacks(r *matcher.Rule) []OCSFAttack {
	entity := func(t matcher.Threat) *OCSFAttackEntity {
		if t.ID == "" {
			return nil
		}
		return &OCSFAttackEntity{UID: t.ID, Name: t.Name, SrcURL: t.Reference}
	}
	var out []OCSFAttack
	add := func(a OCSFAttack) {
		if a.Tactic != nil || a.Technique != nil || a.SubTechnique != nil {
			a.Version = OCSFAttackVersion
			out = append(out, a)
		}
	}
	for _, m := range r.Threats {
		if len(m.Techniques) == 0 {
			add(OCSFAttack{Tactic: entity(m.Tactic)})
		}
		for _, tech := range m.Techniques {
			if len(tech.Subtechniques) == 0 {
				add(OCSFAttack{Tactic: entity(m.Tactic), Technique: entity(tech.Threat)})
			}
			for _, sub := range tech.Subtechniques {
				add(OCSFAttack{Tactic: entity(m.Tactic), Technique: entity(tech.Threat), SubTechnique: entity(sub)})
			}
		}
	}
	return out
}

// ocsfEvidence is the API call: caller, operation, source and target
// user; nil when the event names none of them.
func ocsfEvidence(e *matcher.Event) *OCSFEvidence {
	var ev OCSFEvidence
	id := e.UserIdentity
	caller := OCSFUser{UID: id.ARN, UIDAlt: id.PrincipalID, Name: id.UserName, Type: id.Type, CredentialUID: id.AccessKeyID}
	if id.Type != "" {
		caller.TypeID = ocsfTypeOther
	}
	if id.AccountID != "" {
		caller.Account = awsAccount(id.AccountID)
	}
	// OCSF requires a user to have a uid, a name or an account. CloudTrail
	// gives an AWSService caller none of them (only invokedBy, which the
	// matcher does not keep); raw_data still has it.
	if caller.UID != "" || caller.Name != "" || caller.Account != nil {
		ev.Actor = &OCSFActor{User: &caller}
	}
	if e.EventName != "" {
		ev.API = &OCSFAPI{Operation: e.EventName}
		if e.EventSource != "" {
			ev.API.Service = &OCSFService{Name: e.EventSource}
		}
		if e.ErrorCode != "" || e.ErrorMessage != "" {
			ev.API.Response = &OCSFAPIResponse{Error: e.ErrorCode, ErrorMessage: e.ErrorMessage}
		}
	}
	if e.SourceIPAddress != "" {
		ev.SrcEndpoint = &OCSFEndpoint{SvcName: e.SourceIPAddress}
		// A zone ("fe80::1%eth0") is not an IP here either, as in ECS.
		if ip, err := netip.ParseAddr(e.SourceIPAddress); err == nil && ip.Zone() == "" {
			ev.SrcEndpoint = &OCSFEndpoint{IP: ip.String()}
		}
	}
	if u := targetUser(e); u != "" {
		ev.User = &OCSFUser{Name: u}
	}
	if ev == (OCSFEvidence{}) {
		return nil
	}
	return &ev
}

// ocsfResources are the IAM identity the call acted on and the policy: a
// managed policy by its ARN, an inline one (the pre-2020 PutUserPolicy
// mechanism) by its name. Types are AWS resource types.
func ocsfResources(e *matcher.Event) []OCSFResource {
	var rs []OCSFResource
	identity, inline := ocsfResourceTypes[e.TargetKind], ocsfResourceUserPolicy
	if e.TargetName != "" && identity.identity != "" {
		rs = append(rs, OCSFResource{Type: identity.identity, Name: e.TargetName})
		inline = identity.inline
	}
	switch {
	case e.PolicyARN != "":
		name := e.PolicyARN[strings.LastIndexByte(e.PolicyARN, '/')+1:]
		rs = append(rs, OCSFResource{Type: ocsfResourcePolicy, UID: e.PolicyARN, Name: cmp.Or(e.PolicyName, name)})
	case e.PolicyName != "":
		rs = append(rs, OCSFResource{Type: inline, Name: e.PolicyName})
	}
	return rs
}

// ocsfResourceTypes are the AWS resource types of an IAM identity, by
// matcher.Event.TargetKind, and of an inline policy on it.
var ocsfResourceTypes = map[string]struct{ identity, inline string }{
	matcher.TargetUser:  {ocsfResourceUser, ocsfResourceUserPolicy},
	matcher.TargetRole:  {"AWS::IAM::Role", "AWS::IAM::RolePolicy"},
	matcher.TargetGroup: {"AWS::IAM::Group", "AWS::IAM::GroupPolicy"},
}
