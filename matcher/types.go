package matcher

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

	// RequestParameters is the requestParameters object as JSON; in
	// ShapeECS it is Elastic's flattened "{key=value, ...}" text.
	RequestParameters []byte
	// TargetUserName and PolicyARN are read from the request parameters
	// (userName / policyArn), or from their ECS equivalents.
	TargetUserName string
	PolicyARN      string
	PolicyName     string

	// Original is the event verbatim: the CloudTrail record as delivered
	// (decoded from its envelope), or the ECS document in ShapeECS. It is
	// a copy the finding owns.
	Original []byte
}

// Outcome is "failure" when errorCode or errorMessage is present and
// non-empty, else "success", as Elastic's CloudTrail pipeline sets event.outcome.
func (e *Event) Outcome() string {
	if e.ErrorCode != "" || e.ErrorMessage != "" {
		return "failure"
	}
	return "success"
}

// Finding is one event that one rule matched.
type Finding struct {
	Rule  *Rule
	Event Event
	Shape Shape
	// Index is the position of the event inside the record value
	// (0 for single-event shapes), so findings are ordered and addressable.
	Index int
}
