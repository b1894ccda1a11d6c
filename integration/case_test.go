package integration

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"maps"
	"math/rand/v2"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/quarantine-watch/quarantine-watch/internal/cloudtrailgen"
	"github.com/quarantine-watch/quarantine-watch/internal/kafkatest"
)

// The integration test of issue 13 §3: a quarantine in the middle of a
// fault run, with the quarantined user U active on every source partition
// before and after it. What must come out, and what the test knows it from:
//
//   - the quarantine's alert, once: the Elastic rule's finding on the
//     planted AttachUserPolicy (cloudtrailgen.PlantCase);
//   - one context document, keyed by that alert's id, on <alerts>.context,
//     whose counts are the case's ground truth over the 24 h before the
//     quarantine (Case.Truth), as read_committed franz-go and kcat see it;
//   - for every event of U the test plants after the quarantine, the
//     finding of the post-quarantine rule the plan assigns to it,
//     once, and nothing for the events it says are not findings (calls the
//     quarantine denied, calls on U that are not credential or policy
//     changes, another account's user of the same name, a user whose name
//     only starts with U's). The test writes most of those events itself
//     and declares each one's rule by hand, from ISSUE13-PLAN.md's rules;
//     the case's own aftermath (Case.Aftermath) comes with the rule the
//     generator says. None of it comes from the matcher.
//
// Some of U's events are written in the same produce request as the
// quarantine, two on every partition (the gap case of issue 13 §2,
// "No gap"): the instances read them at the moment the quarantine is read,
// before any of them can have loaded the watch entry. Their findings count
// as gap_misses when missing.
//
// The faults: two instances of the real binary on the default flags (a
// session timeout of 6 s, as every test that kills instances has), one
// SIGKILLed just before the quarantine is written, then the one whose case
// worker starts the quarantine's look-back, the moment it logs so, and a rolling restart (SIGTERM, then a new process with the
// same transactional id) while the last of U's events are written.

// The post-quarantine rules' ids, as the plan fixes them ("stable ids"),
// written here rather than read from the matcher.
const (
	postDefenseEvasionRuleID = "4fa36cd2-2037-4749-98fb-f038ad0d03f5"
	postPersistenceRuleID    = "5f65c987-11ee-4c03-9b3d-8cd6983599d9"
	postActivityRuleID       = "fa33cc09-e802-4dfd-83db-cf6a9e763cc3"
)

// The size of the run: noise records of each phase (about 2 KB each), so
// that every partition has traffic around U's events and the look-back has
// something to search.
const (
	caseNoisePhase1 = 4000
	caseNoisePhase  = 2000
	caseLookback    = 24 * time.Hour // the service's --context-lookback default
	caseWatchFor    = 72 * time.Hour // the service's --watch-for default
	caseWaitLimit   = 2 * time.Minute
	// caseAsyncLimit bounds the waits for what the service does beside the
	// group's progress (the watch entry, the case worker's commit); without
	// the feature they time out, and the run goes on to report it.
	caseAsyncLimit = 60 * time.Second
)

// caseQuarantinePolicy is the policy AWS attaches (AWS's managed policy
// name), which the planted detach targets.
const caseQuarantinePolicy = "arn:aws:iam::aws:policy/AWSCompromisedKeyQuarantineV3"

// postStep is one kind of event the test plants after the quarantine: who
// makes which call on whom, its outcome, and the post-quarantine rule
// whose finding it must be ("" for none), with the plan's reason.
type postStep struct {
	what         string
	actor        string // "user" (U's key), "fed" (a session U opened), "admin", "other-account", "decoy"
	source, name string
	errCode      string
	params       map[string]any
	rule         string
}

var (
	// postFindings must each be a finding.
	postFindings = []postStep{
		// Any other successful call by U: activity.
		{what: "U calls GetCallerIdentity", actor: "user", source: "sts", name: "GetCallerIdentity", rule: postActivityRuleID},
		// A new access key for U, by anyone: persistence.
		{what: "ops-admin creates an access key for U", actor: "admin", source: "iam", name: "CreateAccessKey",
			params: map[string]any{"userName": cloudtrailgen.CaseUserName}, rule: postPersistenceRuleID},
		// The quarantine policy detached from U: defense evasion.
		{what: "ops-admin detaches the quarantine policy from U", actor: "admin", source: "iam", name: "DetachUserPolicy",
			params: map[string]any{"userName": cloudtrailgen.CaseUserName, "policyArn": caseQuarantinePolicy}, rule: postDefenseEvasionRuleID},
		// A key made by U (CreateAccessKey without userName is for the
		// caller): persistence.
		{what: "U creates an access key for itself", actor: "user", source: "iam", name: "CreateAccessKey", rule: postPersistenceRuleID},
		// A session U opened (GetFederationToken) is U: activity.
		{what: "U's federation session calls DescribeInstances", actor: "fed", source: "ec2", name: "DescribeInstances", rule: postActivityRuleID},
		// An inline policy of U deleted, U named in another case (IAM
		// names are case-insensitive): defense evasion.
		{what: "ops-admin deletes an inline policy of Ledger-Sync", actor: "admin", source: "iam", name: "DeleteUserPolicy",
			params: map[string]any{"userName": "Ledger-Sync", "policyName": "deny-all"}, rule: postDefenseEvasionRuleID},
		{what: "U lists buckets", actor: "user", source: "s3", name: "ListBuckets", rule: postActivityRuleID},
		// A console password for U: persistence.
		{what: "ops-admin creates a login profile for U", actor: "admin", source: "iam", name: "CreateLoginProfile",
			params: map[string]any{"userName": cloudtrailgen.CaseUserName, "passwordResetRequired": false}, rule: postPersistenceRuleID},
	}
	// postQuiet must not be findings.
	postQuiet = []postStep{
		// A call by U the quarantine denied is the quarantine doing its
		// job: counted, not alerted on. U's attempt to detach it.
		{what: "U tries to detach the quarantine policy: AccessDenied", actor: "user", source: "iam", name: "DetachUserPolicy", errCode: "AccessDenied",
			params: map[string]any{"userName": cloudtrailgen.CaseUserName, "policyArn": caseQuarantinePolicy}},
		{what: "U's ListBuckets: AccessDenied", actor: "user", source: "s3", name: "ListBuckets", errCode: "AccessDenied"},
		{what: "U tries to create an access key: AccessDenied", actor: "user", source: "iam", name: "CreateAccessKey", errCode: "AccessDenied"},
		// A call on U by another principal that changes no credential or
		// policy is not one of the rules' calls.
		{what: "ops-admin lists U's attached policies", actor: "admin", source: "iam", name: "ListAttachedUserPolicies",
			params: map[string]any{"userName": cloudtrailgen.CaseUserName}},
		// Not U: the same name in another account, and a name that only
		// starts with U's.
		{what: "ledger-sync of account 444455556666 calls GetCallerIdentity", actor: "other-account", source: "sts", name: "GetCallerIdentity"},
		{what: "ledger-sync-old creates an access key for itself", actor: "decoy", source: "iam", name: "CreateAccessKey"},
	}
)

