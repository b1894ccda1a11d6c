package cloudtrailgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/klauspost/compress/gzip"
)

// A planted case is the ground truth of the case file's look-back: a user
// whose key AWS quarantined, with what the user did, and what was done to
// the user, before the quarantine, mixed into the generator's ordinary
// traffic. Every event of the user is written from a plan (casePlan), and
// the plan says, for every event, whether it is the user's activity, how,
// whether it is notable and which access keys it shows to be the user's;
// Truth adds those up. Nothing is read back from the bytes.

// The planted identities. The user's name is in none of the generator's
// pools, and the keys hold '0', which the generator's random keys (base32:
// A-Z, 2-7) never do, so the noise holds none of them.
const (
	CaseAccount  = "123456789012"
	CaseUserName = "ledger-sync"
	caseAdminARN = "arn:aws:iam::123456789012:user/ops-admin"
	caseKey1     = "AKIA0LEDGERSYNC00001" // the user's key, the one exposed
	caseKey2     = "AKIA0LEDGERSYNC00002" // created for the user by ops-admin
	caseKey3     = "ASIA0LEDGERSYNC00003" // a federation token the user minted
	caseKey4     = "AKIA0LEDGERSYNC00004" // created by the user for itself
	caseKey5     = "AKIA0LEDGERSYNC00005" // created for the user by ops-admin after the quarantine
	caseAdminKey = "AKIA0OPSADMIN0000009"
	caseDecoyKey = "AKIA0LEDGERSYNC0OLD1"
	caseIP1      = "203.0.113.77"
	caseIP2      = "198.51.100.23"
	caseAdminIP  = "192.0.2.10"
	caseUA1      = "aws-cli/2.15.0 Python/3.11.6 Linux/6.1.61 exe/x86_64.amzn.2023 prompt/off command/sts.get-caller-identity"
	caseUA2      = "Boto3/1.34.0 md/Botocore#1.34.0 ua/2.0 os/linux#6.1.61 md/arch#x86_64 lang/python#3.11.6 Botocore/1.34.0"
	caseAdminUA  = "console.amazonaws.com"
	caseFedARN   = "arn:aws:sts::123456789012:federated-user/fed-tmp"
)

// CaseConfig says how to plant a case.
type CaseConfig struct {
	Seed int64
	// Noise is how many of the generator's record values (its default mix
	// of shapes, no positives) surround the planted ones.
	Noise int
	// Quarantine is the quarantine's event time; zero means
	// 2024-11-02T12:00:00Z. The noise starts six hours before it.
	Quarantine time.Time
}

// Case is a planted case: record values and what they hold.
type Case struct {
	// Values are the record values, planted and noise, in order.
	Values [][]byte
	// QuarantineEventID is the eventID of the AttachUserPolicy that
	// quarantined the user (the Elastic rule's finding), QuarantineTime
	// its time.
	QuarantineEventID string
	QuarantineTime    time.Time
	// DataStart is the earliest eventTime in Values.
	DataStart time.Time
	plan      []plannedEvent
}

// plannedEvent is one event of the case, as planned.
type plannedEvent struct {
	id                                  string
	at                                  time.Time
	source, name, region, ip, ua, error string
	actor, target, notable              bool // the user's, and how; notable per the case's own list
	keys                                []string
	// viaKey is the key that alone makes the event the user's (a
	// federated session's): the event is the user's in a window only if
	// an event of the user in that window showed the key.
	viaKey string
}

// CaseTruth is what a summary of the user's activity in a window must say.
type CaseTruth struct {
	Events, AsActor, AsTarget int
	Actions                   map[string]int // "eventSource eventName"
	SourceIPs, UserAgents     map[string]SeenTruth
	Regions, Errors           map[string]int
	AccessKeyIDs              []string // sorted
	Notable                   []string // eventIDs, sorted
}

// SeenTruth is how often a value was seen, and when first and last.
type SeenTruth struct {
	Count       int
	First, Last time.Time
}

