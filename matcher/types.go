package matcher

import "strings"

// Shape names the delivery shape a Kafka record value arrived in.
type Shape uint8

// The delivery shapes that Match recognises. A record value is one of these;
// the events inside it are CloudTrail records except in ShapeECS.
const (
	ShapeUnknown        Shape = iota
	ShapeRecord               // one CloudTrail record
	ShapeS3Object             // a CloudTrail log file: {"Records":[...]}
	ShapeEventBridge          // an EventBridge envelope, the record under "detail"
	ShapeCloudWatchLogs       // a CloudWatch Logs subscription payload (gzip, base64, awslogs wrapper or decoded)
	ShapeAgentMessage         // an Elastic Agent / Filebeat event, the record as a string in "message"
	ShapeECS                  // an ECS document already normalised by Elastic's ingest pipeline
)

var shapeNames = [...]string{"unknown", "record", "s3_object", "eventbridge", "cloudwatch_logs", "agent_message", "ecs"}

func (s Shape) String() string {
	if int(s) < len(shapeNames) {
		return shapeNames[s]
	}
	return "unknown"
}

// Identity is the CloudTrail userIdentity of the caller.
type Identity struct {
	Type        string `json:"type"`
	PrincipalID string `json:"principalId"`
	ARN         string `json:"arn"`
	AccountID   string `json:"accountId"`
	AccessKeyID string `json:"accessKeyId"`
	UserName    string `json:"userName"`
}

// Event holds the fields of one CloudTrail event that rules decide on and
// findings report. Only events that produce a finding are materialised.
type Event struct {
	EventID            string
	EventTime          string
	EventName          string
	EventSource        string
	AWSRegion          string
	RecipientAccountID string
	ErrorCode          string
	ErrorMessage       string
	SourceIPAddress    string
	UserAgent          string
	UserIdentity       Identity

	// Outcome is the outcome the rules were evaluated on: "failure" or
	// "success" for a CloudTrail record (failure when errorCode or
	// errorMessage is present, as Elastic's pipeline sets event.outcome),
	// event.outcome verbatim for an ECS document.
	Outcome string

	// RequestParameters is the requestParameters object as JSON; in
	// ShapeECS it is Elastic's flattened "{key=value, ...}" text.
	RequestParameters []byte
	// TargetKind is the kind of IAM identity the call acts on, named by
	// the request parameter that holds it: TargetUser (userName),
	// TargetRole (roleName) or TargetGroup (groupName); "" when there is
	// none. TargetName is that parameter's value. In ShapeECS they are
	// read from Elastic's flattened request parameters, or from
	// user.target.name and group.name.
	TargetKind string
	TargetName string
	// PolicyARN and PolicyName are read from the request parameters
	// (policyArn / policyName), or from their ECS equivalents.
	PolicyARN  string
	PolicyName string

	// Original is the event verbatim: the CloudTrail record as delivered
	// (decoded from its envelope), or the ECS document in ShapeECS. It is
	// a copy the finding owns.
	Original []byte
}

// The kinds of IAM identity an event can act on (Event.TargetKind).
const (
	TargetUser  = "user"
	TargetRole  = "role"
	TargetGroup = "group"
)

// targetParams are the request parameters that name an event's target,
// with the kind each names, in the order they are preferred when a call
// names more than one and its event name does not say which it acts on.
var targetParams = [...]struct{ param, kind, infix string }{
	{"userName", TargetUser, "User"},
	{"roleName", TargetRole, "Role"},
	{"groupName", TargetGroup, "Group"},
}

// chooseTarget picks the target among the values of userName, roleName and
// groupName (names, in targetParams order): the one the event name says the
// call acts on ("DetachRolePolicy" acts on a role), else the first present.
func chooseTarget(eventName string, names [len(targetParams)]string) (kind, name string) {
	for i, p := range targetParams {
		if names[i] != "" && strings.Contains(eventName, p.infix+"Polic") {
			return p.kind, names[i]
		}
	}
	for i, p := range targetParams {
		if names[i] != "" {
			return p.kind, names[i]
		}
	}
	return "", ""
}

// Finding is one event that one rule matched.
type Finding struct {
	Rule  *Rule
	Event Event
	Shape Shape
	// Index is the position of the event inside the record value
	// (0 for single-event shapes), so findings are ordered and addressable.
	Index int
	// Watch is the watch entry a post-quarantine rule's finding is about
	// (Rule.Watch is set); nil for every other rule. It points into the
	// Watchlist, which is immutable: the caller must not write it.
	Watch *WatchEntry
}