// postEvent is one planted event after the quarantine.
type postEvent struct {
	step      postStep
	eventID   string
	partition int32
	gap       bool // written with the quarantine
	at        pos  // where it landed
	value     []byte
	// eventTime is the event's, for a planted step (zero for the case's
	// aftermath).
	eventTime time.Time
}

// caseIdentity is the userIdentity of an actor of postStep.
func caseIdentity(actor string) map[string]any {
	const acct = cloudtrailgen.CaseAccount
	switch actor {
	case "user":
		return map[string]any{"type": "IAMUser", "principalId": "AIDA0LEDGERSYNC0USER", "arn": "arn:aws:iam::" + acct + ":user/" + cloudtrailgen.CaseUserName,
			"accountId": acct, "accessKeyId": "AKIA0LEDGERSYNC00001", "userName": cloudtrailgen.CaseUserName}
	case "fed":
		return map[string]any{"type": "FederatedUser", "principalId": acct + ":fed-tmp", "arn": "arn:aws:sts::" + acct + ":federated-user/fed-tmp",
			"accountId": acct, "accessKeyId": "ASIA0LEDGERSYNC00003",
			"sessionContext": map[string]any{"sessionIssuer": map[string]any{"type": "IAMUser", "principalId": "AIDA0LEDGERSYNC0USER",
				"arn": "arn:aws:iam::" + acct + ":user/" + cloudtrailgen.CaseUserName, "accountId": acct, "userName": cloudtrailgen.CaseUserName}}}
	case "admin":
		return map[string]any{"type": "IAMUser", "principalId": "AIDA0OPSADMIN000USER", "arn": "arn:aws:iam::" + acct + ":user/ops-admin",
			"accountId": acct, "accessKeyId": "AKIA0OPSADMIN0000009", "userName": "ops-admin"}
	case "other-account":
		return map[string]any{"type": "IAMUser", "principalId": "AIDA0OTHERACCT00USER", "arn": "arn:aws:iam::444455556666:user/" + cloudtrailgen.CaseUserName,
			"accountId": "444455556666", "accessKeyId": "AKIA0OTHERACCOUNT001", "userName": cloudtrailgen.CaseUserName}
	case "decoy":
		return map[string]any{"type": "IAMUser", "principalId": "AIDA0LEDGERSYNC0OLD0", "arn": "arn:aws:iam::" + acct + ":user/ledger-sync-old",
			"accountId": acct, "accessKeyId": "AKIA0LEDGERSYNC0OLD1", "userName": "ledger-sync-old"}
	}
	panic("case test: unknown actor " + actor)
}

// caseEventValue writes a CloudTrail record of step at time at.
func caseEventValue(s postStep, eventID string, at time.Time) []byte {
	recipient := cloudtrailgen.CaseAccount
	if s.actor == "other-account" {
		recipient = "444455556666"
	}
	rec := map[string]any{
		"eventVersion": "1.09", "userIdentity": caseIdentity(s.actor), "eventTime": at.UTC().Format(time.RFC3339),
		"eventSource": s.source + ".amazonaws.com", "eventName": s.name, "awsRegion": "us-east-1",
		"sourceIPAddress": "203.0.113.77", "userAgent": "aws-cli/2.15.0 Python/3.11.6 Linux/6.1.61",
		"requestParameters": s.params, "responseElements": nil, "requestID": eventID[:8] + "-req", "eventID": eventID,
		"readOnly": false, "eventType": "AwsApiCall", "managementEvent": true, "recipientAccountId": recipient,
		"eventCategory": "Management",
	}
	if s.errCode != "" {
		rec["errorCode"] = s.errCode
		rec["errorMessage"] = "User is not authorized to perform this operation with an explicit deny in an identity-based policy"
	}
	b, err := json.Marshal(rec)
	if err != nil {
		panic(err)
	}
	return b
}

// caseUUID is a random version-4 UUID from rng: the planted events' ids.
func caseUUID(rng *rand.Rand) string {
	return fmt.Sprintf("%08x-%04x-4%03x-%04x-%012x", rng.Uint32(), rng.Uint32()&0xffff, rng.Uint32()&0xfff,
		0x8000|rng.Uint32()&0x3fff, rng.Uint64()&0xffffffffffff)
}

// placed is a value written to a chosen partition.
type placed struct {
	value     []byte
	partition int32
}