// Truth is the user's activity in [start, QuarantineTime], the quarantine
// itself left out. Keys are those the window's events show: an event that is
// the user's by a key alone counts only when an event of the user in the
// window showed that key (the case teaches no key through such an event, so
// one look at the others settles it).
func (c *Case) Truth(start time.Time) CaseTruth {
	t := CaseTruth{Actions: map[string]int{}, SourceIPs: map[string]SeenTruth{}, UserAgents: map[string]SeenTruth{},
		Regions: map[string]int{}, Errors: map[string]int{}}
	in := func(e plannedEvent) bool {
		return (e.actor || e.target) && !e.at.Before(start) && !e.at.After(c.QuarantineTime) && e.id != c.QuarantineEventID
	}
	taught := map[string]bool{}
	for _, e := range c.plan {
		if in(e) && e.viaKey == "" {
			for _, k := range e.keys {
				taught[k] = true
			}
		}
	}
	keys := map[string]bool{}
	for _, e := range c.plan {
		if !in(e) || e.viaKey != "" && !taught[e.viaKey] {
			continue
		}
		t.Events++
		if e.actor {
			t.AsActor++
		}
		if e.target {
			t.AsTarget++
		}
		t.Actions[e.source+" "+e.name]++
		seeTruth(t.SourceIPs, e.ip, e.at)
		seeTruth(t.UserAgents, e.ua, e.at)
		t.Regions[e.region]++
		if e.error != "" {
			t.Errors[e.error]++
		}
		if e.notable {
			t.Notable = append(t.Notable, e.id)
		}
		for _, k := range e.keys {
			keys[k] = true
		}
	}
	for k := range keys {
		t.AccessKeyIDs = append(t.AccessKeyIDs, k)
	}
	sort.Strings(t.AccessKeyIDs)
	sort.Strings(t.Notable)
	return t
}

func seeTruth(m map[string]SeenTruth, v string, at time.Time) {
	s, ok := m[v]
	if !ok {
		m[v] = SeenTruth{Count: 1, First: at, Last: at}
		return
	}
	s.Count++
	if at.Before(s.First) {
		s.First = at
	}
	if at.After(s.Last) {
		s.Last = at
	}
	m[v] = s
}

// casePlan is the case's script. Times are offsets from the quarantine.
// spell says how the record is written: "" plain, "slash" the ARN's '/' as
// `\/`, "letter" a letter of the user's name in the ARN as a \u escape,
// "case" the user's name in another case.
type caseStep struct {
	off                   time.Duration
	source, name, region  string
	ip, ua, errCode       string
	actor                 string // userIdentity: "user:KEY", "admin", "fed" (by caseKey3 alone), "decoy", "other-account", "aws"
	params                map[string]any
	resp                  map[string]any
	mine, onUser, notable bool
	keys                  []string
	spell                 string
	shape                 Shape // ShapeRecord, ShapeS3Object, ShapeEventBridge, ShapeAgentMessage, ShapeCloudWatchGzip
}

func caseSteps() []caseStep {
	h := time.Hour
	m := time.Minute
	user := map[string]any{"userName": CaseUserName}
	return []caseStep{
		{off: -30 * h, source: "sts", name: "GetCallerIdentity", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}},
		{off: -5 * h, source: "sts", name: "GetCallerIdentity", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}},
		{off: -4*h - 50*m, source: "s3", name: "ListBuckets", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}, shape: ShapeEventBridge},
		{off: -4*h - 40*m, source: "ec2", name: "DescribeInstances", region: "us-west-2", ip: caseIP2, ua: caseUA2, errCode: "Client.UnauthorizedOperation", actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}},
		{off: -4*h - 30*m, source: "iam", name: "ListUsers", region: "us-east-1", ip: caseIP2, ua: caseUA2, errCode: "AccessDenied", actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}, spell: "slash"},
		{off: -4*h - 20*m, source: "secretsmanager", name: "GetSecretValue", region: "us-east-1", ip: caseIP2, ua: caseUA2, actor: "user:" + caseKey1, params: map[string]any{"secretId": "prod/stripe/api"}, mine: true, notable: true, keys: []string{caseKey1}, spell: "slash"},
		{off: -4*h - 10*m, source: "secretsmanager", name: "GetSecretValue", region: "us-east-1", ip: caseIP2, ua: caseUA2, errCode: "AccessDeniedException", actor: "user:" + caseKey1, params: map[string]any{"secretId": "prod/db/orders"}, mine: true, notable: true, keys: []string{caseKey1}, spell: "letter"},
		{off: -4 * h, source: "iam", name: "CreateAccessKey", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "admin", params: user,
			resp: map[string]any{"accessKey": map[string]any{"accessKeyId": caseKey2, "status": "Active", "userName": CaseUserName, "createDate": "Nov 2, 2024 8:00:00 AM"}}, onUser: true, notable: true, keys: []string{caseKey2}},
		{off: -3*h - 50*m, source: "iam", name: "CreateLoginProfile", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "admin", params: map[string]any{"userName": "Ledger-Sync", "passwordResetRequired": false},
			resp: map[string]any{"loginProfile": map[string]any{"userName": "Ledger-Sync", "passwordResetRequired": false}}, onUser: true, notable: true, spell: "case"},
		// A call on the user that names it only with an escape: no key of
		// the user is in it, so only the filter's escape rule finds it.
		{off: -3*h - 45*m, source: "iam", name: "ListAccessKeys", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "admin", params: user, onUser: true, spell: "letter"},
		{off: -3*h - 40*m, source: "iam", name: "ListAttachedUserPolicies", region: "us-east-1", ip: caseIP1, ua: caseUA2, actor: "user:" + caseKey2, params: user, mine: true, onUser: true, keys: []string{caseKey2}, spell: "letter", shape: ShapeAgentMessage},
		{off: -3*h - 30*m, source: "sts", name: "GetFederationToken", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, params: map[string]any{"name": "fed-tmp", "durationSeconds": 129600},
			resp: map[string]any{"credentials": map[string]any{"accessKeyId": caseKey3, "expiration": "Nov 4, 2024, 12:30:00 AM"}, "federatedUser": map[string]any{"arn": caseFedARN}}, mine: true, notable: true, keys: []string{caseKey1, caseKey3}},
		{off: -3*h - 20*m, source: "sts", name: "GetCallerIdentity", region: "us-east-1", ip: caseIP2, ua: caseUA1, actor: "fed", mine: true, keys: []string{caseKey3}},
		{off: -3*h - 10*m, source: "ec2", name: "RunInstances", region: "us-west-2", ip: caseIP2, ua: caseUA2, actor: "fed", params: map[string]any{"instanceType": "p3.16xlarge", "minCount": 10, "maxCount": 10}, mine: true, notable: true, keys: []string{caseKey3}, shape: ShapeCloudWatchGzip},
		{off: -3 * h, source: "iam", name: "AttachUserPolicy", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, params: map[string]any{"userName": "ledger-sync-old", "policyArn": "arn:aws:iam::aws:policy/AdministratorAccess"}, mine: true, notable: true, keys: []string{caseKey1}, shape: ShapeS3Object},
		{off: -2*h - 30*m, source: "ec2", name: "DescribeRegions", region: "eu-west-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}, shape: ShapeAgentMessage, spell: "slash"},
		{off: -2*h - 10*m, source: "s3", name: "ListBuckets", region: "us-east-1", ip: caseIP1, ua: caseUA2, actor: "user:" + caseKey2, mine: true, keys: []string{caseKey2}, shape: ShapeS3Object},
		// Decoys: a user whose name starts with the user's, and the same
		// name in another account. They pass the filter; they are not
		// the user's.
		{off: -2 * h, source: "s3", name: "ListBuckets", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "decoy"},
		{off: -1*h - 55*m, source: "iam", name: "CreateAccessKey", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "admin", params: map[string]any{"userName": "ledger-sync-old"},
			resp: map[string]any{"accessKey": map[string]any{"accessKeyId": caseDecoyKey, "status": "Active", "userName": "ledger-sync-old"}}},
		{off: -1*h - 50*m, source: "s3", name: "ListBuckets", region: "us-east-1", ip: caseIP2, ua: caseUA1, actor: "other-account"},
		{off: -1*h - 45*m, source: "iam", name: "DeleteLoginProfile", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "other-account", params: user},
		{off: -1 * h, source: "iam", name: "CreateAccessKey", region: "us-east-1", ip: caseIP2, ua: caseUA2, actor: "user:" + caseKey1,
			resp: map[string]any{"accessKey": map[string]any{"accessKeyId": caseKey4, "status": "Active", "userName": CaseUserName}}, mine: true, notable: true, keys: []string{caseKey1, caseKey4}},
		{off: 0, source: "iam", name: "AttachUserPolicy", region: "us-east-1", ip: "AWS Internal", ua: "AWS Internal", actor: "aws",
			params: map[string]any{"userName": CaseUserName, "policyArn": QuarantinePolicyARNs[1]}, onUser: true},
		{off: 10 * m, source: "s3", name: "ListBuckets", region: "us-east-1", ip: caseIP1, ua: caseUA1, actor: "user:" + caseKey1, mine: true, keys: []string{caseKey1}},
	}
}