// caseRun is the state of TestExactlyOnceCase and
// TestExactlyOnceRequarantine.
type caseRun struct {
	t     *testing.T
	b     *kafkatest.Broker
	p     pipeline
	adm   *kadm.Client
	w     *sourceWriter
	gen   *cloudtrailgen.Generator
	rng   *rand.Rand
	exp   *expected
	began time.Time
	seed  uint64 // of rng: the clock's, logged
	next  int32  // the partition of the next noise record

	posts []postEvent
	// postWant are the post-quarantine alerts the planted events must
	// give, by id: the outputs oracle (outputReader.compare) sets them
	// apart, since in its other runs they depend on when a watch loaded.
	postWant map[string]string
	// where the quarantine's record landed
	quarantineAt pos
}

// newCaseRun starts what a case run needs (the broker, kcat, the
// pipeline's topics) and returns the run's state and kcat's path: its noise
// from the generator seeded genSeed, the places of its planted events from
// a generator seeded with the clock and stream.
func newCaseRun(t *testing.T, genSeed int64, stream uint64) (*caseRun, string) {
	t.Helper()
	b := kafka.Broker(t)
	kcat := lookKcat(t)
	p := newPipeline(t)
	adm := newAdmin(t, b)
	p.create(t, b, adm, nil)
	seed := uint64(time.Now().UnixNano())
	return &caseRun{
		t: t, b: b, p: p, adm: adm, w: newSourceWriter(t, b, p.source),
		gen:  cloudtrailgen.New(cloudtrailgen.Config{Seed: genSeed, NearMissRate: 0.05, MalformedRate: 0.01}),
		rng:  rand.New(rand.NewPCG(seed, stream)),
		seed: seed, exp: newExpected(), postWant: map[string]string{}, began: time.Now(),
	}, kcat
}

func (r *caseRun) step(format string, args ...any) {
	r.t.Logf("[%6.1fs] %s", time.Since(r.began).Seconds(), fmt.Sprintf(format, args...))
}

// write produces the planted values at random places among noise records
// of the generator (round robin over the partitions), the planted ones in
// their order, and records what the noise must produce. It returns the
// planted values' records.
func (r *caseRun) write(ctx context.Context, noise int, plant []placed) []*kgo.Record {
	r.t.Helper()
	g := generate(r.gen, noise)
	at := make([]int, len(plant))
	for i := range at {
		at[i] = r.rng.IntN(noise + 1)
	}
	slices.Sort(at)
	var values [][]byte
	var parts []int32
	var noiseIdx, plantIdx []int
	k := 0
	for i := 0; i <= noise; i++ {
		for k < len(plant) && at[k] == i {
			plantIdx = append(plantIdx, len(values))
			values = append(values, plant[k].value)
			parts = append(parts, plant[k].partition)
			k++
		}
		if i < noise {
			noiseIdx = append(noiseIdx, len(values))
			values = append(values, g.values[i])
			parts = append(parts, r.next)
			r.next = (r.next + 1) % sourcePartitions
		}
	}
	rs, err := r.w.write(ctx, values, parts)
	if err != nil {
		r.t.Fatal(err)
	}
	noiseRs := make([]*kgo.Record, len(noiseIdx))
	for i, j := range noiseIdx {
		noiseRs[i] = rs[j]
	}
	r.exp.add(noiseRs, g, false)
	r.exp.records += len(plant)
	out := make([]*kgo.Record, len(plantIdx))
	for i, j := range plantIdx {
		out[i] = rs[j]
	}
	return out
}

// plantPosts makes U's events of one batch: on every partition one event
// of postFindings and one of postQuiet, chosen by shift, with event times
// from at on, one second apart.
func (r *caseRun) plantPosts(shift int, at time.Time, gap bool) []placed {
	var out []placed
	for part := range int32(sourcePartitions) {
		for _, s := range []postStep{postFindings[(int(part)+shift)%len(postFindings)], postQuiet[(int(part)+shift)%len(postQuiet)]} {
			id := caseUUID(r.rng)
			v := caseEventValue(s, id, at)
			r.posts = append(r.posts, postEvent{step: s, eventID: id, partition: part, gap: gap, value: v, eventTime: at})
			at = at.Add(time.Second)
			if s.rule != "" {
				r.postWant[casePostAlertID(s.rule, id)] = s.what
			}
			out = append(out, placed{v, part})
		}
	}
	return out
}

// casePostAlertID is the alert id of a post-quarantine finding of the
// case's watch (the case's user, in its account).
func casePostAlertID(ruleID, eventID string) string {
	return postAlertIDOf(ruleID, eventID, cloudtrailgen.CaseAccount, cloudtrailgen.CaseUserName)
}

// postRuleIDs are the post-quarantine rules' ids by key, as docs/rules.md
// names them.
var postRuleIDs = map[string]string{
	"post-quarantine-defense-evasion": postDefenseEvasionRuleID,
	"post-quarantine-persistence":     postPersistenceRuleID,
	"post-quarantine-activity":        postActivityRuleID,
}

// plantAftermath plants the case's own events after the quarantine
// (Case.Aftermath, with the rule the generator says each is a finding of),
// one a partition from the first on.
func (r *caseRun) plantAftermath(c *cloudtrailgen.Case) []placed {
	var out []placed
	for i, e := range c.Aftermath(1315) {
		s := postStep{what: "the case's aftermath: " + e.Name}
		if e.Rule != "" {
			id, ok := postRuleIDs[e.Rule]
			if !ok {
				r.t.Fatalf("the case's aftermath names rule %q, which the plan does not have", e.Rule)
			}
			s.rule = id
			r.postWant[casePostAlertID(id, e.EventID)] = s.what
		}
		part := int32(i % sourcePartitions)
		r.posts = append(r.posts, postEvent{step: s, eventID: e.EventID, partition: part, value: e.Value})
		out = append(out, placed{e.Value, part})
	}
	return out
}