// PlantCase makes a case: the planted events in their shapes, placed at
// random among cfg.Noise values of the generator's default mix.
func PlantCase(cfg CaseConfig) *Case {
	q := cfg.Quarantine
	if q.IsZero() {
		q = time.Date(2024, 11, 2, 12, 0, 0, 0, time.UTC)
	}
	noiseStart := q.Add(-6 * time.Hour)
	gen := New(Config{Seed: cfg.Seed, Start: noiseStart})
	rng := rand.New(rand.NewPCG(uint64(cfg.Seed), 0xca5ef11e))
	c := &Case{QuarantineTime: q, DataStart: noiseStart}
	var planted [][]byte
	for _, s := range caseSteps() {
		at := q.Add(s.off)
		id := appendUUID(nil, gen.idRng)
		e := plannedEvent{id: string(id), at: at, source: s.source + ".amazonaws.com", name: s.name, region: s.region,
			ip: s.ip, ua: s.ua, error: s.errCode, actor: s.mine, target: s.onUser, notable: s.notable, keys: s.keys}
		if s.actor == "fed" {
			e.viaKey = caseKey3
		}
		if s.actor == "aws" {
			c.QuarantineEventID = e.id
		}
		c.plan = append(c.plan, e)
		if at.Before(c.DataStart) {
			c.DataStart = at
		}
		rec := caseRecord(s, e)
		planted = append(planted, caseValue(gen, s.shape, rec, at))
	}
	noise := make([][]byte, 0, cfg.Noise)
	for range cfg.Noise {
		noise = append(noise, gen.Next().Value)
	}
	// Planted values go at random places, in their order.
	at := make([]int, len(planted))
	for i := range at {
		at[i] = rng.IntN(len(noise) + 1)
	}
	slices.Sort(at)
	p := 0
	for i := 0; i <= len(noise); i++ {
		for p < len(planted) && at[p] == i {
			c.Values = append(c.Values, planted[p])
			p++
		}
		if i < len(noise) {
			c.Values = append(c.Values, noise[i])
		}
	}
	return c
}

// caseRecord writes one planted CloudTrail record, in CloudTrail's key
// order, and spells it as the step says.
func caseRecord(s caseStep, e plannedEvent) []byte {
	type kv struct {
		k string
		v any
	}
	var ident map[string]any
	switch {
	case strings.HasPrefix(s.actor, "user:"):
		ident = map[string]any{"type": "IAMUser", "principalId": "AIDA0LEDGERSYNC0USER", "arn": "arn:aws:iam::" + CaseAccount + ":user/" + CaseUserName,
			"accountId": CaseAccount, "accessKeyId": strings.TrimPrefix(s.actor, "user:"), "userName": CaseUserName}
	case s.actor == "admin":
		ident = map[string]any{"type": "IAMUser", "principalId": "AIDA0OPSADMIN000USER", "arn": caseAdminARN, "accountId": CaseAccount, "accessKeyId": caseAdminKey, "userName": "ops-admin"}
	case s.actor == "fed":
		ident = map[string]any{"type": "FederatedUser", "principalId": CaseAccount + ":fed-tmp", "arn": caseFedARN, "accountId": CaseAccount, "accessKeyId": caseKey3,
			"sessionContext": map[string]any{"sessionIssuer": map[string]any{"type": "IAMUser", "principalId": "AIDA0LEDGERSYNC0USER", "accountId": CaseAccount}}}
	case s.actor == "decoy":
		ident = map[string]any{"type": "IAMUser", "principalId": "AIDA0LEDGERSYNC0OLD0", "arn": "arn:aws:iam::" + CaseAccount + ":user/ledger-sync-old", "accountId": CaseAccount, "accessKeyId": caseDecoyKey, "userName": "ledger-sync-old"}
	case s.actor == "other-account":
		ident = map[string]any{"type": "IAMUser", "principalId": "AIDA0OTHERACCT00USER", "arn": "arn:aws:iam::444455556666:user/" + CaseUserName, "accountId": "444455556666", "accessKeyId": "AKIA0OTHERACCOUNT001", "userName": CaseUserName}
	case s.actor == "aws":
		ident = map[string]any{"type": "AWSService", "invokedBy": "AWS Internal"}
	}
	account := CaseAccount
	if s.actor == "other-account" {
		account = "444455556666"
	}
	fields := []kv{
		{"eventVersion", "1.09"}, {"userIdentity", ident}, {"eventTime", e.at.Format(time.RFC3339)}, {"eventSource", e.source},
		{"eventName", e.name}, {"awsRegion", e.region}, {"sourceIPAddress", e.ip}, {"userAgent", e.ua},
	}
	if s.errCode != "" {
		fields = append(fields, kv{"errorCode", s.errCode}, kv{"errorMessage", "User: " + fmt.Sprint(ident["arn"]) + " is not authorized to perform this operation"})
	}
	fields = append(fields, kv{"requestParameters", s.params}, kv{"responseElements", s.resp},
		kv{"requestID", e.id[:8] + "-req"}, kv{"eventID", e.id}, kv{"readOnly", false}, kv{"eventType", "AwsApiCall"},
		kv{"managementEvent", true}, kv{"recipientAccountId", account}, kv{"eventCategory", "Management"})
	var b bytes.Buffer
	b.WriteByte('{')
	for i, f := range fields {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := json.Marshal(f.k)
		v, err := json.Marshal(f.v)
		if err != nil {
			panic(err) // the plan holds only JSON values
		}
		b.Write(k)
		b.WriteByte(':')
		b.Write(v)
	}
	b.WriteByte('}')
	out := b.Bytes()
	switch s.spell {
	case "slash":
		out = bytes.ReplaceAll(out, []byte(":user/"+CaseUserName), []byte(`:user\/`+CaseUserName))
	case "letter":
		// 'l' of ledger-sync as \u006c, in the ARN and in userName.
		out = bytes.ReplaceAll(out, []byte("/"+CaseUserName), []byte(`/\u006c`+CaseUserName[1:]))
		out = bytes.ReplaceAll(out, []byte(`"userName":"`+CaseUserName), []byte(`"userName":"\u006c`+CaseUserName[1:]))
	}
	return out
}