// landed records where the last len(rs) planted events landed.
func (r *caseRun) landed(rs []*kgo.Record) {
	posts := r.posts[len(r.posts)-len(rs):]
	for i, rec := range rs {
		posts[i].at = pos{rec.Partition, rec.Offset}
	}
}

// watchedAlert is what the test reads of a post-quarantine alert: where its
// event was read, and the watch it names (the opening alert's id, the key
// a SIEM joins it on to the quarantine's alert and context document).
type watchedAlert struct {
	QW struct {
		Source struct {
			Topic     string `json:"topic"`
			Partition int32  `json:"partition"`
			Offset    int64  `json:"offset"`
		} `json:"source"`
		Watch *struct {
			AlertID  string    `json:"alert_id"`
			OpenedAt time.Time `json:"opened_at"`
			Until    time.Time `json:"until"`
		} `json:"watch"`
	} `json:"quarantine_watch"`
}

// checkWatchedAlert returns what is wrong with the alert of post-quarantine
// event ev, "" if nothing: its watch must be one of quarantineIDs, with
// the window its quarantine opened, (opened[id], opened[id]+caseWatchFor].
func checkWatchedAlert(value []byte, ev postEvent, source string, opened map[string]time.Time, quarantineIDs ...string) string {
	var a watchedAlert
	if err := json.Unmarshal(value, &a); err != nil {
		return fmt.Sprintf("not a JSON document: %v", err)
	}
	var problems []string
	if got := a.QW.Source; got.Topic != source || got.Partition != ev.at.partition || got.Offset != ev.at.offset {
		problems = append(problems, fmt.Sprintf("source %s %d/%d, want %s %v", got.Topic, got.Partition, got.Offset, source, ev.at))
	}
	if w := a.QW.Watch; w == nil || !slices.Contains(quarantineIDs, w.AlertID) {
		problems = append(problems, fmt.Sprintf("watch %+v, want the alert id of the quarantine %v", w, quarantineIDs))
	} else if q := opened[w.AlertID]; !w.OpenedAt.Equal(q) || !w.Until.Equal(q.Add(caseWatchFor)) {
		problems = append(problems, fmt.Sprintf("watch window (%s, %s], want the quarantine's (%s, %s]", w.OpenedAt.Format(time.RFC3339),
			w.Until.Format(time.RFC3339), q.Format(time.RFC3339), q.Add(caseWatchFor).Format(time.RFC3339)))
	}
	return strings.Join(problems, "; ")
}

// alertValue returns the value of the first copy of alert id the reader
// read, nil if none.
func (r *outputReader) alertValue(id string) []byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	if rec := r.postRecords[id]; rec != nil {
		return rec.Value
	}
	if rec := r.alertRecords[id]; rec != nil {
		return rec.Value
	}
	return nil
}

// allAlerts returns how many times the reader has read each alert id, the
// post-quarantine ones included.
func allAlerts(r *outputReader) map[string]int {
	m := r.alertIDs()
	for id, n := range r.postIDs() {
		m[id] += n
	}
	return m
}

// caseRecord is a record of the context or watchlist topic.
type caseRecord struct {
	at    coord
	key   string
	value []byte
}

// caseReader reads the context and watchlist topics with read_committed
// from the start, each record once by its place, until it has seen an end
// marker on every partition of both.
type caseReader struct {
	name    string
	p       pipeline
	mu      sync.Mutex
	seen    map[coord]bool
	docs    []caseRecord // the context topic
	entries []caseRecord // the watchlist topic, keys under entry/
	state   int          // the watchlist topic, other keys
	markers map[string]bool
	all     chan struct{}
	closed  bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func startCaseReader(t *testing.T, b cluster, p pipeline, name string) *caseReader {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &caseReader{name: name, p: p, seen: map[coord]bool{}, markers: map[string]bool{}, all: make(chan struct{}), cancel: cancel, done: make(chan struct{})}
	cl := newClient(t, b,
		kgo.ConsumeTopics(p.context, p.watchlist),
		kgo.FetchIsolationLevel(kgo.ReadCommitted()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.FetchMaxWait(500*time.Millisecond),
	)
	go func() {
		defer close(r.done)
		for {
			fs := cl.PollFetches(ctx)
			if ctx.Err() != nil || fs.IsClientClosed() {
				return
			}
			fs.EachRecord(r.add)
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-r.done
	})
	return r
}

func (r *caseReader) add(rec *kgo.Record) {
	r.mu.Lock()
	defer r.mu.Unlock()
	c := coord{rec.Topic, rec.Partition, rec.Offset}
	if r.seen[c] {
		return
	}
	r.seen[c] = true
	cr := caseRecord{at: c, key: string(rec.Key), value: rec.Value}
	switch {
	case cr.key == endMarker:
		r.markers[fmt.Sprintf("%s/%d", rec.Topic, rec.Partition)] = true
		if len(r.markers) == 2*outputPartitions && !r.closed {
			r.closed = true
			close(r.all)
		}
	case rec.Topic == r.p.context:
		r.docs = append(r.docs, cr)
	case strings.HasPrefix(cr.key, "entry/"):
		r.entries = append(r.entries, cr)
	default:
		r.state++
	}
}

// snapshot returns what the reader has read so far.
func (r *caseReader) snapshot() (docs, entries []caseRecord, state int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.docs), slices.Clone(r.entries), r.state
}

// watchlistEnds returns, per watchlist partition, the offset after the last
// record read.
func (r *caseReader) watchlistEnds() map[int32]int64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	ends := map[int32]int64{}
	for c := range r.seen {
		if c.topic == r.p.watchlist {
			ends[c.partition] = max(ends[c.partition], c.offset+1)
		}
	}
	return ends
}