// caseValue wraps a planted record in its delivery shape, with the
// generator's records around it where the shape holds several.
func caseValue(gen *Generator, shape Shape, rec []byte, at time.Time) []byte {
	switch shape {
	case ShapeS3Object:
		var b []byte
		b = append(b, `{"Records":[`...)
		b = append(b, gen.appendSingle(nil)...)
		b = append(b, ',')
		b = append(b, rec...)
		b = append(b, ',')
		b = append(b, gen.appendSingle(nil)...)
		return append(b, "]}"...)
	case ShapeEventBridge:
		b := []byte(`{"version":"0","id":"6a7e8feb-b491-4cf7-a9f1-bf3703467718","detail-type":"AWS API Call via CloudTrail","source":"aws.s3","account":"` + CaseAccount + `","time":"` + at.Format(time.RFC3339) + `","region":"us-east-1","resources":[],"detail":`)
		b = append(b, rec...)
		return append(b, '}')
	case ShapeAgentMessage:
		b := []byte(`{"@timestamp":"` + at.Add(2*time.Minute).Format("2006-01-02T15:04:05.000Z") + `","input":{"type":"aws-s3"},"message":"`)
		b = appendJSONString(b, rec)
		return append(b, `","event":{"dataset":"aws.cloudtrail"}}`...)
	case ShapeCloudWatchGzip:
		p := []byte(`{"messageType":"DATA_MESSAGE","owner":"` + CaseAccount + `","logGroup":"aws-cloudtrail-logs-` + CaseAccount + `","logStream":"` + CaseAccount + `_CloudTrail_us-west-2","subscriptionFilters":["cloudtrail-to-kafka"],"logEvents":[{"id":"1","timestamp":`)
		p = appendInt(p, at.UnixMilli())
		p = append(p, `,"message":"`...)
		p = appendJSONString(p, rec)
		p = append(p, `"}]}`...)
		var z bytes.Buffer
		w := gzip.NewWriter(&z)
		_, _ = w.Write(p) // a bytes.Buffer does not fail
		_ = w.Close()
		return z.Bytes()
	}
	return rec
}

// AftermathEvent is one planted event after a case's quarantine: its
// record value, and the post-quarantine rule the plan says it is a finding
// of ("" when it is none).
type AftermathEvent struct {
	Value   []byte
	EventID string
	Time    time.Time
	Name    string // eventName
	Rule    string // the rule's key, as docs/rules.md names it
}

// Aftermath is the case's second act, for the demo: what the user does, and
// what is done to it, in the quarter hour after the quarantine. The user
// still lists buckets with the exposed key (a call the quarantine policy
// allows: activity), tries to make itself a key and to detach the policy
// (both denied: no finding, the quarantine doing its job), then ops-admin
// makes the user a new key (a credential that survives the rotation:
// persistence) and detaches the quarantine policy (defense evasion). Each
// value is a plain CloudTrail record.
func (c *Case) Aftermath(seed int64) []AftermathEvent {
	m := time.Minute
	user := map[string]any{"userName": CaseUserName}
	quarantine := map[string]any{"userName": CaseUserName, "policyArn": QuarantinePolicyARNs[1]}
	steps := []struct {
		step caseStep
		rule string
	}{
		{caseStep{off: 2 * m, source: "s3", name: "ListBuckets", region: "us-east-1", ip: caseIP2, ua: caseUA2, actor: "user:" + caseKey1}, "post-quarantine-activity"},
		{caseStep{off: 4 * m, source: "iam", name: "CreateAccessKey", region: "us-east-1", ip: caseIP2, ua: caseUA2, actor: "user:" + caseKey1, params: user, errCode: "AccessDenied"}, ""},
		{caseStep{off: 6 * m, source: "iam", name: "DetachUserPolicy", region: "us-east-1", ip: caseIP2, ua: caseUA2, actor: "user:" + caseKey1, params: quarantine, errCode: "AccessDenied"}, ""},
		{caseStep{off: 8 * m, source: "iam", name: "CreateAccessKey", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "admin", params: user,
			resp: map[string]any{"accessKey": map[string]any{"accessKeyId": caseKey5, "status": "Active", "userName": CaseUserName}}}, "post-quarantine-persistence"},
		{caseStep{off: 11 * m, source: "iam", name: "DetachUserPolicy", region: "us-east-1", ip: caseAdminIP, ua: caseAdminUA, actor: "admin", params: quarantine}, "post-quarantine-defense-evasion"},
	}
	ids := rand.NewPCG(uint64(seed), 0xaf7e4a7)
	out := make([]AftermathEvent, 0, len(steps))
	for _, s := range steps {
		at := c.QuarantineTime.Add(s.step.off)
		e := plannedEvent{id: string(appendUUID(nil, ids)), at: at, source: s.step.source + ".amazonaws.com", name: s.step.name,
			region: s.step.region, ip: s.step.ip, ua: s.step.ua, error: s.step.errCode}
		out = append(out, AftermathEvent{Value: caseRecord(s.step, e), EventID: e.id, Time: at, Name: s.step.name, Rule: s.rule})
	}
	return out
}