// waitMarkers waits for every end marker, then stops the reader, and
// returns the partitions whose marker it has not seen.
func (r *caseReader) waitMarkers(timeout time.Duration) []string {
	select {
	case <-r.all:
	case <-time.After(timeout):
	}
	r.cancel()
	<-r.done
	r.mu.Lock()
	defer r.mu.Unlock()
	return missingMarkers(r.markers, r.p.context, r.p.watchlist)
}

// kcatRecords reads topic to its end with kcat and read_committed, keys and
// values.
func kcatRecords(ctx context.Context, t *testing.T, kcat string, b cluster, topic string) []caseRecord {
	t.Helper()
	ctx, cancel := context.WithTimeout(ctx, 3*time.Minute)
	defer cancel()
	args := []string{"-b", strings.Join(b.Brokers(), ","), "-C", "-t", topic, "-o", "beginning", "-q", "-u", "-e",
		"-X", "isolation.level=read_committed", "-f", `%p %o %k %s\n`}
	cmd := exec.CommandContext(ctx, kcat, args...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kcat reading %s: %v\n%s", topic, err, stderr.String())
	}
	var recs []caseRecord
	for line := range strings.SplitSeq(string(out), "\n") {
		if line == "" {
			continue
		}
		f := strings.SplitN(line, " ", 4)
		if len(f) != 4 {
			t.Fatalf("kcat line %q: want partition, offset, key and value", line)
		}
		part, err1 := strconv.ParseInt(f[0], 10, 32)
		off, err2 := strconv.ParseInt(f[1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("kcat line %q: %v %v", line, err1, err2)
		}
		recs = append(recs, caseRecord{at: coord{topic, int32(part), off}, key: f[2], value: []byte(f[3])})
	}
	return recs
}

// caseDoc is what the test reads of a context document: the fields the
// plan and docs/siem.md name, decoded on their own, not with package
// producer's types.
type caseDoc struct {
	Event struct {
		Kind string `json:"kind"`
	} `json:"event"`
	Cloud struct {
		Account struct {
			ID string `json:"id"`
		} `json:"account"`
	} `json:"cloud"`
	User struct {
		Name string `json:"name"`
	} `json:"user"`
	QW struct {
		AlertID string `json:"alert_id"`
		Rule    struct {
			ID string `json:"id"`
		} `json:"rule"`
		Window struct {
			Start string `json:"start"`
			End   string `json:"end"`
			Cut   bool   `json:"cut"`
		} `json:"window"`
		Summary struct {
			Events   int `json:"events"`
			AsActor  int `json:"as_actor"`
			AsTarget int `json:"as_target"`
			Actions  []struct {
				Provider string `json:"provider"`
				Action   string `json:"action"`
				Count    int    `json:"count"`
			} `json:"actions"`
			SourceIPs    []caseSeen  `json:"source_ips"`
			UserAgents   []caseSeen  `json:"user_agents"`
			Regions      []caseCount `json:"regions"`
			AccessKeyIDs []string    `json:"access_key_ids"`
			Errors       []caseCount `json:"errors"`
			Notable      []struct {
				ID string `json:"id"`
			} `json:"notable"`
		} `json:"summary"`
	} `json:"quarantine_watch"`
}

type caseSeen struct {
	Value     string `json:"value"`
	FirstSeen string `json:"first_seen"`
	LastSeen  string `json:"last_seen"`
	Count     int    `json:"count"`
}

type caseCount struct {
	Value string `json:"value"`
	Count int    `json:"count"`
}

// checkCaseDoc compares a context document with the case's ground truth
// over the window [start, end] and returns the differences.
func checkCaseDoc(value []byte, alertID string, start, end time.Time, want cloudtrailgen.CaseTruth) []string {
	var d caseDoc
	if err := json.Unmarshal(value, &d); err != nil {
		return []string{fmt.Sprintf("not a JSON document: %v", err)}
	}
	var diffs []string
	diff := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	if d.Event.Kind != "enrichment" || d.QW.AlertID != alertID || d.QW.Rule.ID != elasticRuleID {
		diff("event.kind %q, alert id %s, rule %s; want enrichment, %s, %s", d.Event.Kind, d.QW.AlertID, d.QW.Rule.ID, alertID, elasticRuleID)
	}
	if d.User.Name != cloudtrailgen.CaseUserName || d.Cloud.Account.ID != cloudtrailgen.CaseAccount {
		diff("user %q of account %q", d.User.Name, d.Cloud.Account.ID)
	}
	ws, err1 := time.Parse(time.RFC3339, d.QW.Window.Start)
	we, err2 := time.Parse(time.RFC3339, d.QW.Window.End)
	if err1 != nil || err2 != nil || !ws.Equal(start) || !we.Equal(end) || d.QW.Window.Cut {
		diff("window %s to %s (cut %v), want %s to %s, not cut", d.QW.Window.Start, d.QW.Window.End, d.QW.Window.Cut, start.Format(time.RFC3339), end.Format(time.RFC3339))
	}
	s := d.QW.Summary
	if s.Events != want.Events || s.AsActor != want.AsActor || s.AsTarget != want.AsTarget {
		diff("events %d (%d as actor, %d as target), want %d (%d, %d)", s.Events, s.AsActor, s.AsTarget, want.Events, want.AsActor, want.AsTarget)
	}
	actions := map[string]int{}
	for _, a := range s.Actions {
		actions[a.Provider+" "+a.Action] += a.Count
	}
	if !maps.Equal(actions, want.Actions) {
		diff("actions %v, want %v", actions, want.Actions)
	}
	counts := func(cs []caseCount) map[string]int {
		m := map[string]int{}
		for _, c := range cs {
			m[c.Value] += c.Count
		}
		return m
	}
	if e := counts(s.Errors); !maps.Equal(e, want.Errors) {
		diff("errors %v, want %v", e, want.Errors)
	}
	if r := counts(s.Regions); !maps.Equal(r, want.Regions) {
		diff("regions %v, want %v", r, want.Regions)
	}
	var notable []string
	for _, n := range s.Notable {
		notable = append(notable, n.ID)
	}
	slices.Sort(notable)
	if !slices.Equal(notable, want.Notable) {
		diff("notable %v, want %v", notable, want.Notable)
	}
	if keys := slices.Sorted(slices.Values(s.AccessKeyIDs)); !slices.Equal(keys, want.AccessKeyIDs) {
		diff("access keys %v, want %v", keys, want.AccessKeyIDs)
	}
	for _, seen := range []struct {
		name string
		got  []caseSeen
		want map[string]cloudtrailgen.SeenTruth
	}{{"source IPs", s.SourceIPs, want.SourceIPs}, {"user agents", s.UserAgents, want.UserAgents}} {
		m := map[string]cloudtrailgen.SeenTruth{}
		for _, v := range seen.got {
			first, _ := time.Parse(time.RFC3339, v.FirstSeen)
			last, _ := time.Parse(time.RFC3339, v.LastSeen)
			m[v.Value] = cloudtrailgen.SeenTruth{Count: v.Count, First: first, Last: last}
		}
		if !maps.EqualFunc(m, seen.want, func(a, b cloudtrailgen.SeenTruth) bool {
			return a.Count == b.Count && a.First.Equal(b.First) && a.Last.Equal(b.Last)
		}) {
			diff("%s %v, want %v", seen.name, m, seen.want)
		}
	}
	return diffs
}

// waitFor polls cond every 200 ms until it holds or limit passes, failing t
// if an instance's supervisor gave up; it reports whether cond held.
func waitFor(t *testing.T, limit time.Duration, cond func() bool, ins ...*instance) bool {
	t.Helper()
	deadline := time.Now().Add(limit)
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		for _, in := range ins {
			in.mu.Lock()
			failure := in.failure
			in.mu.Unlock()
			if failure != nil {
				t.Fatalf("instance %s: %v", in.name, failure)
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestExactlyOnceCase: see the top of this file.
func TestExactlyOnceCase(t *testing.T) {
	if testing.Short() {
		t.Skip("takes a minute or two; -short skips it")
	}
	r, kcat := newCaseRun(t, 1314, 0xca5e)
	b, p, adm, began := r.b, r.p, r.adm, r.began
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// The quarantine two hours ago: the watch's window, (q, q+72h], and
	// the look-back's, [q-24h, q], are in event time; a time near the
	// clock keeps the entry unexpired for any reading of "expired".
	q := began.Add(-2 * time.Hour).Truncate(time.Second).UTC()
	c := cloudtrailgen.PlantCase(cloudtrailgen.CaseConfig{Seed: 1313, Quarantine: q})
	// Without noise the case's values are its planted events in their
	// order: those before the quarantine, the quarantine, and the case's
	// own event after it, which is left out (the test plants its own, with
	// their expected findings).
	qi := -1
	for i, v := range c.Values {
		if bytes.Contains(v, []byte(c.QuarantineEventID)) {
			if qi >= 0 {
				t.Fatalf("the quarantine's event id is in values %d and %d", qi, i)
			}
			qi = i
		}
	}
	if qi < sourcePartitions {
		t.Fatalf("the quarantine is value %d of the case: too few events before it to put some on every partition", qi)
	}
	var pre []placed
	for i, v := range c.Values[:qi] {
		pre = append(pre, placed{v, int32(i % sourcePartitions)})
	}
	truth := c.Truth(q.Add(-caseLookback))
	quarantineID := alertIDOf(elasticRuleID, c.QuarantineEventID)

	t.Logf("case run: seed %d, quarantine at %s, %d of the case's events before it, %d of them the user's in the look-back window",
		r.seed, q.Format(time.RFC3339), qi, truth.Events)
	r.exp.alerts[quarantineID] = "the quarantine " + c.QuarantineEventID

	outDuring := startReader(t, b, p)
	caseDuring := startCaseReader(t, b, p, "franz-go during")

	r.step("phase 1: %d records, the user's activity before the quarantine on every partition", caseNoisePhase1+len(pre))
	r.write(ctx, caseNoisePhase1, pre)

	args := serviceArgs(b, p.source, p.alerts, p.group, fastFailover...)
	ins := map[string]*instance{
		"a": startInstance(t, "a", kafkatest.Name(t, "txn-a"), args),
		"b": startInstance(t, "b", kafkatest.Name(t, "txn-b"), args),
	}
	all := func() []*instance { return slices.Collect(maps.Values(ins)) }
	waitCaughtUp(t, adm, p.group, p.source, caseWaitLimit, all()...)
	r.step("a and b have read phase 1")

	pid := ins["a"].kill(t)
	r.step("kill 1: SIGKILL a (pid %d); restarted", pid)
	// The quarantine, then U's events on every partition, in one produce
	// request: the gap case.
	gapBatch := append([]placed{{c.Values[qi], int32(r.rng.IntN(sourcePartitions))}}, r.plantPosts(0, q.Add(time.Second), true)...)
	rs, err := r.w.write(ctx, slicesValues(gapBatch), slicesParts(gapBatch))
	if err != nil {
		t.Fatal(err)
	}
	r.exp.records += len(rs)
	r.quarantineAt = pos{rs[0].Partition, rs[0].Offset}
	r.landed(rs[1:])
	r.step("the quarantine at %v, and %d of the user's events on every partition in the same request", r.quarantineAt, len(gapBatch)-1)
	r.write(ctx, caseNoisePhase, nil)

	// The second kill is of the instance whose case worker has started
	// the quarantine's look-back, as soon as its log says so: on the
	// default rate the look-back takes about a second, and the kill lands
	// inside it when the document is not written yet.
	const started, written = "case worker: look-back started", "case worker: context document written"
	var worker *instance
	deadline := time.Now().Add(caseAsyncLimit)
	for worker == nil && time.Now().Before(deadline) {
		for _, n := range []string{"a", "b"} {
			if countLogged(t, ins[n], started, quarantineID) > 0 {
				worker = ins[n]
				break
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
	lookbackKilled := false
	if worker == nil {
		worker = ins["b"]
		r.step("no look-back of the quarantine started within %v", caseAsyncLimit)
	} else {
		lookbackKilled = countLogged(t, worker, written, quarantineID) == 0
	}
	pid = worker.kill(t)
	r.step("kill 2: SIGKILL %s (pid %d), whose case worker started the look-back (its document not yet written: %v); restarted", worker.name, pid, lookbackKilled)
	r.landed(r.write(ctx, caseNoisePhase, append(r.plantAftermath(c), r.plantPosts(2, q.Add(20*time.Minute), false)...)))
	waitCaughtUp(t, adm, p.group, p.source, caseWaitLimit, all()...)
	r.step("caught up after the kills")

	r.restartAndStop(ctx, ins, args, caseDuring, r.plantPosts(5, q.Add(time.Hour), false))

	e := r.finish(ctx, kcat, outDuring, caseDuring, ins["a"], ins["b"])
	outAfter, caseAfter, hanging := e.outAfter, e.caseAfter, e.hanging
	vDuring, vAfter := outDuring.compare(t, r.exp), outAfter.compare(t, r.exp)
	kcatContext := e.kcatContext

	// The context document, to every reader.
	start := q.Add(-caseLookback)
	docs := 0
	countsOK := true
	for _, rd := range []struct {
		name string
		recs []caseRecord
	}{
		{"franz-go during", func() []caseRecord { d, _, _ := caseDuring.snapshot(); return d }()},
		{"franz-go after", func() []caseRecord { d, _, _ := caseAfter.snapshot(); return d }()},
		{"kcat", slices.DeleteFunc(kcatContext, func(cr caseRecord) bool { return cr.key == endMarker })},
	} {
		docs = max(docs, len(rd.recs))
		if len(rd.recs) != 1 || rd.recs[0].key != quarantineID {
			var keys []string
			for _, cr := range rd.recs {
				keys = append(keys, fmt.Sprintf("%s at %d@%d", cr.key, cr.at.partition, cr.at.offset))
			}
			t.Errorf("%s: %d context documents %v; want one, keyed %s", rd.name, len(rd.recs), keys, quarantineID)
			countsOK = false
		}
		for _, cr := range rd.recs {
			if diffs := checkCaseDoc(cr.value, quarantineID, start, q, truth); len(diffs) > 0 {
				countsOK = false
				t.Errorf("%s: the context document at %d@%d differs from the ground truth:\n  %s", rd.name, cr.at.partition, cr.at.offset, strings.Join(diffs, "\n  "))
			}
		}
	}
	if docs == 0 {
		countsOK = false
	}
	_, entries, state := caseAfter.snapshot()
	t.Logf("watchlist: %d entry records, %d records of other state", len(entries), state)
	if len(entries) != 1 {
		t.Errorf("%d watch entry records on the watchlist topic, want one (written once, with the quarantine's finding)", len(entries))
	}

	// The post-quarantine findings, to every reader.
	want, found, dups, gapMisses := r.countPosts(e, map[string]time.Time{quarantineID: q}, func(postEvent) []string { return []string{quarantineID} })
	dups = max(dups, docs-1, vDuring.duplicateCopies, vAfter.duplicateCopies, vDuring.duplicates(), vAfter.duplicates())
	mustMatch(t, "franz-go during", vDuring)
	mustMatch(t, "franz-go after", vAfter)
	checkUnplanned(t, all()...)

	counts := "ok"
	if !countsOK {
		counts = "bad"
	}
	line := fmt.Sprintf("eos-case: context_docs=%d expected_counts=%s post_findings=%d/%d duplicates=%d gap_misses=%d",
		docs, counts, found, want, dups, gapMisses)
	t.Log(line)
	fmt.Println(line)
	lookbacks := 0
	for _, in := range all() {
		lookbacks += countLogged(t, in, started, quarantineID)
	}
	t.Logf("eos-case: records=%d dead_letters=%d kills=2 kill_inside_lookback=%t lookbacks_started=%d rolling_restarts=1 hanging=%d took %v",
		r.exp.records, len(r.exp.dead), lookbackKilled, lookbacks, hanging, time.Since(began).Round(time.Second))
	if docs != 1 || !countsOK || found != want || dups != 0 || gapMisses != 0 || hanging != 0 {
		t.Errorf("want context_docs=1 expected_counts=ok post_findings=%d/%d duplicates=0 gap_misses=0 hanging=0", want, want)
	}
}

// waitCaseWorker waits until the case worker's group has committed every
// watchlist record caseDuring has read: the case worker works beside the
// group, and its commits are what the end of a run waits for.
func (r *caseRun) waitCaseWorker(ctx context.Context, caseDuring *caseReader, running ...*instance) bool {
	caseGroup := r.p.group + ".context"
	return waitFor(r.t, caseAsyncLimit, func() bool {
		ends := caseDuring.watchlistEnds()
		if len(ends) == 0 {
			return false
		}
		lctx, lcancel := context.WithTimeout(ctx, 5*time.Second)
		defer lcancel()
		committed, err := r.adm.FetchOffsets(lctx, caseGroup)
		if err != nil {
			return false
		}
		for part, end := range ends {
			if o, ok := committed.Lookup(r.p.watchlist, part); !ok || o.At < end {
				return false
			}
		}
		return true
	}, running...)
}

// restartAndStop ends a case run's faults: a rolling restart of instance
// a (SIGTERM, then a new process with its transactional id, a2), while
// the last of the user's events are written; then, once the group has
// caught up and the case worker has committed every watchlist record, it
// stops a2 and b.
func (r *caseRun) restartAndStop(ctx context.Context, ins map[string]*instance, args []string, caseDuring *caseReader, last []placed) {
	t := r.t
	r.step("rebalance: rolling restart of a (SIGTERM, then a new process with its transactional id), while the last of the user's events are written")
	stopAll(t, ins["a"])
	ins["a2"] = startInstance(t, "a2", ins["a"].txnID, args)
	r.landed(r.write(ctx, caseNoisePhase, last))
	running := []*instance{ins["a2"], ins["b"]}
	waitCaughtUp(t, r.adm, r.p.group, r.p.source, caseWaitLimit, running...)
	workerDone := r.waitCaseWorker(ctx, caseDuring, running...)
	r.step("caught up; the case worker has committed every watchlist record: %v", workerDone)
	stopAll(t, running...)
	r.step("stopped")
}

// caseEnd is what the readers read of a stopped case run.
type caseEnd struct {
	outDuring, outAfter   *outputReader
	caseDuring, caseAfter *caseReader
	kcatAlerts            map[string]int
	kcatContext           []caseRecord
	// hanging is the transactions of the instances left open, or the most
	// end markers a reader did not see.
	hanging int
}

// finish ends a stopped case run: it looks for the instances'
// transactions left open, writes end markers, reads the outputs again
// from the start with franz-go and kcat, and waits for every reader to
// see every end marker.
func (r *caseRun) finish(ctx context.Context, kcat string, outDuring *outputReader, caseDuring *caseReader, ins ...*instance) caseEnd {
	t := r.t
	var txnIDs []string
	for _, in := range ins {
		txnIDs = append(txnIDs, in.txnID, in.txnID+".context")
	}
	e := caseEnd{outDuring: outDuring, caseDuring: caseDuring, kcatAlerts: map[string]int{}}
	if open, err := hangingTxns(ctx, r.adm, txnIDs...); err != nil {
		t.Errorf("describing the instances' transactions: %v", err)
	} else {
		e.hanging += len(open)
	}
	writeEndMarkers(t, r.b, r.p.alerts, r.p.dlq, r.p.context, r.p.watchlist)
	e.outAfter = startReader(t, r.b, r.p)
	e.caseAfter = startCaseReader(t, r.b, r.p, "franz-go after")
	for _, m := range [][]string{outDuring.waitMarkers(time.Minute), e.outAfter.waitMarkers(time.Minute),
		caseDuring.waitMarkers(time.Minute), e.caseAfter.waitMarkers(time.Minute)} {
		e.hanging = max(e.hanging, len(m))
		if len(m) > 0 {
			t.Errorf("end markers not visible to read_committed within a minute (a transaction left open?): %v", m)
		}
	}
	for _, l := range runKcatLines(ctx, t, kcat, r.b, r.p.alerts) {
		if l.key != endMarker {
			e.kcatAlerts[l.key]++
		}
	}
	e.kcatContext = kcatRecords(ctx, t, kcat, r.b, r.p.context)
	return e
}

// countPosts checks the findings of the planted events after the
// quarantines, opened by alert id: each must be read exactly once by every
// reader, naming one of the watches watches(ev) gives, with its window;
// every alert a reader read must be expected, and each quarantine's alert
// read once. A gap miss is a
// finding of an event written with a quarantine that a reader did not
// read at all; dups is the most extra copies of one alert.
func (r *caseRun) countPosts(e caseEnd, opened map[string]time.Time, watches func(postEvent) []string) (want, found, dups, gapMisses int) {
	t := r.t
	readers := []struct {
		name   string
		alerts map[string]int
	}{{"franz-go during", allAlerts(e.outDuring)}, {"franz-go after", allAlerts(e.outAfter)}, {"kcat", e.kcatAlerts}}
	for _, ev := range r.posts {
		if ev.step.rule == "" {
			continue
		}
		want++
		id := casePostAlertID(ev.step.rule, ev.eventID)
		ok, missed := true, false
		var times []string
		for _, rd := range readers {
			n := rd.alerts[id]
			times = append(times, fmt.Sprintf("%s %d", rd.name, n))
			ok = ok && n == 1
			missed = missed || n == 0
		}
		for _, rd := range []*outputReader{e.outDuring, e.outAfter} {
			if v := rd.alertValue(id); v != nil {
				if problem := checkWatchedAlert(v, ev, r.p.source, opened, watches(ev)...); problem != "" {
					ok = false
					t.Errorf("the post-quarantine alert of %q (event %s at %v): %s", ev.step.what, ev.eventID, ev.at, problem)
				}
			}
		}
		if ok {
			found++
		} else {
			t.Logf("post-quarantine finding of %q (event %s on partition %d, written with the quarantine: %v) read %s times",
				ev.step.what, ev.eventID, ev.partition, ev.gap, strings.Join(times, ", "))
		}
		if missed && ev.gap {
			gapMisses++
		}
	}
	for _, rd := range readers {
		for id, n := range rd.alerts {
			if n > 1 {
				dups = max(dups, n-1)
			}
			if _, ok := r.exp.alerts[id]; !ok && r.postWant[id] == "" {
				t.Errorf("%s: alert %s is not expected (a finding of an event the plan says is none?)", rd.name, id)
			}
		}
		for q := range opened {
			if n := rd.alerts[q]; n != 1 {
				t.Errorf("%s: the quarantine's alert %s read %d times, want once", rd.name, q, n)
			}
		}
	}
	return want, found, dups, gapMisses
}

func slicesValues(ps []placed) [][]byte {
	out := make([][]byte, len(ps))
	for i, p := range ps {
		out[i] = p.value
	}
	return out
}

func slicesParts(ps []placed) []int32 {
	out := make([]int32, len(ps))
	for i, p := range ps {
		out[i] = p.partition
	}
	return out
}
